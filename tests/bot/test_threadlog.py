"""The thread log's per-process cache stays true to Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.audit import verify_chain
from bot.domain.clock import ManualClock, SystemClock
from bot.domain.errors import VersionConflict
from bot.domain.events import Actor, Origin, ToolCall, ToolStarted, UserMessage, started_key
from bot.domain.reducer import Status, ThreadState
from bot.runtime import build_runtime
from bot.storage import keys
from bot.storage.threadlog import Lease, ThreadLog
from tests.doubles import Ledger, ScriptedModel, make_agent, turns

ANN = Actor(channel="api", id="ann")


async def test_a_log_shortened_by_redis_is_reread_not_retried_forever(redis: Redis) -> None:
    rt = build_runtime(redis, {"bank": make_agent(Ledger())}, ScriptedModel(turns()))
    got = await rt.inbox.message(agent="bank", text="one", by=ANN, origin=Origin(channel="api"))
    tid = got.thread.id
    state = await rt.inbox.say(tid, "two", ANN)
    assert state.thread.version == 3

    # Redis restarted within its fsync window and lost the last write.
    await redis.rpop(keys.log(tid))  # type: ignore[misc]

    again = await rt.inbox.say(tid, "two, again", ANN)
    assert again.thread.version == 3
    texts = [
        e.text
        for e in await ThreadLog(redis, SystemClock()).events(tid)
        if isinstance(e, UserMessage)
    ]
    assert texts == ["one", "two, again"]


async def test_two_processes_see_each_others_appends(redis: Redis) -> None:
    web, worker = ThreadLog(redis, SystemClock()), ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    first = await web.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    assert (await worker.load(tid)).version == 1
    await web.append(first, [UserMessage(text="b", by=ANN)])
    assert (await worker.load(tid)).version == 2
    assert [e.text for e in await worker.events(tid) if isinstance(e, UserMessage)] == ["a", "b"]


async def test_a_tools_start_is_stored_without_what_its_call_says_and_read_back_whole(
    redis: Redis,
) -> None:
    worker, other = ThreadLog(redis, SystemClock()), ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    call = ToolCall(call_id="call_1", tool="deploy", args={"service": "api"})
    state = await worker.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN), call])
    key = started_key(tid, "call_1")
    await worker.append(state, [ToolStarted(call_id="call_1", idempotency_key=key, args=call.args)])
    stored = await redis.lindex(keys.log(tid), -1)  # type: ignore[misc]
    assert '"call_id":"call_1"' in stored and '"args"' not in stored and key not in stored
    # Another process, which has none of it cached, reads the whole start back.
    started = (await other.events(tid))[-1]
    assert isinstance(started, ToolStarted)
    assert (started.args, started.idempotency_key) == ({"service": "api"}, key)


async def test_a_take_appends_what_follows_only_while_it_holds_the_lease(redis: Redis) -> None:
    # A worker that knows a thread's next step (a tool's start) records it with its take,
    # in one round trip: only if it got the lease, and only on the version it knows.
    worker, other = ThreadLog(redis, SystemClock()), ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    state = await worker.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    # Once plainly (Redis learns the scripts: a first call it does not know is run again
    # after the others of its batch, so the append would come first and be refused).
    first = await worker.take(tid, "", "w1", 30_000)
    assert first is not None and await worker.release(first.lease, state.version, None)

    taken = await worker.take(tid, "", "w1", 30_000, then=[UserMessage(text="b", by=ANN)])
    assert taken is not None and taken.appended and taken.state.version == 2
    assert await redis.llen(keys.log(tid)) == 2  # type: ignore[misc]
    assert await redis.get(keys.lease(tid)) == "w1"

    # Held by w1: another worker's take fails, and what it would have appended is not.
    assert await other.take(tid, "", "w2", 30_000) is None
    await other.load(tid)
    assert await other.take(tid, "", "w2", 30_000, then=[UserMessage(text="x", by=ANN)]) is None
    assert await redis.llen(keys.log(tid)) == 2  # type: ignore[misc]

    # Released, then changed elsewhere: the take still leases, the stale append is refused.
    assert await worker.release(taken.lease, 2, None)
    await other.append(await other.load(tid), [UserMessage(text="c", by=ANN)])
    assert worker.cached(tid) is not None and worker.known(tid) == 2
    again = await worker.take(tid, "", "w1", 30_000, then=[UserMessage(text="d", by=ANN)])
    assert again is not None and not again.appended and again.state.version == 3
    texts = [e.text for e in await other.events(tid) if isinstance(e, UserMessage)]
    assert texts == ["a", "b", "c"]


async def test_a_take_that_appends_says_how_far_delivery_got_or_when_to_look_again(
    redis: Redis,
) -> None:
    # Taken with what follows: the lease knows which events the channels were not handed
    # yet. Held by another: nothing is appended, and the thread is looked at again when
    # that lease runs out (its holder may have died), as after a plain take.
    clock = ManualClock(1_000.0)
    worker, other = ThreadLog(redis, clock), ThreadLog(redis, clock)
    tid = ids.new_thread_id()
    await worker.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)], enqueue=False)

    taken = await worker.take(tid, "", "w1", 30_000, then=[UserMessage(text="b", by=ANN)])
    assert taken is not None and taken.appended and taken.state.version == 2
    assert taken.lease.delivered == 0  # neither "a" nor "b" was handed to a channel

    await other.load(tid)
    assert await other.take(tid, "", "w2", 30_000, then=[UserMessage(text="x", by=ANN)]) is None
    assert await redis.llen(keys.log(tid)) == 2  # type: ignore[misc]
    due = await redis.zscore(keys.timers(keys.shard_of(tid)), tid)
    assert due is not None and 1_029.0 < due <= 1_030.0


async def test_a_finished_thread_leaves_the_cache_and_a_new_message_continues_it(
    redis: Redis,
) -> None:
    model = ScriptedModel(turns())
    rt = build_runtime(redis, {"bank": make_agent(Ledger())}, model)
    got = await rt.inbox.message(agent="bank", text="one", by=ANN, origin=Origin(channel="api"))
    tid = got.thread.id
    await rt.worker().burst()
    # Let go of at ``done``: this process keeps no copy of it.
    assert rt.log.cached(tid) is None
    done = await ThreadLog(redis, SystemClock()).load(tid)
    assert done.status is Status.DONE

    again = await rt.inbox.say(tid, "two", ANN)
    assert again.thread.version == done.version + 1
    await rt.worker().burst()
    events = await rt.log.events(tid)
    assert [e.text for e in events if isinstance(e, UserMessage)] == ["one", "two"]
    # The model's second turn saw the whole thread, read back from Redis.
    assert "one" in model.requests[-1].context_text()
    assert "two" in model.requests[-1].context_text()


async def test_how_far_delivery_got_is_kept_across_appends_until_the_one_that_lets_go(
    redis: Redis,
) -> None:
    # The channels were handed the first event only: takes (with or without what follows)
    # and appends keep saying so, until an append lets go with everything handed over.
    worker = ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    cursors = keys.cursors(keys.shard_of(tid))
    state = await worker.append(
        ThreadState(id=tid), [UserMessage(text=t, by=ANN) for t in "ab"], enqueue=False
    )
    first = await worker.take(tid, "", "w1", 30_000)
    assert first is not None and first.lease.delivered == 0
    first.lease.delivered = 1
    assert await worker.release(first.lease, state.version, None)
    assert await redis.hget(cursors, tid) == "1"  # type: ignore[misc]

    taken = await worker.take(tid, "", "w1", 30_000, then=[UserMessage(text="c", by=ANN)])
    assert taken is not None and taken.appended and taken.lease.delivered == 1
    state = await worker.append(taken.state, [UserMessage(text="d", by=ANN)], enqueue=False)
    assert await redis.hget(cursors, tid) == "1"  # type: ignore[misc]
    again = await ThreadLog(redis, SystemClock()).take(tid, "", "w2", 30_000)
    assert again is None  # w1 holds it

    async def let_go(after: ThreadState, events: object) -> Lease:
        return taken.lease

    await worker.append(state, [UserMessage(text="e", by=ANN)], enqueue=False, release_if=let_go)
    assert not taken.lease.held and taken.lease.delivered == 5
    assert await redis.hget(cursors, tid) is None  # type: ignore[misc]
    last = await worker.take(tid, "", "w1", 30_000)
    assert last is not None and last.lease.delivered == 5


async def test_a_process_keeps_its_latest_threads_up_to_a_number_of_events(redis: Redis) -> None:
    # Memory goes with events: one long conversation must not count as one short thread.
    log = ThreadLog(redis, SystemClock(), cache_events=8)
    said = [UserMessage(text=str(i), by=ANN) for i in range(4)]
    short, other, long = ids.new_thread_id(), ids.new_thread_id(), ids.new_thread_id()
    await log.append(ThreadState(id=short), said[:2])
    await log.append(ThreadState(id=other), said[:3])
    assert log.cached(short) and log.cached(other)

    state = await log.append(ThreadState(id=long), said)
    assert log.cached(short) is None  # 2 + 3 + 4 > 8: the least recently used goes
    assert log.cached(other) and log.cached(long)
    await log.append(state, said)  # 8 events in one thread now: it stays, the other goes
    assert log.cached(other) is None and log.cached(long) is not None
    assert [e.text for e in await log.events(short) if isinstance(e, UserMessage)] == ["0", "1"]

    alone = ThreadLog(redis, SystemClock(), cache_events=1)  # still holds the thread in hand
    assert (await alone.load(long)).version == 8 and alone.cached(long) is not None

    # A thread that leaves the cache (archived, here) frees its events for the others.
    log = ThreadLog(redis, SystemClock(), cache_events=8)
    state = await log.load(long)
    assert await log.forget(state, await log.meta(long), []) and log.cached(long) is None
    third = await log.append(ThreadState(id=ids.new_thread_id()), said[:3])
    assert (await log.load(short)).version + (await log.load(other)).version == 5
    assert log.cached(short) and log.cached(other) and log.cached(third.id)  # 8 events


async def test_a_read_after_redis_lost_writes_gives_what_redis_has(redis: Redis) -> None:
    # Redis restarted within its fsync window (or failed over to a replica behind) while
    # this process kept running: its cached copy must not outlive what Redis lost.
    web, other = ThreadLog(redis, SystemClock()), ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    one = await web.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    await web.append(one, [UserMessage(text="b", by=ANN)])
    await redis.rpop(keys.log(tid))  # type: ignore[misc]
    assert (await web.load(tid)).version == 1
    assert [e.text for e in await web.events(tid) if isinstance(e, UserMessage)] == ["a"]

    # Lost, then written again by another process up to the length this one had cached.
    await web.append(await web.load(tid), [UserMessage(text="b", by=ANN)])
    await redis.rpop(keys.log(tid))  # type: ignore[misc]
    await other.append(await other.load(tid), [UserMessage(text="c", by=ANN)])
    assert [e.text for e in await web.events(tid) if isinstance(e, UserMessage)] == ["a", "c"]
    # And it appends after what Redis has, chained to it.
    after = await web.append(await web.load(tid), [UserMessage(text="d", by=ANN)])
    assert after.version == 3
    assert [e.text for e in await other.events(tid) if isinstance(e, UserMessage)] == [
        "a",
        "c",
        "d",
    ]


async def test_an_append_on_a_copy_of_events_redis_lost_and_another_process_replaced_is_refused(
    redis: Redis,
) -> None:
    # A worker still holding its lease appends without reading first: Redis lost its last
    # event, and another process appended one of its own in its place.
    worker, web = ThreadLog(redis, SystemClock()), ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    one = await worker.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    two = await worker.append(one, [UserMessage(text="b", by=ANN)])
    await redis.rpop(keys.log(tid))  # type: ignore[misc]
    await web.append(await web.load(tid), [UserMessage(text="c", by=ANN)])
    assert two.version == (await web.load(tid)).version == 2

    with pytest.raises(VersionConflict):
        await worker.append(two, [UserMessage(text="d", by=ANN)])
    assert worker.cached(tid) is None  # its copy is dropped: the retry reads what Redis has
    await worker.append(await worker.load(tid), [UserMessage(text="d", by=ANN)])
    texts = [e.text for e in await web.events(tid) if isinstance(e, UserMessage)]
    assert texts == ["a", "c", "d"]
    assert verify_chain(await web.stored(tid), tid) == []


async def test_a_take_after_redis_lost_writes_gives_what_redis_has(redis: Redis) -> None:
    worker = ThreadLog(redis, SystemClock())
    tid = ids.new_thread_id()
    one = await worker.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    await worker.append(one, [UserMessage(text="b", by=ANN)])
    await redis.rpop(keys.log(tid))  # type: ignore[misc]
    taken = await worker.take(tid, "", "w1", 30_000)
    assert taken is not None and taken.state.version == 1
    # Its lease lets go at the version Redis has, instead of failing to forever.
    assert await worker.release(taken.lease, taken.state.version, None)
