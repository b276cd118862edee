"""A worker's queue reads, on a connection of their own."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bot.domain.clock import SystemClock
from bot.storage import keys
from bot.storage.connection import StorageFailure, connect
from bot.storage.embedded import EmbeddedRedis
from bot.storage.queue import Entry, Queue


async def _until_waiting(redis: Redis) -> str:
    """The id of the connection whose read waits in Redis, once it does."""
    async with asyncio.timeout(10):
        while True:
            waiting = [c["id"] for c in await redis.client_list() if c["cmd"] == "xreadgroup"]
            if waiting:
                return waiting[0]
            await asyncio.sleep(0.01)  # polled: Redis tells no one


async def test_a_waiting_read_gets_what_is_queued_meanwhile(redis: Redis) -> None:
    queue = Queue(redis, "w1", SystemClock())
    await queue.ensure_groups()
    reading = asyncio.ensure_future(queue.read(10, 5_000))
    await _until_waiting(redis)
    eid = await redis.xadd(keys.queue(3), {"t": "thr_a", "tp": "00-trace"})
    assert await asyncio.wait_for(reading, timeout=5) == [Entry(str(eid), "thr_a", "00-trace")]
    assert await queue.read(10, None) == []


async def test_a_read_whose_connection_is_killed_fails_and_the_next_reads(redis: Redis) -> None:
    queue = Queue(redis, "w1", SystemClock())
    await queue.ensure_groups()
    reading = asyncio.ensure_future(queue.read(10, 60_000))
    await redis.client_kill_filter(_id=await _until_waiting(redis))
    with pytest.raises(StorageFailure):
        await asyncio.wait_for(reading, timeout=10)

    eid = await redis.xadd(keys.queue(0), {"t": "thr_b"})
    assert await queue.read(10, 1_000) == [Entry(str(eid), "thr_b")]


async def test_a_client_speaking_resp2_reads_the_same(redis_server: EmbeddedRedis) -> None:
    redis = await connect(redis_server.url + "?protocol=2")
    try:
        assert isinstance(redis, Redis)
        queue = Queue(redis, "w1", SystemClock())
        await queue.ensure_groups()
        eid = await redis.xadd(keys.queue(5), {"t": "thr_c", "tp": "00-t"})
        assert await queue.read(10, None) == [Entry(str(eid), "thr_c", "00-t")]
    finally:
        await redis.aclose()


async def test_reclaim_goes_on_past_many_busy_entries_to_an_idle_one(redis: Redis) -> None:
    # XAUTOCLAIM looks at ten entries per one it may claim: with count=1, a sweep that
    # always began at 0-0 would look at the first ten busy ones and never further.
    queue = Queue(redis, "rescuer", SystemClock())
    await queue.ensure_groups()
    stream = keys.queue(0)
    ids = [str(await redis.xadd(stream, {"t": f"thr_{n}"})) for n in range(26)]
    await redis.xreadgroup(keys.GROUP, "dead", {stream: ">"}, count=26)
    # The first 25 are in hand (just delivered again), the last has been idle for 10 s.
    await redis.xclaim(stream, keys.GROUP, "busy", 0, ids[:25], idle=0)
    await redis.xclaim(stream, keys.GROUP, "dead", 0, ids[25:], idle=10_000)

    found: list[Entry] = []
    for _ in range(5):
        found += await queue.reclaim(5_000, count=1)
    assert found == [Entry(ids[25], "thr_25", deliveries=3)]  # read, claimed, reclaimed
    pending = await redis.xpending_range(stream, keys.GROUP, ids[25], ids[25], 1)
    assert pending[0]["consumer"] == "rescuer"
