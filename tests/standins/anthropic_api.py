"""A local Anthropic Messages API: records what the SDK sends, answers what a test scripted.

Usage::

    async with AnthropicAPI() as api:
        api.push_tool_use([("deploy", {"service": "web"})])
        model = AnthropicModel(api_key="test", model="claude-test", base_url=api.url)
        ...
        assert api.requests[0].body["tools"][0]["name"] == "deploy"

It speaks plain HTTP/1.1 with keep-alive on ``asyncio.start_server``, bound to an
ephemeral port on 127.0.0.1, so starting and stopping it needs no waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# The SDK only honours a positive wait: "retry-after: 0" falls back to its 0.5 s backoff.
RETRY_NOW: Mapping[str, str] = {"retry-after-ms": "1"}
_NO_RETRY: Mapping[str, str] = {"x-should-retry": "false"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class _Answer:
    """A scripted answer; a body of None means never answer, so the client times out."""

    status: int
    body: dict[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


class AnthropicAPI:
    """An in-process HTTP server answering ``POST /v1/messages`` from a script.

    Answers are taken in order from the queue the ``push_*`` methods fill; with the queue
    empty, or on any other path, it answers an error the SDK does not retry.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._answers: deque[_Answer] = deque()
        self._server: asyncio.Server | None = None
        self._url = ""
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._ids = 0

    @property
    def url(self) -> str:
        """The base URL to give the SDK (``base_url`` or ``ANTHROPIC_BASE_URL``)."""
        assert self._url, "start the stand-in first"
        return self._url

    @property
    def pending(self) -> int:
        """How many scripted answers have not been served yet."""
        return len(self._answers)

    def push_tool_use(self, calls: Sequence[tuple[str, dict[str, Any]]], text: str = "") -> None:
        """Script a message whose content is optional text then one tool_use block per call."""
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [
            {"type": "tool_use", "id": self._next_id("toolu"), "name": name, "input": args}
            for name, args in calls
        ]
        self._answers.append(_Answer(200, {"content": content, "stop_reason": "tool_use"}))

    def push_text(self, text: str) -> None:
        """Script a message with only text, as if the model ignored ``tool_choice``."""
        content = [{"type": "text", "text": text}]
        self._answers.append(_Answer(200, {"content": content, "stop_reason": "end_turn"}))

    def push_error(
        self, status: int, *, headers: Mapping[str, str] = RETRY_NOW, message: str = "scripted"
    ) -> None:
        """Script an API error; by default it asks the SDK to retry after 1 ms."""
        error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
        self._answers.append(_Answer(status, {"type": "error", "error": error}, headers))

    def push_stall(self) -> None:
        """Script a request that is never answered, to exercise client timeouts."""
        self._answers.append(_Answer(200, None))

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            handlers = list(self._connections.values())
            for writer in list(self._connections):
                writer.close()
            # Python 3.11's wait_closed does not wait for the connection handlers.
            await asyncio.gather(*handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> AnthropicAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_standin_{self._ids:04d}"

    def _answer(self, request: RecordedRequest) -> _Answer:
        if (request.method, request.path) != ("POST", "/v1/messages"):
            error = {"type": "not_found_error", "message": f"no route {request.path}"}
            return _Answer(404, {"type": "error", "error": error}, _NO_RETRY)
        if not self._answers:
            error = {"type": "invalid_request_error", "message": "stand-in has no scripted answer"}
            return _Answer(400, {"type": "error", "error": error}, _NO_RETRY)
        answer = self._answers.popleft()
        if answer.status != 200 or answer.body is None:
            return answer
        message = {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", ""),
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
            **answer.body,
        }
        return _Answer(200, message, answer.headers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                start, *lines = head.rstrip("\r\n").split("\r\n")
                method, path, _ = start.split(" ", 2)
                headers = dict(_split_header(line) for line in lines)
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                request = RecordedRequest(method, path, headers, json.loads(raw) if raw else {})
                self.requests.append(request)
                answer = self._answer(request)
                if answer.body is None:
                    await reader.read()  # until the client gives up or the stand-in stops
                    return
                writer.write(_to_http(answer, self._next_id("req")))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            self._connections.pop(writer, None)
            writer.close()


def _split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _to_http(answer: _Answer, request_id: str) -> bytes:
    payload = json.dumps(answer.body).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(payload)),
        "request-id": request_id,
        **answer.headers,
    }
    reason = _REASONS.get(answer.status, "Error")
    head = f"HTTP/1.1 {answer.status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode("latin-1") + payload
