"""The thread log's per-process cache stays true to Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.clock import SystemClock
from bot.domain.events import Actor, Origin, UserMessage
from bot.domain.reducer import ThreadState
from bot.runtime import build_runtime
from bot.storage import keys
from bot.storage.threadlog import ThreadLog
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
