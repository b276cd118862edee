"""Slack calls that need not hold up Slack's answer: private notes, card refreshes, posts.

Bolt answers an HTTP request only when its listener returns
(``process_before_response``), so a slow ``chat.postEphemeral`` in a listener
is a late answer, which Slack retries and shows as an error. Listeners start
such calls here instead. Bolt's lazy listeners would run after the answer too,
but they get a fresh copy of the request rather than what the listener found
out, and Bolt neither keeps their tasks nor awaits them on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Background:
    """Tasks the Slack channel owns: kept until done, failures logged, awaited on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work()`` soon, without waiting for it; ``what`` names it in the log."""
        task = asyncio.get_running_loop().create_task(self._run(what, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 5.0) -> None:
        """Let running work finish for up to ``grace`` seconds, then cancel the rest."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("slack: %d background call(s) cancelled at shutdown", len(pending))

    async def _run(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            log.exception("slack: %s failed", what)
