"""Polling child processes over HTTP: shared by the scenarios that run ``python -m bot``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    processes: Iterable[subprocess.Popen[bytes]],
    logs: Callable[[], str],
    timeout: float = 30,
) -> T:
    """Poll ``probe`` until it returns something truthy.

    Fails, showing ``logs()``, when a process exits first or ``timeout`` passes.
    A probe that cannot connect yet counts as not ready.
    """
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited := [p for p in watched if p.poll() is not None]:
            codes = ", ".join(str(p.returncode) for p in exited)
            pytest.fail(f"exited ({codes}) before {what}:\n{logs()}")
        try:
            if got := probe():
                return got
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{logs()}")
