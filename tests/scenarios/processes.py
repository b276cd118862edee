"""Child processes of ``python -m bot``: shared by the tests that run one.

:func:`run_bot` runs one to its end (a start-up that must fail, a worker that must stop);
:func:`wait_for` polls ones that keep running, over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from bot.settings import Settings

T = TypeVar("T")


def run_bot(
    command: str, cwd: Path, settings: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot <command>`` in ``cwd`` until it exits; its output, as text.

    No setting comes from the developer's shell, only ``settings`` (and a ``.env`` in
    ``cwd``): what the test asserts must not hang on whoever runs it. A child still
    running after ``timeout`` seconds fails the test (``subprocess.TimeoutExpired``).
    """
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return subprocess.run(
        [sys.executable, "-m", "bot", command],
        cwd=cwd,
        env=env | dict(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
