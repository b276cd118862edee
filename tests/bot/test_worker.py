"""Workers and their leases against a real Redis: letting go, delivering first, renewing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import ClassVar, TypeVar

import pytest
from fastapi import APIRouter
from redis.asyncio import Redis

from bot.domain.agents import Agent
from bot.domain.clock import ManualClock
from bot.domain.events import Actor, Decision, Event, Origin, Outcome
from bot.domain.model import ModelCall, ModelRequest, ModelTurn
from bot.domain.reducer import Status, ThreadState
from bot.domain.tools import Tool, ToolContext
from bot.engine.ports import Channel
from bot.runtime import Runtime, build_runtime
from bot.storage import keys
from bot.storage.queue import Queue
from tests.doubles import Echo, Ledger, Script, ScriptedModel, c, make_agent, turns
from tests.harness import eventually

T = TypeVar("T")
ALICE = Actor(channel="api", id="alice")
BOB = Actor(channel="api", id="bob")


def runtime(redis: Redis, model: ScriptedModel, *channels: Channel) -> Runtime:
    return build_runtime(redis, {"bank": make_agent(Ledger())}, model, channels=lambda _: channels)


async def unsettled(redis: Redis) -> tuple[int, int]:
    """Queue entries still in the streams, and those read but not acknowledged."""
    streams = [keys.queue(s) for s in range(keys.SHARDS)]
    pending = [await redis.xpending(q, keys.GROUP) for q in streams]
    waiting = [int(await redis.xlen(q)) for q in streams]
    return sum(waiting), sum(int(p["pending"]) for p in pending)


def with_slow_tool(release: asyncio.Event) -> Agent:
    """The bank agent with one more tool, ``slow``, whose call lasts until ``release`` is
    set: a step that outlasts leases, claims and other workers for as long as a test needs."""

    async def slow(args: Echo, ctx: ToolContext) -> str:
        await release.wait()
        return args.word

    agent = make_agent(Ledger())
    return replace(agent, tools=(*agent.tools, Tool("slow", "Take a while.", Echo, slow)))


async def test_the_step_that_suspends_lets_go_and_acknowledges(redis: Redis) -> None:
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))))
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    await rt.worker().burst()

    state = await rt.log.load(got.thread.id)
    assert state.status is Status.AWAITING_APPROVAL
    assert await redis.exists(keys.lease(state.id)) == 0
    assert await unsettled(redis) == (0, 0)

    (req,) = state.open_requests()
    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.worker().burst()
    assert (await rt.log.load(state.id)).status is Status.DONE
    assert await redis.exists(keys.lease(state.id)) == 0
    assert await unsettled(redis) == (0, 0)


class LeaseWatcher:
    """A channel that records, for each event delivered, whether its thread was still leased."""

    name = "watcher"
    router: APIRouter | None = None
    body_limits: ClassVar[dict[str, int]] = {}

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.seen: list[tuple[str, bool]] = []

    async def start(self, *, inbound: bool) -> None:
        return None

    async def stop(self) -> None:
        return None

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        return self.interested

    interested = True

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        leased = bool(await self.redis.exists(keys.lease(thread.id)))
        self.seen.append((event.type, leased))


async def test_with_channels_delivery_comes_before_letting_go(redis: Redis) -> None:
    # A worker dying between letting go and delivering would lose the approval prompt.
    watcher = LeaseWatcher(redis)
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), watcher)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    await rt.worker().burst()

    assert ("approval_requested", True) in watcher.seen
    assert all(leased for _, leased in watcher.seen)
    assert await redis.exists(keys.lease(got.thread.id)) == 0
    assert await unsettled(redis) == (0, 0)


async def test_with_nothing_to_deliver_the_last_append_lets_go(redis: Redis) -> None:
    # A channel with nothing to say about these events is not called, and the
    # step's last write releases the thread and acknowledges its entry itself.
    watcher = LeaseWatcher(redis)
    watcher.interested = False
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), watcher)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    await rt.worker().burst()

    state = await rt.log.load(got.thread.id)
    assert state.status is Status.AWAITING_APPROVAL and watcher.seen == []
    assert await redis.exists(keys.lease(got.thread.id)) == 0
    assert await unsettled(redis) == (0, 0)
    # Delivery is not owed later either: the cursor moved with the release (to the end of
    # the log, where it is kept as no cursor at all).
    shard = keys.shard_of(got.thread.id)
    assert await redis.hget(keys.cursors(shard), got.thread.id) is None  # type: ignore[misc]
    assert not await redis.exists(keys.meta(got.thread.id))

    (req,) = state.open_requests()
    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.worker().burst()
    assert (await rt.log.load(got.thread.id)).status is Status.DONE
    assert await unsettled(redis) == (0, 0) and watcher.seen == []


async def renewal(redis: Redis, lease: str) -> None:
    """Wait until the lease's time to live rises: without renewal it only falls."""
    lowest = float("inf")

    async def rose() -> bool:
        nonlocal lowest
        ttl = int(await redis.pttl(lease))
        if ttl < 0:  # not taken yet
            return False
        if ttl > lowest:
            return True
        lowest = ttl
        return False

    await eventually(rose)


async def test_a_long_step_keeps_its_lease(redis: Redis) -> None:
    release = asyncio.Event()
    agent = with_slow_tool(release)
    rt = build_runtime(redis, {"bank": agent}, ScriptedModel(turns(c("slow", word="hi"))))
    worker = rt.worker(lease_ms=300)
    got = await rt.inbox.message(agent="bank", text="go", by=ALICE, origin=Origin(channel="api"))
    lease = keys.lease(got.thread.id)
    draining = asyncio.create_task(worker.burst())

    await renewal(redis, lease)
    await renewal(redis, lease)  # and again: it is kept, not renewed once
    release.set()
    await draining
    assert (await rt.log.load(got.thread.id)).status is Status.DONE
    assert await redis.exists(lease) == 0


async def consumers(redis: Redis) -> dict[int, set[str]]:
    """Each shard's consumers in the workers' group, where there are any."""
    found = {s: await redis.xinfo_consumers(keys.queue(s), keys.GROUP) for s in range(keys.SHARDS)}
    return {s: {str(c["name"]) for c in got} for s, got in found.items() if got}


async def test_a_worker_that_stops_leaves_and_workers_long_gone_are_forgotten(
    redis: Redis,
) -> None:
    clock = ManualClock(1_800_000_000.0)
    rt = build_runtime(redis, {"bank": make_agent(Ledger())}, ScriptedModel(turns()), clock=clock)
    # Two workers died two days ago: one holding an entry of shard 3 it never acknowledged.
    holder, idle = Queue(redis, "died-holding", clock), Queue(redis, "died-idle", clock)
    await holder.ensure_groups()
    eid = await redis.xadd(keys.queue(3), {"t": "th_0123456789abcdef0123"})
    for dead in (holder, idle):
        await dead.heartbeat()
        await dead.read(10, None)
    everywhere = {s: {"died-holding", "died-idle"} for s in range(keys.SHARDS)}
    assert await consumers(redis) == everywhere
    clock.advance(2 * 86400)

    stop = asyncio.Event()
    serving = asyncio.create_task(rt.worker(name="live", block_ms=50).run(stop))
    try:
        # Forgotten as it starts: their heartbeats, and each consumer but the one holding.
        live = {s: {"live", "died-holding"} if s == 3 else {"live"} for s in range(keys.SHARDS)}
        await eventually(lambda: _is(consumers(redis), live))
        assert await redis.zrange(keys.workers(), 0, -1) == ["live"]
    finally:
        stop.set()
        await serving
    assert await consumers(redis) == {3: {"died-holding"}}  # it left: only the holder stays
    assert await redis.zcard(keys.workers()) == 0
    (held,) = await redis.xpending_range(keys.queue(3), keys.GROUP, "-", "+", 10)
    assert (held["message_id"], held["consumer"]) == (eid, "died-holding")  # not lost

    # Once another worker took its entry over, the holder goes too.
    other = Queue(redis, "other", clock)
    await other.heartbeat()
    assert [e.id for e in await other.reclaim(0)] == [eid]
    assert await other.prune(86400) == 1
    assert await consumers(redis) == {s: {"other"} for s in range(keys.SHARDS)}


async def _is(got: Awaitable[T], expected: T) -> bool:
    return await got == expected


async def test_a_step_that_dies_after_its_entry_was_reclaimed_is_looked_at_again(
    redis: Redis,
) -> None:
    # A step outlasting claim_idle_ms has its entry reclaimed by another worker, which finds
    # the thread leased and acknowledges the entry. If the step then dies, the thread's
    # timer must still bring it back once the lease runs out: there is no entry left.
    clock = ManualClock(1_800_000_000.0)
    release = asyncio.Event()
    agent = with_slow_tool(release)
    # The second turn fails as a step can (an adapter's bug, Redis gone mid-step).
    model = ScriptedModel(turns(c("slow", word="hi"), RuntimeError("the step died")))
    rt = build_runtime(redis, {"bank": agent}, model, clock=clock)
    got = await rt.inbox.message(agent="bank", text="go", by=ALICE, origin=Origin(channel="api"))
    tid = got.thread.id

    first = asyncio.create_task(rt.worker(name="first", lease_ms=300).burst())
    await eventually(lambda: _is_started(rt, tid))
    stop = asyncio.Event()
    other = asyncio.create_task(rt.worker(name="other", claim_idle_ms=50, block_ms=50).run(stop))
    await eventually(lambda: _is(unsettled(redis), (0, 0)))  # reclaimed, found leased, acked
    stop.set()
    await other
    release.set()
    await first  # its step died on the second turn
    await eventually(lambda: _is(redis.exists(keys.lease(tid)), 0))

    clock.advance(1)
    await rt.worker(name="third").burst()
    assert (await rt.log.load(tid)).status is Status.DONE


async def _is_started(rt: Runtime, tid: str) -> bool:
    state = await rt.log.load(tid)
    return any(call.started is not None for call in state.calls.values())


class HeldModel(ScriptedModel):
    """A scripted model whose first turn waits until ``go`` is set (a slow model call)."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.go = asyncio.Event()
        self.waiting = asyncio.Event()

    async def complete(self, request: ModelRequest) -> ModelTurn:
        if not self.waiting.is_set():
            self.waiting.set()
            await self.go.wait()
        return await super().complete(request)


async def test_a_worker_that_lost_its_lease_writes_nothing_more(redis: Redis) -> None:
    # A worker whose lease ran out mid-step (its renewals failed) while another took the
    # thread over must not go on writing: it would find the other's tool running, and
    # tell people it was interrupted with its outcome unknown.
    release = asyncio.Event()
    agent = with_slow_tool(release)
    model = HeldModel(turns(c("slow", word="late"), c("slow", word="hi")))
    rt = build_runtime(redis, {"bank": agent}, model)
    got = await rt.inbox.message(agent="bank", text="go", by=ALICE, origin=Origin(channel="api"))
    tid = got.thread.id

    first = asyncio.create_task(rt.worker(name="first").burst())
    await model.waiting.wait()
    await redis.delete(keys.lease(tid))  # it ran out while the first worker stalled
    stop = asyncio.Event()
    other = asyncio.create_task(rt.worker(name="other", claim_idle_ms=50, block_ms=50).run(stop))
    await eventually(lambda: _is_started(rt, tid))  # the other runs the tool now
    model.go.set()
    await first  # the first's model turn comes back late
    release.set()
    state = await eventually(lambda: _at_rest(rt, tid))
    stop.set()
    await other

    assert state.status is Status.DONE
    assert [call.result.outcome for call in state.calls.values() if call.result] == [Outcome.OK]
    assert not state.requests  # nobody was asked about an interrupted run


async def _at_rest(rt: Runtime, tid: str) -> ThreadState | None:
    state = await rt.log.load(tid)
    return state if state.status in (Status.DONE, Status.AWAITING_HUMAN) else None


async def test_a_step_that_always_fails_is_given_up_on_and_the_thread_marked_failed(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug on this thread: every step raises. It is retried (reclaimed) a bounded number
    # of times, then the thread is failed, its entry acknowledged, with one ERROR line.
    def broken(request: ModelRequest) -> list[ModelCall]:
        raise RuntimeError("a bug")

    model = ScriptedModel(broken)
    rt = runtime(redis, model)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    tid = got.thread.id
    stop = asyncio.Event()
    worker = rt.worker(name="w", lease_ms=40, claim_idle_ms=100, block_ms=50, step_attempts=3)
    serving = asyncio.create_task(worker.run(stop))
    try:
        state = await eventually(lambda: _failed(rt, tid), timeout=20)
        await eventually(lambda: _is(unsettled(redis), (0, 0)))
    finally:
        stop.set()
        await serving
    assert len(model.requests) == 3
    assert "gave up" in (state.last_error or "")
    gave_up = [
        r
        for r in caplog.records
        if r.levelname == "ERROR" and "gave up on thread " + tid in r.getMessage()
    ]
    assert len(gave_up) == 1

    # People resume it as any failed thread: it is stepped again.
    model.script = turns()
    await rt.inbox.control(tid, "resume", by=BOB)
    await rt.worker().burst()
    assert (await rt.log.load(tid)).status is Status.DONE


async def _failed(rt: Runtime, tid: str) -> ThreadState | None:
    state = await rt.log.load(tid)
    return state if state.status is Status.FAILED else None


async def test_a_given_up_threads_error_says_no_credentials(redis: Redis) -> None:
    def broken(request: ModelRequest) -> list[ModelCall]:
        raise RuntimeError("POST https://bot:hunter2@models.example.com/v1?key=k3y failed")

    rt = runtime(redis, ScriptedModel(broken))
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    stop = asyncio.Event()
    worker = rt.worker(name="w", lease_ms=40, claim_idle_ms=100, block_ms=50, step_attempts=1)
    serving = asyncio.create_task(worker.run(stop))
    try:
        state = await eventually(lambda: _failed(rt, got.thread.id), timeout=20)
    finally:
        stop.set()
        await serving
    said = state.last_error or ""
    assert "gave up" in said and "https://models.example.com" in said
    assert "hunter2" not in said and "k3y" not in said
