"""A lean HTTP/1.1 client for the benchmarks' drivers: keep-alive connections, JSON bodies.

The driver of ``bench.web_workers`` shares this machine's two cores with the
processes it measures, so what it spends per request is taken from them.
aiohttp spent about 120 µs of CPU per request here (its request and response
objects, timers, URL handling); this client writes each request in one call and
parses the answer with httptools (uvicorn's C parser), about 30 µs. The server
sees an ordinary request: the headers a client library sends, over connections
kept alive, one request at a time on each.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, cast

import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request written, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"the server closed the connection: {exc}"))

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((self.parser.get_status_code(), b"".join(self.body)))

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.body = []
        self.transport.write(request)
        return await self.answer


class HttpClient:
    """Requests to one server, each on a connection of its own, connections kept alive.

    Args:
        base: ``http://host:port``.
        headers: sent with every request (``Authorization``), besides ``Host``,
            ``User-Agent``, ``Accept`` and, with a body, its type and length.
    """

    def __init__(self, base: str, headers: Mapping[str, str] | None = None) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        sent = {
            "Host": f"{host}:{self.port}",
            "User-Agent": "greenlight-bench",
            "Accept": "*/*",
            **(headers or {}),
        }
        self._head = "".join(f"{k}: {v}\r\n" for k, v in sent.items())
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the answer's status and body."""
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n{self._head}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        return await self._send(head.encode() + data)

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        conn = await self._connection()
        try:
            answer = await conn.exchange(request)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        self._idle.append(conn)
        return answer

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:  # the server closes connections idle for a while
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self._all.append(conn)
        return conn

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
