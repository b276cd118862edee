"""Outbound delivery: hands each new event of a thread to every channel, once.

A per-thread cursor records how far delivery got, so a worker that dies
mid-delivery leaves the rest to the next one (at-least-once: channels key
their side effects by event id). A channel that fails is retried from a
durable schedule with exponential backoff, and giving up is recorded as a
``delivery_failed`` event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from fastapi import APIRouter

from bot.domain.errors import VersionConflict
from bot.domain.events import DeliveryFailed, Event
from bot.domain.reducer import ThreadState
from bot.storage import keys
from bot.storage.store import Store

log = logging.getLogger(__name__)

# Claim due retry jobs by pushing them forward; the claimant removes or reschedules.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, job in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], job) end
return due
"""


class Channel(Protocol):
    """A channel adapter, as the core sees it.

    Attributes:
        name: ``webhook``, ``slack``, ``email``.
        router: its inbound HTTP routes, mounted by the app (None: none).
        body_limits: request body limits of its routes by path, where the
            app's default does not fit (raw emails with attachments).
    """

    name: str
    router: APIRouter | None

    @property
    def body_limits(self) -> Mapping[str, int]: ...

    async def start(self, *, inbound: bool) -> None:
        """Open outbound clients; with ``inbound``, also listeners (Socket Mode, SMTP).

        Web processes take inbound traffic; worker-only processes never do.
        """
        ...

    async def stop(self) -> None:
        """Close what ``start`` opened."""
        ...

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        """Render ``event`` to the humans concerned, or do nothing if none are here.

        Raises:
            Exception: any failure; the delivery is retried later.
        """
        ...


class Outbox:
    """Delivers thread events to channels.

    Args:
        store: the event store.
        channels: the configured channels.
        base_delay: first retry delay in seconds; it doubles each attempt.
        give_up_after: seconds after the first failure when to stop retrying.
    """

    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        *,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        give_up_after: float = 3600.0,
    ) -> None:
        self.store = store
        self.channels: dict[str, Channel] = {c.name: c for c in channels}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self._claim = store.redis.register_script(_CLAIM)

    def add(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    async def flush(self, state: ThreadState, cursor: int) -> int:
        """Deliver the events of ``state`` from index ``cursor`` on; returns the new cursor.

        The caller records the cursor when it lets go of the thread (``Queue.release``).
        """
        if cursor >= state.version:
            return cursor
        events = (await self.store.events(state.id, version=state.version))[cursor : state.version]
        for index, event in enumerate(events, start=cursor):
            for channel in self.channels.values():
                job = _Job(c=channel.name, t=state.id, e=index, n=0, f=time.time())
                await self._try(channel, state, event, job)
        return state.version

    async def retry_due(self, limit: int = 50) -> int:
        """Retry failed deliveries that are due; returns how many were tried."""
        now = time.time()
        jobs = await self._claim(keys=[keys.retries()], args=[now, 60, limit])
        for raw in jobs:
            job = _Job(**json.loads(raw))
            channel = self.channels.get(job.c)
            if channel is None:
                log.warning(
                    "thread %s: dropped a retry for channel %s, not configured in this process",
                    job.t,
                    job.c,
                )
            else:
                state = await self.store.load(job.t)
                events = await self.store.events(job.t)
                await self._try(channel, state, events[job.e], job)
            # Only now: a worker dying mid-delivery leaves the claimed job to fire again.
            await self.store.redis.zrem(keys.retries(), raw)
        return len(jobs)

    async def _try(self, channel: Channel, state: ThreadState, event: Event, job: _Job) -> None:
        try:
            await channel.deliver(state, event)
        except Exception as exc:
            await self._failed(channel, state, event, job, exc)

    async def _failed(
        self, channel: Channel, state: ThreadState, event: Event, job: _Job, exc: Exception
    ) -> None:
        now = time.time()
        if now - job.f >= self.give_up_after:
            log.warning("thread %s: %s gave up on %s: %r", state.id, channel.name, event.type, exc)
            failed = DeliveryFailed(channel=channel.name, event_id=event.id, error=repr(exc)[:500])
            await self._record(state.id, failed)
            return
        delay = min(self.base_delay * 2**job.n, self.max_delay)
        log.info(
            "thread %s: %s failed on %s (attempt %d), retry in %.1fs: %r",
            state.id,
            channel.name,
            event.type,
            job.n + 1,
            delay,
            exc,
        )
        retry = _Job(c=channel.name, t=state.id, e=job.e, n=job.n + 1, f=job.f)
        await self.store.redis.zadd(keys.retries(), {json.dumps(asdict(retry)): now + delay})

    async def _record(self, thread_id: str, event: Event) -> None:
        while True:
            state = await self.store.load(thread_id)
            try:
                await self.store.append(state, [event], enqueue=False)
                return
            except VersionConflict:
                continue


@dataclass(frozen=True)
class _Job:
    """A delivery to retry: channel, thread, event index, attempts so far, first failure."""

    c: str
    t: str
    e: int
    n: int
    f: float
