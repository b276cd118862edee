"""TCP proxies on loopback that fail the way a network does: a lost answer, an outage.

Usage::

    async with LossyProxy(h.url, b"POST /approvals ") as proxy:
        ...  # give proxy.url to the client instead of h.url
        assert proxy.lost == 1 and proxy.matched == 2  # the first try and its retry

    async with OutageProxy(h.url, b"GET /approvals/") as proxy:
        ...  # give proxy.url to the client instead of h.url
        proxy.restore()  # the outage is over: everything passes again

Bytes go through unchanged both ways until the fault. :class:`LossyProxy` forwards the
first connection whose request begins with ``lose`` to the server; once the server starts
answering (so it has handled the request) the connection is closed without a byte of the
answer reaching the client, as when a response is cut off by a timeout or a dropped link.
Later connections pass.

:class:`OutageProxy` passes until the client sends a request beginning with ``cut``: that
request never reaches the server, its connection is closed unanswered, and so is every
connection until :meth:`OutageProxy.restore` (the server is unreachable). The server itself
keeps running: what the client asked before the outage is still there after it.

Both share :class:`_Proxy`, which listens, tracks each connection's task and closes what a
connection opened; each says only how its connection forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import StreamReader, StreamWriter
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit


class _Proxy:
    """Listens on loopback and hands each connection to :meth:`_forward`, towards ``target``."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        assert parts.hostname and parts.port, target
        self.host, self.port = parts.hostname, parts.port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: StreamReader, writer: StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [writer]
        try:
            await self._forward(reader, writer, writers)
        finally:
            for w in writers:
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def _upstream(self, writers: list[StreamWriter]) -> tuple[StreamReader, StreamWriter]:
        """A connection to the server, closed with the client's when the connection ends."""
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        writers.append(up_writer)
        return up_reader, up_writer

    async def _forward(
        self, reader: StreamReader, writer: StreamWriter, writers: list[StreamWriter]
    ) -> None:
        """One connection, from ``reader``/``writer`` (the client's): the only part in which
        the proxies differ. What it opens goes through :meth:`_upstream`, to be closed."""
        raise NotImplementedError


class LossyProxy(_Proxy):
    """Forwards to the server at ``target``; loses the answer to the first request
    beginning with ``lose``."""

    def __init__(self, target: str, lose: bytes) -> None:
        super().__init__(target)
        self.lose = lose
        self.matched = 0
        """Connections whose first request began with ``lose``."""
        self.lost = 0
        """Answers lost (at most one)."""

    async def _forward(
        self, reader: StreamReader, writer: StreamWriter, writers: list[StreamWriter]
    ) -> None:
        up_reader, up_writer = await self._upstream(writers)
        first = await reader.read(65536)
        if not first:
            return
        lose = first.startswith(self.lose)
        if lose:
            self.matched += 1
        lose = lose and self.lost == 0
        up_writer.write(first)
        await up_writer.drain()
        sending = asyncio.create_task(_pipe(reader, up_writer))
        try:
            if lose:
                await up_reader.read(1)  # the server answers: it handled the request
                self.lost += 1
            else:
                await _pipe(up_reader, writer)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending


class OutageProxy(_Proxy):
    """Forwards to the server at ``target`` until a request begins with ``cut``."""

    def __init__(self, target: str, cut: bytes) -> None:
        super().__init__(target)
        self.cut: bytes | None = cut
        self.down = False
        self.refused = 0
        """Requests (or connections) closed unanswered during the outage."""

    def restore(self) -> None:
        """The outage is over, and does not start again."""
        self.down, self.cut = False, None

    async def _forward(
        self, reader: StreamReader, writer: StreamWriter, writers: list[StreamWriter]
    ) -> None:
        if self.down:
            self.refused += 1
            return
        try:
            up_reader, up_writer = await self._upstream(writers)
            answering = asyncio.create_task(_pipe(up_reader, writer))
            try:
                # The client sends a request only once the previous one was answered, so
                # each read begins a request (or continues its body).
                while data := await reader.read(65536):
                    if self.down or (self.cut is not None and data.startswith(self.cut)):
                        self.down = True
                        self.refused += 1
                        return
                    up_writer.write(data)
                    await up_writer.drain()
            finally:
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering
        except ConnectionError:
            pass


async def _pipe(reader: StreamReader, writer: StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
