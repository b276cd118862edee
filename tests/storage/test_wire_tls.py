"""Redis over TLS (``rediss://``): the shared connection's bytes go through a TLS transport.

Managed Redis services speak TLS. The embedded server does not, so a TLS front
(``TlsFront``: a real TLS server, certificates from ``trustme``) relays each
connection to it. Each scenario runs on asyncio's own loop and on uvloop, the
loop ``greenlight serve`` runs on: the wire takes the transport over from
redis-py, and each loop implements TLS transports its own way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from redis.asyncio import Redis

from bot.domain.clock import SystemClock
from bot.storage import keys
from bot.storage.connection import StorageFailure, connect
from bot.storage.embedded import EmbeddedRedis
from bot.storage.queue import Queue
from bot.storage.script import Batcher, Script
from bot.storage.wire import Wire

PUSH = Script("return redis.call('RPUSH', K.list, A.item)", keys=["list"], args=["item"])

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


class TlsFront:
    """A TLS server in front of a plain Redis: each connection relayed both ways."""

    def __init__(self, backend: tuple[str, int], context: ssl.SSLContext) -> None:
        self._backend = backend
        self._context = context
        self._clients: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> TlsFront:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.drop()
        self._server.close()

    def drop(self) -> None:
        """Cut every client connection, as a failing network or a failover does."""
        for client in self._clients:
            if not client.transport.is_closing():  # (aborting a closed one fails on 3.11.2)
                client.transport.abort()
        self._clients.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.append(writer)
        up_reader, up_writer = await asyncio.open_connection(*self._backend)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


Runner = Callable[["Scenario"], None]
Scenario = Callable[[Redis, "TlsFront"], Awaitable[None]]


@pytest.fixture(params=sorted(LOOPS))
def over_tls(request: pytest.FixtureRequest, redis_server: EmbeddedRedis, tmp_path: Path) -> Runner:
    """Runs a scenario on a fresh loop (each of ``LOOPS``) with a client connected over TLS,
    through a ``TlsFront`` to the test server; closes the client after it."""
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_side)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            async with TlsFront((host, int(port)), server_side) as front:
                redis = await connect(f"rediss://127.0.0.1:{front.port}/0?ssl_ca_certs={ca_file}")
                assert isinstance(redis, Redis)
                try:
                    await redis.flushall()
                    await scenario(redis, front)
                finally:
                    await redis.aclose()

        LOOPS[request.param](main())

    return run


def test_script_calls_over_tls_run_in_the_order_sent(over_tls: Runner) -> None:
    async def scenario(redis: Redis, _front: TlsFront) -> None:
        push = PUSH.bind(redis, Batcher.for_client(redis))
        lengths = await asyncio.gather(*(push({"list": "tls-l"}, {"item": i}) for i in range(50)))
        assert lengths == list(range(1, 51))
        assert await redis.lrange("tls-l", 0, -1) == [str(i) for i in range(50)]

    over_tls(scenario)


def test_a_worker_reads_its_queue_over_tls(over_tls: Runner) -> None:
    async def scenario(redis: Redis, _front: TlsFront) -> None:
        queue = Queue(redis, "tls-worker", SystemClock())
        await queue.ensure_groups()
        reading = asyncio.create_task(queue.read(count=10, block_ms=5000))
        await redis.xadd(keys.queue(0), {"t": "th_tls"})
        (entry,) = await asyncio.wait_for(reading, timeout=10)
        assert entry.thread_id == "th_tls"

    over_tls(scenario)


def test_a_dropped_tls_connection_fails_the_call_in_flight_and_the_next_call_reconnects(
    over_tls: Runner,
) -> None:
    async def scenario(redis: Redis, front: TlsFront) -> None:
        wire = Wire.for_client(redis)
        mine = await wire.send("CLIENT", "ID")
        waiting = wire.send("BLPOP", "tls-nothing", 0)  # in flight until the cut
        async with asyncio.timeout(10):
            while not any(
                int(c["id"]) == mine and c["cmd"] == "blpop" for c in await redis.client_list()
            ):
                pass  # polled: Redis says when the call is in

        front.drop()
        with pytest.raises(StorageFailure):
            await asyncio.wait_for(waiting, timeout=10)
        assert await wire.send("PING") == "PONG"
        assert await wire.send("CLIENT", "ID") != mine

    over_tls(scenario)
