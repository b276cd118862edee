"""Retention: finished threads past an age leave Redis for the archive, by the workers' sweep.

A thread that is done or cancelled and was last updated more than ``age``
seconds ago is written to the archive (durably), then removed from Redis with
its index entries and its channels' state, only if it did not change in
between. A crash after the write and before the removal writes it again next
time. Audit records older than ``age`` move to the archive the same way, and
``greenlight audit export`` reads them there. Redis memory then stays bounded
under steady load; archived threads stay readable through the API and the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from bot.domain.clock import Clock
from bot.domain.errors import ConflictError
from bot.domain.reducer import Status
from bot.storage.archive import Archive
from bot.storage.audit import AuditLog
from bot.storage.indexes import Indexes
from bot.storage.keys import SHARDS
from bot.storage.threadlog import ThreadLog

log = logging.getLogger(__name__)

FINISHED = (Status.DONE.value, Status.CANCELLED.value)


async def refuse_archived(archive: Archive | None, thread_id: str, what: str) -> None:
    """Refuse to start a thread under ``thread_id`` when a thread of that id was archived.

    Ids made from a conversation (an email's, a Slack thread, a webhook's) or from a key
    (an Idempotency-Key, a delivery) come again after retention: a thread made again under
    one would write over its archive file, and lookups would find one or the other.

    Raises:
        ConflictError: naming ``what`` ended (a file system look-up per month folder).
    """
    if await was_archived(archive, thread_id):
        raise ConflictError(f"{what} ended: its thread {thread_id} was archived; start a new one")


async def was_archived(archive: Archive | None, thread_id: str) -> bool:
    """Whether a thread of that id is in the archive (off the event loop)."""
    return archive is not None and await asyncio.to_thread(archive.has, thread_id)


class Retention:
    """Archives finished threads older than ``age`` seconds.

    Args:
        channels: the names of the channels whose per-thread state goes too.
        every: seconds between two sweeps of one worker.
    """

    def __init__(
        self,
        log: ThreadLog,
        indexes: Indexes,
        audit: AuditLog,
        archive: Archive,
        clock: Clock,
        *,
        age: float,
        channels: Sequence[str],
        every: float = 60.0,
    ) -> None:
        self.log = log
        self.indexes = indexes
        self.audit = audit
        self.archive = archive
        self.clock = clock
        self.age = age
        self.channels = tuple(channels)
        self.every = every

    async def sweep(self, limit: int = 100) -> int:
        """Archive and remove what is due; returns how many threads left Redis."""
        now = self.clock.now()
        due = await self.indexes.finished_before(FINISHED, now - self.age, limit)
        moved = 0
        for thread_id in due:
            meta = await self.log.meta(thread_id)
            if meta.get("status") not in FINISHED:
                continue  # resumed or changed since it was listed
            state = await self.log.load(thread_id)
            stored = await self.log.stored(thread_id)
            if len(stored) != int(meta.get("version", -1)):
                continue  # written to meanwhile: next sweep
            await asyncio.to_thread(self.archive.write, thread_id, meta, stored, now)
            if await self.log.forget(state, meta, self.channels):
                moved += 1
                log.info(
                    "thread %s archived (%s, %d events)", thread_id, meta["status"], len(stored)
                )
        await self._audit(now)
        return moved

    async def _audit(self, now: float, limit: int = 1000) -> None:
        """Move audit records older than the age to the archive, then out of Redis: in
        every shard those Redis stored by one time (``_frontier``)."""
        older = [await self.audit.older(shard, now - self.age, limit) for shard in range(SHARDS)]
        frontier = _frontier(older, limit)
        for shard, stored in enumerate(older):
            batch = [(entry, line) for entry, line in stored if _ms(entry) <= frontier]
            if not batch:
                continue
            # With their entry ids: a reader of the streams reads on in the archive from
            # where it stopped (``Archive.audit_after``).
            await asyncio.to_thread(self.archive.write_audit, shard, batch, now)
            await self.audit.trim(shard, [entry for entry, _ in batch])
            log.info("audit: %d records of shard %d archived", len(batch), shard)


def _frontier(older: list[list[tuple[str, str]]], limit: int) -> float:
    """When Redis stored the last record a sweep moves (Unix ms): with a backlog, a shard
    with ``limit`` records or more stops at its ``limit``-th, and every shard stops by then
    too. Else a quiet shard's newer records would be archived (and read, by ``GET /audit``
    going through the archive by time) before a busy shard's older ones, which a page after
    them then never reads."""
    return min((_ms(stored[-1][0]) for stored in older if len(stored) >= limit), default=math.inf)


def _ms(entry_id: str) -> int:
    """When Redis stored a stream entry (Unix ms)."""
    return int(entry_id.partition("-")[0])
