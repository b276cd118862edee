"""An MCP server for agents that run elsewhere: approvals and questions as MCP tools.

The tools are a thin layer over the approvals API (``bot.web.approvals``): each one
calls ``POST /approvals`` or ``POST /questions`` and long-polls ``GET .../{id}?wait=``
over an HTTP client, so the checks, scopes and guarantees are the REST API's own. Two
places serve them:

- ``POST /mcp`` in the app (streamable HTTP, stateless, JSON responses): the tools call
  the same app in process, with the caller's own bearer token (agent or admin scope).
  Each client session is named at ``initialize`` (``Mcp-Session-Id``), kept nowhere.
- ``greenlight mcp`` (stdio): the tools call a server's REST API at a URL with a token.

A tool waits at most ``wait`` seconds (50 by default: under MCP clients' usual tool
timeouts); a request still open then comes back with ``status: open`` and a ``next``
saying to call ``wait_for_request`` with its id, so a long wait loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import CallToolResult
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from bot.domain.errors import TooLargeToApproveError
from bot.domain.validate import check_approvable
from bot.web import claude_code
from bot.web.mcp_tasks import Tasks
from bot.web.scopes import Scoped, scope

MCP_WAIT = 50.0
"""The longest a tool waits for people, in seconds, before answering "still pending"."""
POLL_MAX = 60.0
"""The server's longest long-poll (``bot.web.approvals.MAX_WAIT``)."""

SESSION_HEADER = "mcp-session-id"
"""The streamable-HTTP header naming the MCP session a request belongs to."""

Kind = Literal["approvals", "questions"]
_DEFERRED: ContextVar[bool] = ContextVar("mcp_deferred", default=False)
"""Set while a tool call becomes a task: the tool answers at once, the task does the waiting."""


class Api:
    """The approvals API, through an HTTP client that carries the caller's token."""

    def __init__(
        self,
        client: Callable[[], httpx.AsyncClient],
        wait: Callable[[], float],
        session: str | None = None,
    ) -> None:
        """Args:
        session: the one MCP session every call comes from (over stdio a process serves
            one client); None: each call says its own, by its ``Mcp-Session-Id`` header.
        """
        self._client = client
        self._wait = wait
        self._session = session

    def session_of(self, ctx: Context[Any, Any]) -> str | None:
        """The MCP session a tool call comes from; None: it cannot be told (an HTTP client
        that does not send the session id it was given, or a protocol without sessions)."""
        if self._session is not None:
            return self._session
        headers = ctx.headers
        return headers.get(SESSION_HEADER) if headers is not None else None

    @property
    def wait(self) -> float:
        """How long a tool waits for people before answering that the request is open."""
        return 0.0 if _DEFERRED.get() else self._wait()

    @asynccontextmanager
    async def deferred(self) -> AsyncIterator[None]:
        """Within: the tools ask and answer at once, without waiting for people."""
        token = _DEFERRED.set(True)
        try:
            yield
        finally:
            _DEFERRED.reset(token)

    async def create(self, kind: Kind, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        async with self._client() as client:
            r = await client.post(f"/{kind}", json=body, headers=headers)
        return _json(r)

    async def get(self, kind: Kind, request_id: str, wait: float) -> dict[str, Any]:
        """The request once it is closed, or as it stands after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        async with self._client() as client:
            while True:
                left = max(0.0, min(POLL_MAX, deadline - time.monotonic()))
                r = await client.get(
                    f"/{kind}/{request_id}", params={"wait": f"{left:.3f}"}, timeout=left + 30
                )
                out = _json(r)
                if out["status"] != "open" or deadline - time.monotonic() <= 0:
                    return out

    async def find(self, request_id: str, wait: float) -> tuple[Kind, dict[str, Any]]:
        """An approval or a question, whichever ``request_id`` is."""
        try:
            return "approvals", await self.get("approvals", request_id, wait)
        except _NotFound:
            return "questions", await self.get("questions", request_id, wait)

    async def cancel(self, request_id: str) -> None:
        """Withdraw an open approval or question, whichever ``request_id`` is."""
        async with self._client() as client:
            for kind in ("approvals", "questions"):
                r = await client.post(f"/{kind}/{request_id}/cancel")
                if r.status_code != 404:
                    break
        _json(r)


class _NotFound(ToolError):
    pass


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = r.json()
    except ValueError:
        body = {"detail": r.text}
    if r.status_code >= 400:
        detail = body.get("detail", r.text) if isinstance(body, dict) else r.text
        error = _NotFound if r.status_code == 404 else ToolError
        raise error(f"greenlight refused ({r.status_code}): {detail}")
    assert isinstance(body, dict)
    return body


def pending(kind: Kind, out: dict[str, Any]) -> dict[str, Any]:
    """What a tool answers: the request, and while it is open what to do next."""
    if out["status"] == "open":
        what = "approval" if kind == "approvals" else "question"
        out = {
            **out,
            "next": f"still pending, call wait_for_request with {out['id']} "
            f"to keep waiting for the {what}",
        }
    return out


def build_server(api: Api) -> MCPServer[Any]:
    """The MCP server whose tools call ``api``; with MCP Tasks (``bot.web.mcp_tasks``)."""

    async def look(request_id: str) -> CallToolResult:
        async with api.deferred():
            result = await server.call_tool("wait_for_request", {"request_id": request_id})
        assert isinstance(result, CallToolResult)
        return result

    server: MCPServer[Any] = MCPServer(
        "greenlight",
        instructions=(
            "Ask people before acting: request_approval for an action, ask_human for an "
            "answer. If a result says status 'open', call wait_for_request with its id."
        ),
        extensions=[Tasks(look, api.cancel, api.deferred)],
    )

    @server.tool()
    async def request_approval(
        tool: str,
        summary: str,
        *,
        arguments: dict[str, Any] | None = None,
        context: str | None = None,
        policy: str | None = None,
        arguments_schema: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Ask people to approve an action before taking it, and wait for their decision.

        Act only when ``decision`` is ``approve``, and then with the returned ``arguments``
        (an approver may have edited them). ``policy`` names one of the server's
        approval policies (default: ``default``). While ``status`` is ``open`` call
        ``wait_for_request`` with the ``id``.
        """
        body: dict[str, Any] = {"tool": tool, "summary": summary, "arguments": arguments or {}}
        extra = {"context": context, "policy": policy, "arguments_schema": arguments_schema}
        body.update({k: v for k, v in extra.items() if v is not None})
        out = await api.create("approvals", body, idempotency_key)
        if out["status"] == "open":
            out = await api.get("approvals", out["id"], api.wait)
        return pending("approvals", out)

    @server.tool()
    async def ask_human(
        question: str,
        *,
        context: str | None = None,
        choices: list[str] | None = None,
        answer_schema: dict[str, Any] | None = None,
        yes_no: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Ask people a question and wait for the answer: free text, yes/no, one of
        ``choices``, or JSON matching ``answer_schema``. The answer is ``answer`` (as
        given) and ``value`` (true/false for yes/no, the parsed JSON of a typed answer).
        While ``status`` is ``open`` call ``wait_for_request`` with the ``id``."""
        fmt = "choices" if choices else "yes_no" if yes_no else "free_text"
        body: dict[str, Any] = {"question": question, "format": fmt}
        extra = {"context": context, "choices": choices, "answer_schema": answer_schema}
        body.update({k: v for k, v in extra.items() if v})
        out = await api.create("questions", body, idempotency_key)
        if out["status"] == "open":
            out = await api.get("questions", out["id"], api.wait)
        return pending("questions", out)

    @server.tool()
    async def wait_for_request(request_id: str) -> dict[str, Any]:
        """Keep waiting for an approval or question made earlier, by its ``id``."""
        kind, out = await api.find(request_id, api.wait)
        return pending(kind, out)

    @server.tool()
    async def permission_prompt(
        tool_name: str,
        input: dict[str, Any],
        tool_use_id: str | None = None,
        input_schema: dict[str, Any] | None = None,
        *,
        ctx: Context[Any, Any],
    ) -> str:
        """Claude Code's permission prompt (``claude --permission-prompt-tool
        mcp__greenlight__permission_prompt``): asks the approvers whether Claude may run
        ``tool_name`` with ``input``; answers ``{"behavior": "allow", "updatedInput": ...}``
        (the input as approved: approvers may edit the input of Claude Code's own tools,
        or of any tool whose ``input_schema`` is given) or ``{"behavior": "deny",
        "message": ...}``.

        The same tool and input asked again in the same MCP session while its request is
        open (Claude Code's retry after "still waiting", under a new ``tool_use_id``) waits
        on that request; another session's (sharing the token) is asked on its own. Once
        it is decided or expired, asking again asks people anew, so an approval never
        allows a later call. The same ``tool_use_id`` again gets the request it got, open
        or not."""
        try:
            check_approvable(input)
        except TooLargeToApproveError as exc:  # nobody could approve it: deny, saying why
            return json.dumps({"behavior": "deny", "message": f"not allowed: {exc.message}"})
        body = {
            "tool": tool_name,
            "arguments": input,
            "summary": f"Claude Code asks to run {tool_name}",
            "context": json.dumps(input, indent=2, default=str)[:20_000],
        }
        # A retry joins the open request of the same call in the same session only: another
        # session's call (another working directory) is another call, never allowed by
        # this one's approval. A session that cannot be told joins nothing.
        session = api.session_of(ctx)
        if session is not None:
            body["open_key"] = _permission_key(session, tool_name, input)
        key = _permission_key(tool_use_id, tool_name, input) if tool_use_id else None
        schema = claude_code.input_schema(tool_name, input_schema)
        if schema is not None:
            body["arguments_schema"] = schema
        out = await api.create("approvals", body, key)
        if out["status"] == "open":
            out = await api.get("approvals", out["id"], api.wait)
        return json.dumps(claude_code.permission_answer(out))

    return server


def _permission_key(*parts: Any) -> str:
    """A key of a permission prompt: of the call (session, tool and input), or of one tool
    use."""
    seed = json.dumps(parts, sort_keys=True, default=str)
    return "claude-permission-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


async def serve_http(server: MCPServer[Any], scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one streamable-HTTP request: stateless, so any web process answers any call.

    A session manager per request: in stateless mode it keeps nothing between requests,
    and the app runs without an ASGI lifespan to start a shared one in.
    """
    manager = StreamableHTTPSessionManager(
        app=server._lowlevel_server,  # the SDK's documented way: MCPServer.session_manager
        json_response=True,
        stateless=True,
    )
    async with manager.run():
        await manager.handle_request(scope, receive, send)


def serve_stdio(url: str, token: str, wait: float = MCP_WAIT) -> None:
    """``greenlight mcp``: the tools over stdio, calling the REST API at ``url``."""

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=POLL_MAX + 30,
        )

    # The process serves one client session, over its stdin and stdout.
    build_server(Api(client, lambda: wait, session=secrets.token_hex(16))).run("stdio")


# --- in the app ------------------------------------------------------------------------------

router = APIRouter(route_class=Scoped)
_AUTHORIZATION: ContextVar[str] = ContextVar("mcp_authorization")
"""The MCP request's own Authorization header: the tools call the API with it."""


def app_server(request: Request) -> MCPServer[Any]:
    """The app's MCP server, built on first use: its tools call the app in process."""
    app = request.app
    server: MCPServer[Any] | None = getattr(app.state, "mcp_server", None)
    if server is None:

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://greenlight",
                headers={"Authorization": _AUTHORIZATION.get()},
                timeout=POLL_MAX + 30,
            )

        server = build_server(Api(client, lambda: float(app.state.mcp_wait)))
        app.state.mcp_server = server
    return server


class _Delegate(Response):
    """A response that hands the request to an ASGI callable (the MCP transport).

    The transport is stateless, so it names no sessions; the answer to an ``initialize``
    names one (``Mcp-Session-Id``, fresh and random), which the client sends with every
    request after. Nothing is kept of it: it only tells one client session's calls from
    another's (``Api.session_of``).
    """

    def __init__(self, server: MCPServer[Any]) -> None:
        self.server = server
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()

        async def read() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def write(message: Message) -> None:
            starts = message["type"] == "http.response.start" and message["status"] == 200
            if starts and _initializes(bytes(body)):
                session = (SESSION_HEADER.encode(), secrets.token_hex(16).encode())
                message = {**message, "headers": [*message.get("headers", []), session]}
            await send(message)

        await serve_http(self.server, scope, read, write)


def _initializes(body: bytes) -> bool:
    """Whether an MCP request body is an ``initialize`` request (which starts a session)."""
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


@router.post(
    "/mcp",
    dependencies=[scope("agent", "admin")],
    include_in_schema=False,  # MCP's own JSON-RPC, described by the tools it lists
)
async def mcp_endpoint(request: Request) -> Response:
    """MCP over streamable HTTP: ``request_approval``, ``ask_human``, ``wait_for_request``
    and ``permission_prompt``, with an agent or admin token."""
    _AUTHORIZATION.set(request.headers["authorization"])
    return _Delegate(app_server(request))
