"""The one clock: where every time that matters comes from (expiry, reminders, tokens, retries).

A process builds one ``Clock`` in its composition root and hands it to each
collaborator, so the web process and the worker agree on what "now" is. Tests
and benchmarks hold a ``ManualClock`` and move it instead of waiting. Pacing a
loop (how often to sweep, how long to wait for a reply) is not such a time and
uses ``time.monotonic`` where it happens.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> float:
        """Unix time, in seconds."""
        ...


class SystemClock:
    """The host's wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that stands still until it is moved.

    Args:
        start: the Unix time it shows until it is moved.
    """

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time.

        Raises:
            ValueError: ``seconds`` is negative; use ``set`` to go back on purpose.
        """
        if seconds < 0:
            raise ValueError(f"a clock advances by zero seconds or more, not {seconds}")
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Show ``t`` from now on, earlier or later than before."""
        self._now = float(t)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
