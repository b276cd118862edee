"""A local Slack Web API: records every call the SDK makes and answers like Slack.

Usage::

    async with SlackAPI(users=[SlackUser("U0BOB0001", "bob", "bob@example.com")]) as api:
        settings = test_settings(slack_bot_token=api.bot_token, slack_api_url=api.url, ...)
        ...
        (post,) = api.calls_to("chat.postMessage")
        assert post.params["thread_ts"] == "1718000000.000100"

It serves ``POST``/``GET /api/<method>`` with form or JSON bodies and a bearer
token, keeps the messages it was asked to post and update, answers ``429``
with ``Retry-After`` when told to, refuses posts in a channel with a chosen
error, holds a method's calls unanswered while it is ``hold``-ed (a slow
Slack), records what is posted to a slash command's ``response_url``
(``/commands/...``), and speaks Socket Mode:
``apps.connections.open`` hands out a websocket on which ``push`` sends
envelopes and acknowledgements are recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER = "U0BOT0001"
BOT_ID = "B0BOT0001"
TEAM = "T0TEAM0001"
WAIT = 5.0
"""Seconds to wait for a Socket Mode client to connect or acknowledge."""


@dataclass(frozen=True)
class SlackUser:
    id: str
    name: str
    email: str | None = None
    real_name: str | None = None


@dataclass(frozen=True)
class Call:
    """One Web API call: the method, its parameters (JSON values decoded) and the token."""

    method: str
    params: dict[str, Any]
    token: str


@dataclass
class _Failure:
    status: int
    retry_after: str
    times: int


@dataclass
class SlackAPI:
    """The stand-in server; start it with ``async with`` (or ``start``/``stop``)."""

    users: Iterable[SlackUser] = ()
    groups: dict[str, list[str]] = field(default_factory=dict)
    bot_token: str = "xoxb-test-token"
    app_token: str = "xapp-test-token"
    calls: list[Call] = field(default_factory=list)
    """Answered calls, in the order they were answered."""
    responses: list[dict[str, Any]] = field(default_factory=list)
    """What was posted to slash commands' ``response_url``."""
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Posted messages by (channel, ts), as last posted or updated."""
    originals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Posted messages by (channel, ts), as first posted."""
    acks: list[dict[str, Any]] = field(default_factory=list)
    """What Socket Mode clients sent back (envelope acknowledgements)."""
    refusing: dict[str, str] = field(default_factory=dict)
    """Channel → the error ``chat.postMessage`` answers there (HTTP 200, as Slack does):
    ``not_in_channel``, ``is_archived``, ``invalid_auth``, ``internal_error``, …"""
    homes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each user's App Home view, as last published."""
    statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    """Assistant thread statuses by (channel, thread_ts), as last set."""
    assistant_threads: set[tuple[str, str]] = field(default_factory=set)
    """(channel, thread_ts) of assistant threads: setStatus elsewhere is refused."""

    def __post_init__(self) -> None:
        self._users = {u.id: u for u in self.users}
        self._failures: dict[str, _Failure] = {}
        self._ts = itertools.count(1)
        self._views = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        self._connected = asyncio.Event()
        self._acked = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._gates: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._recorded = asyncio.Condition()
        self.base = ""

    @property
    def url(self) -> str:
        """The Web API base URL (``SLACK_API_URL``)."""
        assert self.base, "start the stand-in first"
        return f"{self.base}/api/"

    def add_user(self, user: SlackUser) -> None:
        self._users[user.id] = user

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def hold(self, method: str) -> None:
        """Keep calls of ``method`` waiting (unanswered, unrecorded) until ``release``."""
        self._gates.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        """Answer the held calls of ``method``, and the next ones at once."""
        gate = self._gates.pop(method, None)
        if gate is not None:
            gate.set()

    def waiting(self, method: str) -> int:
        """How many calls of ``method`` are held right now."""
        return self._waiting.get(method, 0)

    async def called(self, method: str, n: int = 1, timeout: float = WAIT) -> list[Call]:  # noqa: ASYNC109
        """Wait until ``method`` was answered at least ``n`` times; its calls."""
        async with asyncio.timeout(timeout), self._recorded:
            await self._recorded.wait_for(lambda: len(self.calls_to(method)) >= n)
        return self.calls_to(method)

    def fail_next(
        self, method: str, *, status: int = 429, retry_after: str = "0", times: int = 1
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` and ``Retry-After``."""
        self._failures[method] = _Failure(status, retry_after, times)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/commands/{path:.*}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def stop(self) -> None:
        for method in list(self._gates):
            self.release(method)
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SlackAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- Socket Mode --------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        async with asyncio.timeout(WAIT):
            await self._connected.wait()

    async def push(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Send an envelope to the connected client and wait for its acknowledgement."""
        await self.wait_connected()
        for ws in list(self._sockets):
            await ws.send_str(json.dumps(envelope))

        def acked() -> dict[str, Any] | None:
            return next(
                (a for a in self.acks if a.get("envelope_id") == envelope["envelope_id"]), None
            )

        async with asyncio.timeout(WAIT), self._acked:
            await self._acked.wait_for(acked)
        found = acked()
        assert found is not None
        return found

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        await ws.send_str(
            json.dumps(
                {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP0001"}}
            )
        )
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    async with self._acked:
                        self.acks.append(json.loads(msg.data))
                        self._acked.notify_all()
        finally:
            self._sockets.discard(ws)
        return ws

    # --- the Web API --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if (gate := self._gates.get(method)) is not None:
            self._waiting[method] = self._waiting.get(method, 0) + 1
            try:
                await gate.wait()
            finally:
                self._waiting[method] -= 1
        async with self._recorded:
            self.calls.append(Call(method, params, token))
            self._recorded.notify_all()
        failure = self._failures.get(method)
        if failure is not None and failure.times > 0:
            failure.times -= 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=failure.status,
                headers={"Retry-After": failure.retry_after},
            )
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        if answer is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        body: dict[str, Any] = answer(params)
        return web.json_response(body)

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append({**await request.json(), "path": request.match_info["path"]})
        return web.Response(text="ok")

    def _next_ts(self) -> str:
        return f"1718000{next(self._ts):03d}.000100"

    def _auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://acme.slack.com/",
            "team": "Acme",
            "user": "greenlight",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = str(p.get("channel"))
        if error := self.refusing.get(channel):
            return {"ok": False, "error": error}
        if refused := _refused_message(p):
            return refused
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts, **p}
        self.messages[(channel, ts)] = self.originals[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        key = (str(p.get("channel")), str(p.get("ts")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        if refused := _refused_message(p):
            return refused
        self.messages[key] = {**self.messages[key], **p}
        return {"ok": True, "channel": key[0], "ts": key[1], "text": p.get("text")}

    def _chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self._next_ts()}

    def _chat_getPermalink(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(p.get("channel")), str(p.get("message_ts"))
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://acme.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        view = dict(p.get("view") or {})
        if problems := _view_problems(view):
            return {"ok": False, "error": "invalid_arguments", "response_metadata": problems}
        return {
            "ok": True,
            "view": {
                **view,
                "id": f"V0VIEW{next(self._views):04d}",
                "team_id": TEAM,
                "state": {"values": {}},
            },
        }

    def _views_publish(self, p: dict[str, Any]) -> dict[str, Any]:
        view = dict(p.get("view") or {})
        if view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        if problems := _view_problems(view):
            return {"ok": False, "error": "invalid_arguments", "response_metadata": problems}
        user = str(p.get("user_id"))
        if user not in self._users:
            return {"ok": False, "error": "user_not_found"}
        self.homes[user] = view
        return {"ok": True, "view": {**view, "id": f"V0HOME{next(self._views):04d}"}}

    def _assistant_threads_setStatus(self, p: dict[str, Any]) -> dict[str, Any]:
        key = (str(p.get("channel_id")), str(p.get("thread_ts")))
        if key not in self.assistant_threads:
            return {"ok": False, "error": "not_allowed_token_type"}
        self.statuses[key] = str(p.get("status") or "")
        return {"ok": True}

    def _chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        key = (str(p.get("channel")), str(p.get("ts")))
        if self.messages.pop(key, None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _views_update(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "view": {**dict(p.get("view") or {}), "id": p.get("view_id")}}

    def _users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(p.get("user")))
        return (
            {"ok": True, "user": _user(user)} if user else {"ok": False, "error": "user_not_found"}
        )

    def _users_lookupByEmail(self, p: dict[str, Any]) -> dict[str, Any]:
        email = str(p.get("email") or "").lower()
        user = next((u for u in self._users.values() if (u.email or "").lower() == email), None)
        return (
            {"ok": True, "user": _user(user)} if user else {"ok": False, "error": "users_not_found"}
        )

    def _usergroups_users_list(self, p: dict[str, Any]) -> dict[str, Any]:
        group = str(p.get("usergroup"))
        if group not in self.groups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.groups[group]}

    def _apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base.replace("http://", "ws://") + "/socket"}


# Slack's Block Kit limits, as its API enforces them (characters).
_TEXT_MAX = {"header": 150, "section": 3000, "context": 3000}


def _refused_message(p: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's answer to a message beyond its limits, or None when it is within them."""
    blocks = p.get("blocks") or []
    problems = _block_problems(blocks, max_blocks=50)
    if len(str(p.get("text") or "")) > 40_000:
        problems.append("text is longer than 40000")
    if problems:
        return {"ok": False, "error": "invalid_blocks", "errors": problems}
    return None


def _view_problems(view: dict[str, Any]) -> dict[str, list[str]] | None:
    problems = _block_problems(view.get("blocks") or [], max_blocks=100)
    if len(str((view.get("title") or {}).get("text") or "")) > 24:
        problems.append("title is longer than 24")
    if len(str(view.get("private_metadata") or "")) > 3000:
        problems.append("private_metadata is longer than 3000")
    return {"messages": problems} if problems else None


def _block_problems(blocks: list[dict[str, Any]], *, max_blocks: int) -> list[str]:
    problems = [f"more than {max_blocks} blocks"] if len(blocks) > max_blocks else []
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    if len(block_ids) != len(set(block_ids)):
        problems.append("a block_id is used twice")
    for i, block in enumerate(blocks):
        kind = str(block.get("type"))
        texts = [block.get("text") or {}]
        if kind == "context":
            texts += block.get("elements") or []
        for text in texts:
            if len(str(text.get("text") or "")) > _TEXT_MAX.get(kind, 3000):
                problems.append(f"blocks[{i}].text is too long")
        fields = block.get("fields") or []
        if len(fields) > 10 or any(len(str(f.get("text"))) > 2000 for f in fields):
            problems.append(f"blocks[{i}].fields are too many or too long")
        for element in block.get("elements") or [] if kind == "actions" else []:
            if len(str(element.get("value") or "")) > 2000:
                problems.append(f"blocks[{i}] has a button value longer than 2000")
            if len(str((element.get("text") or {}).get("text") or "")) > 75:
                problems.append(f"blocks[{i}] has a button text longer than 75")
        element = block.get("element") or {}
        if len(str(element.get("initial_value") or "")) > 3000:
            problems.append(f"blocks[{i}].element.initial_value is longer than 3000")
    return problems


def _user(u: SlackUser) -> dict[str, Any]:
    profile: dict[str, Any] = {"real_name": u.real_name or u.name.title(), "display_name": u.name}
    if u.email:
        profile["email"] = u.email
    return {
        "id": u.id,
        "team_id": TEAM,
        "name": u.name,
        "real_name": profile["real_name"],
        "is_bot": False,
        "deleted": False,
        "profile": profile,
    }


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.can_read_body:
        params.update(dict(await request.post()))
    for name in ("blocks", "view", "attachments"):
        if isinstance(params.get(name), str):
            params[name] = json.loads(params[name])
    return params
