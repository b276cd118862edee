"""What waits for people: every open request's summary, from the indexes.

The web inbox and the channels (Slack's App Home) list from here, through the
one rule of ``bot.domain.waiting``; no thread is loaded to list. A request
opened before summaries were kept has none: the first listing that finds one
builds it from its thread, once, and stores it (self-healing, so an upgrade
needs no migration step and no listing misses a request).
"""

from __future__ import annotations

import asyncio
import logging

from bot.domain import ids
from bot.domain.waiting import Waiting
from bot.storage.indexes import Indexes
from bot.storage.threadlog import ThreadLog

log = logging.getLogger(__name__)


class Summaries:
    """Reads the summaries of the open requests, building the missing ones.

    Args:
        log: the thread logs (read only to build a missing summary).
        indexes: the ``open`` index and the summaries of each shard.
        at_once: threads read concurrently while building missing summaries (few: a worker
            refreshing Homes shares its connection pool).
    """

    def __init__(self, log: ThreadLog, indexes: Indexes, *, at_once: int = 8) -> None:
        self.log = log
        self.indexes = indexes
        self._at_once = at_once
        # One healing at a time in a process: concurrent listings would read the same threads.
        self._healing = asyncio.Lock()

    async def waiting(self) -> list[Waiting]:
        """Every open request's summary, in no particular order."""
        if await self.indexes.unsummarised():
            async with self._healing:
                await self._heal(await self.indexes.unsummarised())
        return await self.indexes.waiting()

    async def _heal(self, missing: list[str]) -> None:
        by_thread: dict[str, list[str]] = {}
        for rid in missing:
            if tid := ids.thread_of_request(rid):
                by_thread.setdefault(tid, []).append(rid)
        slots = asyncio.Semaphore(self._at_once)

        async def heal(tid: str, rids: list[str]) -> int:
            async with slots:
                state = await self.log.load(tid)
            built = 0
            for rid in rids:
                req = state.requests.get(rid)
                if req is not None and req.is_open:
                    built += await self.indexes.summarise(state, rid)
            return built

        built = sum(await asyncio.gather(*(heal(t, r) for t, r in by_thread.items())))
        if built:
            log.info("waiting: built %d missing summaries of open requests", built)
        if built < len(missing):  # closed meanwhile, or an index entry without its thread
            log.debug("waiting: %d open request ids left without a summary", len(missing) - built)
