"""A local HTTP receiver for webhook callbacks: records every request, can fail on purpose.

Usage::

    async with Receiver(fail_first=2) as receiver:
        ...  # give receiver.url as a callback_url
        await h.wait_for(lambda: receiver.delivered(1))
        body = receiver.requests[-1].json()

It speaks plain HTTP/1.1 on ``asyncio.start_server``, bound to an ephemeral port
of 127.0.0.1, and keeps the raw body of each request so a test can check its
signature byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request the receiver got; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    """What the receiver answered; 0 when it never did."""

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Answers 500 to the first ``fail_first`` requests (or to all with ``fail_always``), else 200.

    Args:
        fail_first: how many requests to fail before succeeding.
        fail_always: fail every request, for give-up tests.
        hang: after the failures, record requests but never answer them (a stuck peer).
    """

    def __init__(
        self, *, fail_first: int = 0, fail_always: bool = False, hang: bool = False
    ) -> None:
        self.fail_first = fail_first
        self.fail_always = fail_always
        self.hang = hang
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None
        self._url = ""
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        """The base URL; any path under it is accepted."""
        assert self._url, "start the receiver first"
        return self._url

    def ok(self) -> list[Received]:
        """The requests that were answered with success."""
        return [r for r in self.requests if r.status == 200]

    async def delivered(self, count: int) -> list[Received] | None:
        """The successful requests once there are ``count`` of them (a probe for ``wait_for``)."""
        got = self.ok()
        return got if len(got) >= count else None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._stopping.set()
            for writer in list(self._writers):
                writer.close()
            # Python 3.11's wait_closed does not wait for the connection handlers.
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _status(self) -> int:
        failing = self.fail_always or len(self.requests) < self.fail_first
        return 500 if failing else 0 if self.hang else 200

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                start, *lines = head.rstrip("\r\n").split("\r\n")
                method, path, _ = start.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self._status()
                self.requests.append(Received(method, path, headers, body, status))
                if status == 0:
                    await self._stopping.wait()
                    return
                writer.write(_answer(status))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()


def _answer(status: int) -> bytes:
    payload = b'{"ok": true}' if status == 200 else b'{"ok": false}'
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    return head.encode("latin-1") + payload
