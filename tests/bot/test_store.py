"""The store's per-process cache of thread logs stays true to Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.domain.events import Actor, Origin, UserMessage
from bot.domain.reducer import ThreadState
from bot.runtime import build_runtime
from bot.storage import keys
from bot.storage.store import Store
from tests.doubles import Ledger, ScriptedModel, make_agent, turns

ANN = Actor(channel="api", id="ann")


async def test_a_log_shortened_by_redis_is_reread_not_retried_forever(redis: Redis) -> None:
    rt = build_runtime(redis, {"bank": make_agent(Ledger())}, ScriptedModel(turns()))
    got = await rt.inbox.message(agent="bank", text="one", by=ANN, origin=Origin(channel="api"))
    tid = got.thread.id
    state = await rt.inbox.say(tid, "two", ANN)
    assert state.thread.version == 3

    # Redis restarted within its fsync window and lost the last write.
    await redis.rpop(keys.events(tid))  # type: ignore[misc]

    again = await rt.inbox.say(tid, "two, again", ANN)
    assert again.thread.version == 3
    texts = [e.text for e in await Store(redis).events(tid) if isinstance(e, UserMessage)]
    assert texts == ["one", "two, again"]


async def test_two_stores_see_each_others_appends(redis: Redis) -> None:
    web, worker = Store(redis), Store(redis)
    tid = keys.new_thread_id()
    first = await web.append(ThreadState(id=tid), [UserMessage(text="a", by=ANN)])
    assert (await worker.load(tid)).version == 1
    await web.append(first, [UserMessage(text="b", by=ANN)])
    assert (await worker.load(tid)).version == 2
    assert [e.text for e in await worker.events(tid) if isinstance(e, UserMessage)] == ["a", "b"]
