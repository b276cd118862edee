"""A TCP proxy on loopback that loses one response after the server made it: a network fault.

Usage::

    async with LossyProxy(h.url, b"POST /approvals ") as proxy:
        ...  # give proxy.url to the client instead of h.url
        assert proxy.lost == 1 and proxy.matched == 2  # the first try and its retry

Bytes go through unchanged both ways. The first connection whose request begins with
``lose`` is forwarded to the server; once the server starts answering (so it has handled
the request) the connection is closed without a byte of the answer reaching the client,
as when a response is cut off by a timeout or a dropped link. Later connections pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit


class LossyProxy:
    """Forwards to the server at ``target``; loses the answer to the first request
    beginning with ``lose``."""

    def __init__(self, target: str, lose: bytes) -> None:
        parts = urlsplit(target)
        assert parts.hostname and parts.port, target
        self.host, self.port = parts.hostname, parts.port
        self.lose = lose
        self.matched = 0
        """Connections whose first request began with ``lose``."""
        self.lost = 0
        """Answers lost (at most one)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> LossyProxy:
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

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
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
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
