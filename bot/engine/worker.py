"""Workers: take threads from the queue, step them, deliver what they produced.

``Worker.run`` serves until stopped (SIGTERM finishes the steps in hand), then leaves:
its name goes from the heartbeats and from each shard's consumer group (where it holds
no entry); a serving worker also forgets workers not seen for a day (they died).
``Worker.burst`` drains the queue and returns, for tests and benchmarks; its name stays
until a serving worker forgets it with the others not seen for a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from opentelemetry.trace import SpanKind

from bot.domain.events import ErrorEvent, Event, ToolStarted
from bot.domain.reducer import Status, ThreadState
from bot.domain.text import redact_urls
from bot.engine import metrics, tracing
from bot.engine.loop import Loop
from bot.engine.outbox import Outbox
from bot.engine.retention import Retention
from bot.storage.connection import StorageFailure
from bot.storage.queue import Entry, Queue
from bot.storage.threadlog import Lease, NotHolder, ThreadLog
from bot.storage.timers import Timers

log = logging.getLogger(__name__)


PRUNE_EVERY = 600.0
"""Seconds between two looks of a serving worker for workers to forget (``Queue.prune``)."""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's main loop.

    Args:
        log: the thread logs (leases).
        loop: steps threads.
        queue: this worker's queue handle (its consumer name).
        timers: swept into the queue when due.
        outbox: delivers new events to the channels.
        concurrency: threads stepped at once.
        lease_ms: how long a thread lease lives without renewal.
        claim_idle_ms: an entry unacknowledged this long was taken by a dead
            worker and is reclaimed.
        forget_after: seconds after which a worker not seen is forgotten (``Queue.prune``,
            every ``PRUNE_EVERY`` seconds of a serving worker).
        step_attempts: deliveries of one queue entry (its read, then each reclaim) whose
            step fails before the thread is given up on: marked failed (a fatal error
            event, for people to resume) and the entry acknowledged (``_give_up``).
    """

    def __init__(
        self,
        log: ThreadLog,
        loop: Loop,
        queue: Queue,
        timers: Timers,
        outbox: Outbox,
        *,
        concurrency: int = 32,
        lease_ms: int = 30_000,
        claim_idle_ms: int = 60_000,
        block_ms: int = 1000,
        on_step: Callable[[ThreadState], None] | None = None,
        retention: Retention | None = None,
        forget_after: float = 86400.0,
        step_attempts: int = 5,
    ) -> None:
        self.log = log
        self.step_attempts = step_attempts
        self.forget_after = forget_after
        self._pruned = -float("inf")
        self.retention = retention
        self._swept = -float("inf")
        self._sweeping: asyncio.Task[None] | None = None
        """A serving worker's retention sweep, beside its steps (``_chores``)."""
        self.loop = loop
        self.queue = queue
        self.timers = timers
        self.outbox = outbox
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.on_step = on_step
        """Called with each thread's state after it was stepped (metrics, benchmarks)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: set[Lease] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop ``run`` or ``burst`` serves on."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish the steps in hand."""
        self._loop = asyncio.get_running_loop()
        await self.queue.ensure_groups()
        log.info("worker %s started (concurrency %d)", self.queue.consumer, self.concurrency)
        last_chores = 0.0
        while not stop.is_set():
            # Paces the chores only: when a timer or retry is due is read from the clock.
            if time.monotonic() - last_chores >= 1.0:
                await self._survive("chores", self._chores())  # tried again a second later
                last_chores = time.monotonic()
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                entries = await self.queue.read(free, self.block_ms)
            except StorageFailure as exc:
                log.warning("worker %s: queue unavailable: %r", self.queue.consumer, exc)
                await _pause(stop, 1.0)
                with contextlib.suppress(StorageFailure):
                    await self.queue.ensure_groups()  # the stream may have been deleted
                continue
            for entry in entries:
                self._start(entry)
            if entries:
                # The steps just started send their takes before this worker's next read:
                # one turn of the event loop, and a resume's take does not wait behind it.
                await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sweeping is not None:  # safe to cut: what it archived and kept is swept again
            await _cancel(self._sweeping)
        await self._stop_renewer()
        await self.queue.close()
        await self._survive("leaving", self.queue.leave())
        log.info("worker %s stopped", self.queue.consumer)

    async def burst(self) -> int:
        """Process everything queued or due now, and return how many entries."""
        self._loop = asyncio.get_running_loop()
        await self.queue.ensure_groups()
        done = 0
        while True:
            await self._chores(serving=False)
            entries = await self.queue.read(self.concurrency, None)
            if not entries and not self._tasks:
                await self._stop_renewer()
                await self.queue.close()
                return done
            for entry in entries:
                self._start(entry)
            done += len(entries)
            if self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _chores(self, *, serving: bool = True) -> None:
        """``serving`` (``run``): also take over a dead worker's entries, and sweep retention
        in the background; a ``burst`` sweeps it before this returns."""
        await self.queue.heartbeat()
        await self.timers.sweep()
        await self.outbox.retry_due()
        if self.retention and time.monotonic() - self._swept >= self.retention.every:
            self._swept = time.monotonic()
            if not serving:
                await self.retention.sweep()
            elif self._sweeping is None or self._sweeping.done():
                # Beside the steps: with a backlog a sweep takes seconds (1.5 ms of CPU and
                # an fsync a thread), and the queue is read meanwhile.
                sweep = self._survive("retention sweep", self.retention.sweep())
                self._sweeping = asyncio.create_task(sweep)
        if serving:
            for entry in await self.queue.reclaim(self.claim_idle_ms):
                log.info("worker %s reclaimed %s", self.queue.consumer, entry.thread_id)
                metrics.LEASE_RECLAIMS.inc()
                self._start(entry)
            if time.monotonic() - self._pruned >= PRUNE_EVERY:
                self._pruned = time.monotonic()
                if gone := await self.queue.prune(self.forget_after):
                    log.info(
                        "worker %s forgot %d consumers of workers not seen for %.0fs",
                        self.queue.consumer,
                        gone,
                        self.forget_after,
                    )

    async def _survive(self, what: str, work: Awaitable[object]) -> None:
        """Run ``work``, whose failure is logged and must not end the worker."""
        try:
            await work
        except StorageFailure as exc:
            log.warning("worker %s: %s failed: %r", self.queue.consumer, what, exc)
        except Exception:
            log.exception("worker %s: %s failed", self.queue.consumer, what)

    def _start(self, entry: Entry) -> None:
        # On the loop it serves on: ``asyncio.create_task`` looks it up on every call, which
        # asks the OS for the process id on Python 3.11 (a system call; see ``Wire.send``).
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(self._handle(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry: Entry) -> None:
        thread_id = entry.thread_id
        async with self._slots:
            taken = None
            try:
                # A child of the write that queued the thread: one trace across the queue.
                with tracing.span(
                    "step",
                    context=tracing.from_traceparent(entry.trace),
                    kind=SpanKind.CONSUMER,
                ):
                    tracing.bind(thread=thread_id)
                    if entry.deliveries > self.step_attempts:
                        # Every delivery so far ended with no word (the workers died): not
                        # stepped again.
                        why = f"{entry.deliveries - 1} attempts ended without a word"
                        await self._give_up(entry, None, why)
                        return
                    # A tool's start this process knows is next goes with the take.
                    started = self.loop.ahead(self.log.cached(thread_id))
                    taken = await self.log.take(
                        thread_id,
                        entry.id,
                        self.queue.consumer,
                        self.lease_ms,
                        then=[started] if started else (),
                    )
                    if taken is not None:
                        ran = started if taken.appended else None
                        await self._step_leased(taken.lease, taken.state, ran)
            except NotHolder:
                # Its lease ran out mid-step: whoever takes the thread steps it from what
                # was written (its entry, if still this worker's, is reclaimed).
                log.warning("worker %s lost the lease on %s", self.queue.consumer, thread_id)
            except Exception as exc:
                if entry.deliveries < self.step_attempts:
                    # Left unacknowledged: reclaimed and retried after claim_idle_ms.
                    log.exception(
                        "worker %s failed on thread %s (attempt %d of %d)",
                        self.queue.consumer,
                        thread_id,
                        entry.deliveries,
                        self.step_attempts,
                    )
                    return
                lease = taken.lease if taken is not None and taken.lease.held else None
                why = redact_urls(
                    f"{entry.deliveries} attempts failed, the last with {type(exc).__name__}: {exc}"
                )
                await self._survive("giving up", self._give_up(entry, lease, why, exc))

    async def _give_up(
        self, entry: Entry, lease: Lease | None, why: str, exc: BaseException | None = None
    ) -> None:
        """Stop retrying the thread of ``entry``: record a fatal error on it (status failed:
        people see it, and resume it as any failed thread), deliver that, let go and
        acknowledge the entry. With ``lease`` (still held from the failed step) or a new
        one; when the thread cannot be written to (its log does not read), the entry is
        acknowledged anyway: the ERROR line is all that is left of it."""
        tid = entry.thread_id
        try:
            if lease is None:
                taken = await self.log.take(tid, entry.id, self.queue.consumer, self.lease_ms)
                if taken is None:  # another worker holds it: the entry was acknowledged
                    return
                lease = taken.lease
            state = await self.log.load(tid)
            if state.status is not Status.FAILED:
                message = f"Greenlight gave up stepping this thread: {why}"
                event = ErrorEvent(message=message, fatal=True)
                state = await self.log.append(state, [event], enqueue=False, holder=lease.holder)
            try:
                lease.delivered = await self.outbox.flush(state, lease.delivered)
            except Exception:
                log.exception("worker %s: delivering %s's failure failed", self.queue.consumer, tid)
            if not await self.log.release(lease, state.version, state.next_due()):
                raise RuntimeError(f"thread {tid} changed while it was given up on")
        except Exception:
            await self.queue.ack(entry)
            log.exception(
                "worker %s gave up on thread %s after %s; could not record it on the thread, "
                "its queue entry acknowledged",
                self.queue.consumer,
                tid,
                why,
            )
            return
        log.error(
            "worker %s gave up on thread %s after %s; it is failed until resumed",
            self.queue.consumer,
            tid,
            why,
            exc_info=exc,
        )

    async def _step_leased(
        self, lease: Lease, state: ThreadState, started: ToolStarted | None = None
    ) -> None:
        self._leases.add(lease)
        self._ensure_renewer()

        async def release_if(after: ThreadState, events: Sequence[Event]) -> Lease | None:
            """Let go with this append when nothing is left to do or to deliver."""
            if not self.loop.is_at_rest(after):
                return None
            before = await self.log.events(after.id, version=after.version - len(events))
            if self.outbox.concerned(after, [*before[lease.delivered :], *events]):
                return None
            return lease

        try:
            # What was recorded before this step is delivered first: a person's message
            # shows them the agent at work (Slack's "Working…") while the step runs.
            lease.delivered = await self.outbox.flush(state, lease.delivered)
            while True:
                was_done = state.status is Status.DONE
                state = await self.loop.step(
                    state.id, state, release_if=release_if, started=started, holder=lease.holder
                )
                started = None
                metrics.of(metrics.STEPS, state.agent).inc()
                if state.status is Status.DONE and not was_done:
                    metrics.of(metrics.CYCLES, state.agent).inc()
                if not lease.held:  # let go with the last append: nothing to deliver
                    if self.on_step is not None:
                        self.on_step(state)
                    return
                # Delivered before letting go: a crash in between delivers again, never less.
                lease.delivered = await self.outbox.flush(state, lease.delivered)
                if not await self.log.release(lease, state.version, state.next_due()):
                    state = await self.log.load(state.id)
                    continue
                if self.on_step is not None:
                    self.on_step(state)
                return
        finally:
            self._leases.discard(lease)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        """One loop renews every lease in hand, instead of a task per step."""
        while self._leases:
            await asyncio.sleep(self.lease_ms / 3000)
            held = [lease for lease in self._leases if lease.held]
            try:
                lost = await self.log.renew(held) if held else []
            except StorageFailure as exc:
                log.warning("worker %s could not renew leases: %r", self.queue.consumer, exc)
                continue
            # A lease let go of while the renewal was on its way was not lost.
            for lease in (lease for lease in lost if lease.held):
                log.warning("worker %s lost the lease on %s", self.queue.consumer, lease.thread_id)
                metrics.LEASES_LOST.inc()
                self._leases.discard(lease)

    async def _stop_renewer(self) -> None:
        if self._renewer is not None:
            await _cancel(self._renewer)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it ends. Unlike awaiting it with its cancellation
    suppressed, a cancel of the caller meanwhile still ends the caller; an error the task
    ended with is raised."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
