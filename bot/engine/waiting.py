"""Open requests as they stand now, found through the per-shard ``open`` index.

A channel lists what waits for a person (Slack's App Home) from here: the
index names the open requests, so no thread that has none is read.
"""

from __future__ import annotations

import asyncio

from bot.domain import ids
from bot.domain.clock import Clock
from bot.domain.reducer import ThreadState
from bot.domain.refusals import is_open
from bot.engine.ports import Open, OpenNow
from bot.storage.indexes import Indexes
from bot.storage.threadlog import ThreadLog


class Waiting:
    """Reads the open requests.

    Args:
        log: the thread logs.
        indexes: the ``open`` index of each shard.
        clock: what "still open" is judged by (an expired request no worker closed yet is not).
        most: how many open requests one reading looks at, at most.
        at_once: threads read concurrently.
    """

    def __init__(
        self,
        log: ThreadLog,
        indexes: Indexes,
        clock: Clock,
        *,
        most: int = 1000,
        at_once: int = 32,
    ) -> None:
        self.log = log
        self.indexes = indexes
        self.clock = clock
        self.most = most
        self._at_once = at_once
        # One reading at a time in a process: each takes up to 16 + at_once connections,
        # and a burst of changes (a worker refreshing many Homes) must not take the pool.
        self._reading = asyncio.Lock()

    async def open(self) -> OpenNow:
        """The open requests, oldest first, each with its thread as it stands."""
        async with self._reading:
            return await self._read()

    async def _read(self) -> OpenNow:
        request_ids, total = await self.indexes.open_requests(offset=0, limit=self.most)
        by_thread: dict[str, list[str]] = {}
        for rid in request_ids:
            if tid := ids.thread_of_request(rid):
                by_thread.setdefault(tid, []).append(rid)
        slots = asyncio.Semaphore(self._at_once)

        async def load(tid: str) -> ThreadState:
            async with slots:
                return await self.log.load(tid)

        states = await asyncio.gather(*(load(tid) for tid in by_thread))
        now = self.clock.now()
        found = [
            Open(state, state.requests[rid])
            for state in states
            for rid in by_thread[state.id]
            if rid in state.requests and is_open(state.requests[rid], now)
        ]
        return OpenNow(found, total)
