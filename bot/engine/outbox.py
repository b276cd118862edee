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
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from opentelemetry.trace import StatusCode

from bot.domain.clock import Clock
from bot.domain.events import DeliveryFailed, Event
from bot.domain.reducer import ThreadState
from bot.domain.text import redact_urls
from bot.engine import metrics, tracing
from bot.engine.ports import Outbound
from bot.engine.writes import write
from bot.storage.connection import StorageFailure
from bot.storage.retries import Claimed, Retries
from bot.storage.threadlog import ThreadLog

log = logging.getLogger(__name__)


class Outbox:
    """Delivers thread events to channels.

    Args:
        log: the thread logs.
        retries: the durable retry schedule.
        channels: the configured channels.
        base_delay: first retry delay in seconds; it doubles each attempt.
        give_up_after: seconds after the first failure when to stop retrying.
    """

    def __init__(
        self,
        log: ThreadLog,
        retries: Retries,
        channels: Sequence[Outbound],
        clock: Clock,
        *,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        give_up_after: float = 3600.0,
    ) -> None:
        self.log = log
        self.retries = retries
        self.channels: dict[str, Outbound] = {c.name: c for c in channels}
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after

    def concerned(self, state: ThreadState, events: Sequence[Event]) -> bool:
        """Whether any channel may have something to deliver for any of ``events``."""
        return any(c.concerns(state, e) for e in events for c in self.channels.values())

    async def flush(self, state: ThreadState, cursor: int) -> int:
        """Deliver the events of ``state`` from index ``cursor`` on; returns the new cursor.

        The caller records the cursor when it lets go of the thread (``ThreadLog.release``).
        """
        if cursor >= state.version:
            return cursor
        events = (await self.log.events(state.id, version=state.version))[cursor : state.version]
        for index, event in enumerate(events, start=cursor):
            for channel in self.channels.values():
                if not channel.concerns(state, event):
                    continue  # nothing to deliver, by the channel's word: no span, no count
                job = _Job(c=channel.name, t=state.id, e=index, n=0, f=self.clock.now())
                await self._try(channel, state, event, job)
        return state.version

    async def retry_due(self, limit: int = 50) -> int:
        """Retry failed deliveries that are due; returns how many were tried.

        Each job on its own: one that fails in Greenlight itself (not in its channel, whose
        failure schedules the next attempt) stops no other; it is left claimed, to come back
        after the claim's hold, until the give-up time has passed since its first failure.
        A job whose thread or event is gone (archived) is dropped.
        """
        claimed = await self.retries.claim_due(self.clock.now(), limit)
        for one in claimed:
            await self._retry(one)
        return len(claimed)

    async def _retry(self, claimed: Claimed) -> None:
        job = _to_job(claimed.job)
        if job is None:
            log.warning("dropped a retry job that cannot be read: %.200s", claimed.job)
            metrics.of(metrics.DELIVERY_RETRIES_DROPPED, "", "unreadable").inc()
        else:
            with tracing.bound(thread=job.t):
                if not await self._settled(job):
                    return  # left claimed: it comes back after the hold
        try:
            # Only now: a worker dying mid-delivery leaves the claimed job to fire again.
            await self.retries.done(claimed)
        except StorageFailure as exc:
            log.warning("a retry job is still claimed and fires again: %r", exc)

    async def _settled(self, job: _Job) -> bool:
        """Try ``job`` again, or drop it; False when it failed here and is to be tried again."""
        try:
            dropped = await self._redeliver(job)
        except Exception as exc:
            metrics.of(metrics.DELIVERY_RETRY_ERRORS, job.c).inc()
            expired = self.clock.now() - job.f >= self.give_up_after
            log.error(
                "thread %s: retrying %s on event %d (attempt %d) failed here, not in the"
                " channel: %s; %s",
                job.t,
                job.c,
                job.e,
                job.n + 1,
                type(exc).__name__,
                "dropped, past the give-up time"
                if expired
                else f"tried again in {self.retries.hold:.0f}s",
                exc_info=not isinstance(exc, StorageFailure),  # Redis down: no traceback
            )
            if not expired:
                return False
            dropped = "error"
        if dropped is not None:
            if dropped in _WHY:
                log.warning(
                    "thread %s: dropped a retry of %s on event %d: %s",
                    job.t,
                    job.c,
                    job.e,
                    _WHY[dropped],
                )
            metrics.of(metrics.DELIVERY_RETRIES_DROPPED, job.c, dropped).inc()
        return True

    async def _redeliver(self, job: _Job) -> str | None:
        """Deliver a job's event again; None when tried, else why it was not (``_WHY``)."""
        channel = self.channels.get(job.c)
        if channel is None:
            return "channel"
        state = await self.log.load(job.t)
        events = await self.log.events(job.t, version=state.version) if state.exists else []
        if not 0 <= job.e < len(events):
            return "gone"
        await self._try(channel, state, events[job.e], job)
        return None

    async def _try(self, channel: Outbound, state: ThreadState, event: Event, job: _Job) -> None:
        attributes: dict[str, str | int] = {
            tracing.THREAD_ID: state.id,
            "greenlight.channel": channel.name,
            "greenlight.event": event.type,
            "greenlight.attempt": job.n + 1,
        }
        with tracing.span(f"deliver {channel.name}", attributes=attributes) as span:
            try:
                await channel.deliver(state, event)
            except Exception as exc:
                metrics.of(metrics.DELIVERIES, channel.name, "failed").inc()
                # The type only: a message may carry a callback URL and its query string.
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                await self._failed(channel, state, event, job, exc)
            else:
                metrics.of(metrics.DELIVERIES, channel.name, "ok").inc()

    async def _failed(
        self, channel: Outbound, state: ThreadState, event: Event, job: _Job, exc: Exception
    ) -> None:
        now = self.clock.now()
        said = _said(exc)
        if now - job.f >= self.give_up_after:
            log.warning("thread %s: %s gave up on %s: %s", state.id, channel.name, event.type, said)
            metrics.of(metrics.DELIVERY_GIVE_UPS, channel.name).inc()
            failed = DeliveryFailed(channel=channel.name, event_id=event.id, error=said[:500])
            await self._record(state.id, failed)
            return
        delay = min(self.base_delay * 2**job.n, self.max_delay)
        log.info(
            "thread %s: %s failed on %s (attempt %d), retry in %.1fs: %s",
            state.id,
            channel.name,
            event.type,
            job.n + 1,
            delay,
            said,
        )
        metrics.of(metrics.DELIVERY_RETRIES, channel.name).inc()
        retry = _Job(c=channel.name, t=state.id, e=job.e, n=job.n + 1, f=job.f)
        await self.retries.schedule(state.id, json.dumps(asdict(retry)), now + delay)

    async def _record(self, thread_id: str, event: Event) -> None:
        await write(self.log, thread_id, lambda _: [event], enqueue=False)


_WHY = {
    "channel": "the channel is not configured in this process",
    "gone": "the thread or the event is no longer in Redis (archived)",
}
"""Why a retry was dropped untried, by the reason ``DELIVERY_RETRIES_DROPPED`` counts."""


def _said(exc: Exception) -> str:
    """What a channel's failure says, for the log and the thread's events: its ``repr``, any
    URL in it cut to scheme, host and port (a callback URL may carry a secret; the webhook
    channel says none, and no other channel may either)."""
    return redact_urls(repr(exc))


@dataclass(frozen=True)
class _Job:
    """A delivery to retry: channel, thread, event index, attempts so far, first failure."""

    c: str
    t: str
    e: int
    n: int
    f: float


def _to_job(raw: str) -> _Job | None:
    """A job as ``_failed`` stored it; None when it is not one."""
    try:
        job = _Job(**json.loads(raw))
    except (ValueError, TypeError):
        return None
    texts, counts = (job.c, job.t), (job.e, job.n)
    if all(isinstance(v, str) for v in texts) and all(isinstance(v, int) for v in counts):
        return job if isinstance(job.f, int | float) else None
    return None
