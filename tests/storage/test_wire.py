"""Script calls on one Redis share one connection: in order, and through its failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from subprocess import DEVNULL

import pytest
import redis as blocking
from redis.asyncio import Redis

from bot.storage.connection import Client, StorageFailure, connect
from bot.storage.embedded import EmbeddedRedis, server_binary
from bot.storage.script import Batcher, Script
from bot.storage.wire import Wire

PUSH = Script("return redis.call('RPUSH', K.list, A.item)", keys=["list"], args=["item"])


def _wire(redis: Client) -> Wire:
    assert isinstance(redis, Redis)
    wire = Wire.for_client(redis)
    assert wire is not None
    return wire


async def test_calls_sent_together_run_in_the_order_sent(redis: Redis) -> None:
    push = PUSH.bind(redis, Batcher.for_client(redis))
    lengths = await asyncio.gather(*(push({"list": "l"}, {"item": i}) for i in range(50)))
    assert lengths == list(range(1, 51))
    assert await redis.lrange("l", 0, -1) == [str(i) for i in range(50)]


async def test_a_turn_that_sends_much_has_redis_start_before_it_ends_in_the_order_sent(
    redis: Redis, redis_server: EmbeddedRedis
) -> None:
    wire = _wire(redis)
    await wire.send("PING")  # connected
    filler = "x" * 1000
    lengths = [wire.send("RPUSH", "l", f"{i} {filler}") for i in range(40)]  # 40 KB, one turn

    # Still in that turn (a blocking client, polling, holds the event loop): the first
    # commands ran.
    with blocking.Redis.from_url(redis_server.url) as seen:
        deadline = time.monotonic() + 10
        while not seen.llen("l"):
            assert time.monotonic() < deadline, "nothing was written before the turn ended"
        assert seen.llen("l") < 40  # the rest leaves as the turn ends

    assert await asyncio.gather(*lengths) == list(range(1, 41))
    assert [item.split()[0] for item in await redis.lrange("l", 0, -1)] == [
        str(i) for i in range(40)
    ]


async def test_a_script_redis_forgot_is_loaded_and_each_refused_call_runs_once_in_order(
    redis: Redis,
) -> None:
    push = PUSH.bind(redis, Batcher.for_client(redis))
    await push({"list": "l"}, {"item": "first"})
    await redis.script_flush()  # as after a restart without the scripts

    await asyncio.gather(*(push({"list": "l"}, {"item": i}) for i in range(20)))
    assert await redis.lrange("l", 0, -1) == ["first", *map(str, range(20))]


async def test_an_error_answer_fails_only_its_own_call(redis: Redis) -> None:
    wire = _wire(redis)
    await redis.set("s", "text")
    bad, good = wire.send("INCR", "s"), wire.send("INCR", "n")
    with pytest.raises(StorageFailure, match="not an integer"):
        await bad
    assert await good == 1


async def test_a_killed_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(
    redis: Redis,
) -> None:
    wire = _wire(redis)
    mine = await wire.send("CLIENT", "ID")
    waiting = wire.send("BLPOP", "nothing-comes", 0)  # held in flight until the kill
    await redis.client_kill_filter(_id=mine)

    with pytest.raises(StorageFailure):
        await asyncio.wait_for(waiting, timeout=10)
    assert await wire.send("CLIENT", "ID") != mine
    assert await wire.send("PING") == "PONG"


async def test_calls_go_on_after_redis_restarts_and_fail_clearly_while_it_is_down(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        redis = await connect(server.url)
        push = PUSH.bind(redis, Batcher.for_client(redis))
        assert await push({"list": "l"}, {"item": "before"}) == 1

        server.stop(kill=True)
        with pytest.raises(StorageFailure):
            await push({"list": "l"}, {"item": "lost"})

        server.start()  # same port, same data; it has forgotten the script
        assert await push({"list": "l"}, {"item": "after"}) == 2
        assert await redis.lrange("l", 0, -1) == ["before", "after"]
        await redis.aclose()
    finally:
        server.stop()


async def test_closing_the_client_closes_its_wire(redis_server: EmbeddedRedis) -> None:
    redis = await connect(redis_server.url)
    wire = _wire(redis)
    mine = await wire.send("CLIENT", "ID")
    await redis.aclose()

    other = await connect(redis_server.url)
    try:
        ids = [c["id"] for c in await other.client_list()]
        assert str(mine) not in ids and mine not in ids
    finally:
        await other.aclose()


async def test_a_password_a_database_and_a_unix_socket_from_the_url_are_kept(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "redis.sock"
    args = ["--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)]
    server = await asyncio.create_subprocess_exec(server_binary(), *args, stdout=DEVNULL)
    try:
        async with asyncio.timeout(10):
            while True:
                if sock.exists():
                    break
                await asyncio.sleep(0.01)  # polled: the server tells no one
        admin = Redis(unix_socket_path=str(sock), decode_responses=True)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()

        redis = await connect(f"unix://:s3cret@{sock}?db=3&cluster=no")
        push = PUSH.bind(redis, Batcher.for_client(redis))
        lengths = await asyncio.gather(*(push({"list": "l"}, {"item": i}) for i in range(3)))
        assert lengths == [1, 2, 3]
        await redis.aclose()

        check = Redis(unix_socket_path=str(sock), password="s3cret", db=3, decode_responses=True)
        assert await check.lrange("l", 0, -1) == ["0", "1", "2"]
        assert await check.dbsize() == 1  # in database 3, not 0
        await check.aclose()
        zero = Redis(unix_socket_path=str(sock), password="s3cret", db=0)
        assert await zero.dbsize() == 0
        await zero.aclose()
    finally:
        server.kill()
        await server.wait()
