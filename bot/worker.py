"""Workers: take threads from the queue, step them, deliver what they produced.

``Worker.run`` serves until stopped (SIGTERM finishes the steps in hand);
``Worker.burst`` drains the queue and returns, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError

from bot.loop import Loop
from bot.outbox import Outbox
from bot.queue import Queue
from bot.threads import ThreadState

log = logging.getLogger(__name__)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's main loop.

    Args:
        loop: steps threads.
        queue: this worker's queue handle (its consumer name).
        outbox: delivers new events to the channels.
        concurrency: threads stepped at once.
        claim_idle_ms: an entry unacknowledged this long was taken by a dead
            worker and is reclaimed.
    """

    def __init__(
        self,
        loop: Loop,
        queue: Queue,
        outbox: Outbox,
        *,
        concurrency: int = 32,
        claim_idle_ms: int = 60_000,
        block_ms: int = 1000,
        on_step: Callable[[ThreadState], None] | None = None,
    ) -> None:
        self.loop = loop
        self.queue = queue
        self.outbox = outbox
        self.concurrency = concurrency
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.on_step = on_step
        """Called with each thread's state after it was stepped (metrics, benchmarks)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish the steps in hand."""
        await self.queue.ensure_group()
        log.info("worker %s started (concurrency %d)", self.queue.consumer, self.concurrency)
        last_chores = 0.0
        while not stop.is_set():
            if time.monotonic() - last_chores >= 1.0:
                await self._chores()
                last_chores = time.monotonic()
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                entries = await self.queue.read(free, self.block_ms)
            except RedisError as exc:
                log.warning("worker %s: queue unavailable: %r", self.queue.consumer, exc)
                await _pause(stop, 1.0)
                with contextlib.suppress(RedisError):
                    await self.queue.ensure_group()  # the stream may have been deleted
                continue
            for entry in entries:
                self._start(entry)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("worker %s stopped", self.queue.consumer)

    async def burst(self) -> int:
        """Process everything queued or due now, and return how many entries."""
        await self.queue.ensure_group()
        done = 0
        while True:
            await self._chores(reclaim=False)
            entries = await self.queue.read(self.concurrency, None)
            if not entries and not self._tasks:
                return done
            for entry in entries:
                self._start(entry)
            done += len(entries)
            if self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _chores(self, *, reclaim: bool = True) -> None:
        await self.queue.heartbeat()
        await self.queue.sweep_timers()
        await self.outbox.retry_due()
        if reclaim:
            for entry in await self.queue.reclaim(self.claim_idle_ms):
                log.info("worker %s reclaimed %s", self.queue.consumer, entry[1])
                self._start(entry)

    def _start(self, entry: tuple[str, str]) -> None:
        task = asyncio.create_task(self._handle(*entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry_id: str, thread_id: str) -> None:
        async with self._slots:
            try:
                store = self.loop.store
                known = store.known(thread_id)
                new = await self.queue.take(thread_id, entry_id, known)
                if new is not None:
                    await self._step_leased(await store.absorb(thread_id, new, known), entry_id)
            except Exception:
                # Left unacknowledged: reclaimed and retried after claim_idle_ms.
                log.exception("worker %s failed on thread %s", self.queue.consumer, thread_id)

    async def _step_leased(self, state: ThreadState, entry_id: str) -> None:
        thread_id = state.id
        renewer = asyncio.create_task(self._keep_lease(thread_id))
        try:
            while True:
                state = await self.loop.step(thread_id, state)
                await self.outbox.flush(state)
                if await self.queue.release(thread_id, state.version, state.next_due(), entry_id):
                    if self.on_step is not None:
                        self.on_step(state)
                    return
                state = await self.loop.store.load(thread_id)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _keep_lease(self, thread_id: str) -> None:
        while True:
            await asyncio.sleep(self.queue.lease_ms / 3000)
            if not await self.queue.renew(thread_id):
                log.warning("worker %s lost the lease on %s", self.queue.consumer, thread_id)
                return


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
