"""Workers and their leases against a real Redis: letting go, delivering first, renewing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import ClassVar

from fastapi import APIRouter
from redis.asyncio import Redis

from bot.domain.events import Actor, Decision, Event, Origin
from bot.domain.reducer import Status, ThreadState
from bot.domain.tools import Tool, ToolContext
from bot.engine.ports import Channel
from bot.runtime import Runtime, build_runtime
from bot.storage import keys
from tests.doubles import Echo, Ledger, ScriptedModel, c, make_agent, turns
from tests.harness import eventually

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

    async def slow(args: Echo, ctx: ToolContext) -> str:
        await release.wait()
        return args.word

    agent = make_agent(Ledger())
    agent = replace(agent, tools=(*agent.tools, Tool("slow", "Take a while.", Echo, slow)))
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
