"""A TCP proxy on loopback that cuts the client off from the server: an outage.

Usage::

    async with OutageProxy(h.url, b"GET /approvals/") as proxy:
        ...  # give proxy.url to the client instead of h.url
        proxy.restore()  # the outage is over: everything passes again

Bytes go through unchanged both ways until the client sends a request beginning with
``cut``: that request never reaches the server, its connection is closed unanswered, and
so is every connection until :meth:`restore` (the server is unreachable). The server
itself keeps running: what the client asked before the outage is still there after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit


class OutageProxy:
    """Forwards to the server at ``target`` until a request begins with ``cut``."""

    def __init__(self, target: str, cut: bytes) -> None:
        parts = urlsplit(target)
        assert parts.hostname and parts.port, target
        self.host, self.port = parts.hostname, parts.port
        self.cut: bytes | None = cut
        self.down = False
        self.refused = 0
        """Requests (or connections) closed unanswered during the outage."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def restore(self) -> None:
        """The outage is over, and does not start again."""
        self.down, self.cut = False, None

    async def __aenter__(self) -> OutageProxy:
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
        writers = [writer]
        try:
            if self.down:
                self.refused += 1
                return
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
            writers.append(up_writer)
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
        finally:
            for w in writers:
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
