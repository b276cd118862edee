"""Scoped tokens over real HTTP: every route and every scope, and what each scope may not do.

Invariant 9: an agent's credentials create requests but never decide them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from starlette.routing import Route

from bot.domain.errors import ConfigError
from bot.domain.events import Actor, Decision
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.web.app import _check_scoped
from bot.web.scopes import Scoped, scope, scopes_of
from tests.harness import Harness
from tests.harness import test_settings as settings_with

GROUPS = {"deployers": ["bob"], "finance": ["bob"]}
Caller = str  # "admin", "agent", "approver" or "none"
CALLERS: tuple[Caller, ...] = ("admin", "agent", "approver", "none")
_names = itertools.count()


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url, settings=settings_with(approver_groups=GROUPS)) as it:
        yield it


class Tokens:
    """One client per scope: the admin API_TOKEN, an agent token, bob's approver token."""

    def __init__(self, h: Harness, made: dict[str, str]) -> None:
        self.h = h
        self.made = made
        self.clients = {
            "admin": h.api,
            "none": h.http,
            **{name: _client(h, made[name]) for name in ("agent", "approver")},
        }

    async def aclose(self) -> None:
        for name in ("agent", "approver"):
            await self.clients[name].aclose()


def _client(h: Harness, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=h.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


async def make_token(h: Harness, name: str, scope: str, identity: str | None = None) -> str:
    body = {"name": name, "scope": scope, **({"identity": identity} if identity else {})}
    r = await h.api.post("/tokens", json=body)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.fixture
async def t(h: Harness) -> AsyncIterator[Tokens]:
    made = {
        "agent": await make_token(h, "deploy-bot", "agent"),
        "approver": await make_token(h, "bob-phone", "approver", "bob"),
    }
    tokens = Tokens(h, made)
    yield tokens
    await tokens.aclose()


# --- what each probe targets: made fresh, by the agent, so every caller finds it the same ---


async def agent_thread(t: Tokens) -> str:
    r = await t.clients["agent"].post("/threads", json={"agent": "deploy", "text": "deploy api"})
    assert r.status_code == 201, r.text
    tid: str = r.json()["id"]
    return tid


async def agent_approval(t: Tokens) -> str:
    body = {
        "tool": "deploy",
        "arguments": {"v": "1"},
        "summary": "ship",
        "policy": {"approvers": ["bob"]},
    }
    r = await t.clients["agent"].post("/approvals", json=body)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


async def agent_question(t: Tokens) -> str:
    r = await t.clients["agent"].post(
        "/questions", json={"question": "which region?", "answerers": ["bob"]}
    )
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


async def revocable(t: Tokens) -> str:
    name = f"spare-{next(_names)}"
    await make_token(t.h, name, "agent")
    return name


Probe = Callable[[Tokens], Awaitable[tuple[str, dict[str, Any] | None]]]


def fixed(path: str, body: dict[str, Any] | None = None) -> Probe:
    async def probe(t: Tokens) -> tuple[str, dict[str, Any] | None]:
        return path, body

    return probe


def on(make: Callable[[Tokens], Awaitable[str]], path: str, body: Any = None) -> Probe:
    async def probe(t: Tokens) -> tuple[str, dict[str, Any] | None]:
        got = await make(t)
        payload = body(t) if callable(body) else body
        return path.format(got), payload

    return probe


def fresh_token_body(t: Tokens) -> dict[str, Any]:
    return {"name": f"new-{next(_names)}", "scope": "agent"}


def S(admin: int, agent: int, approver: int) -> dict[Caller, int]:
    return {"admin": admin, "agent": agent, "approver": approver, "none": 401}


# Every API route: how to call it, and the status each caller gets. A route missing
# here fails the test, so a new route must say who may call it.
TABLE: dict[tuple[str, str], tuple[Probe, dict[Caller, int]]] = {
    ("POST", "/threads"): (fixed("/threads", {"agent": "deploy", "text": "hi"}), S(201, 201, 403)),
    ("GET", "/threads"): (fixed("/threads"), S(200, 403, 403)),
    ("GET", "/threads/{thread_id}"): (on(agent_thread, "/threads/{}"), S(200, 200, 403)),
    ("POST", "/threads/{thread_id}/messages"): (
        on(agent_thread, "/threads/{}/messages", {"text": "and the worker"}),
        S(200, 200, 403),
    ),
    ("POST", "/threads/{thread_id}/pause"): (
        on(agent_thread, "/threads/{}/pause", {}),
        S(200, 403, 403),
    ),
    ("POST", "/threads/{thread_id}/resume"): (
        on(agent_thread, "/threads/{}/resume", {}),
        S(409, 403, 403),
    ),
    ("POST", "/threads/{thread_id}/cancel"): (
        on(agent_thread, "/threads/{}/cancel", {}),
        S(200, 403, 403),
    ),
    ("GET", "/requests"): (fixed("/requests"), S(200, 403, 200)),
    ("GET", "/requests/{request_id}"): (on(agent_approval, "/requests/{}"), S(200, 200, 200)),
    ("POST", "/requests/{request_id}/decision"): (
        on(agent_approval, "/requests/{}/decision", {"decision": "approve", "by": "bob"}),
        S(200, 403, 200),
    ),
    ("POST", "/requests/{request_id}/answer"): (
        on(agent_question, "/requests/{}/answer", {"text": "eu", "by": "bob"}),
        S(200, 403, 200),
    ),
    ("POST", "/approvals"): (
        fixed("/approvals", {"tool": "t", "summary": "s", "policy": {"approvers": ["bob"]}}),
        S(201, 201, 403),
    ),
    ("GET", "/approvals/{request_id}"): (on(agent_approval, "/approvals/{}"), S(200, 200, 200)),
    ("POST", "/questions"): (fixed("/questions", {"question": "why?"}), S(201, 201, 403)),
    ("GET", "/questions/{request_id}"): (on(agent_question, "/questions/{}"), S(200, 200, 200)),
    ("POST", "/approvals/{request_id}/cancel"): (
        on(agent_approval, "/approvals/{}/cancel"),
        S(200, 200, 403),
    ),
    ("POST", "/questions/{request_id}/cancel"): (
        on(agent_question, "/questions/{}/cancel"),
        S(200, 200, 403),
    ),
    ("GET", "/threads/{thread_id}/audit"): (
        on(agent_thread, "/threads/{}/audit"),
        S(200, 403, 403),
    ),
    ("GET", "/audit"): (fixed("/audit"), S(200, 403, 403)),
    ("GET", "/archive"): (fixed("/archive"), S(404, 403, 403)),  # 404: no archive configured
    ("GET", "/archive/{thread_id}"): (fixed("/archive/th_x"), S(404, 403, 403)),
    ("POST", "/tokens"): (on(revocable, "/tokens", fresh_token_body), S(201, 403, 403)),
    ("GET", "/tokens"): (fixed("/tokens"), S(200, 403, 403)),
    ("GET", "/tokens/me"): (fixed("/tokens/me"), S(200, 200, 200)),
    ("DELETE", "/tokens/{name}"): (on(revocable, "/tokens/{}"), S(204, 403, 403)),
    ("GET", "/metrics"): (fixed("/metrics"), S(200, 403, 403)),
    ("POST", "/mcp"): (
        fixed("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        S(200, 200, 403),
    ),
}
# Routes that take no token: health checks, the API's own description, and channels,
# which check their own signatures.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("POST", "/webhooks/{agent}"),
}


def routes_of(h: Harness) -> dict[tuple[str, str], tuple[str, ...] | None]:
    """Every (method, path) the app answers, with the scopes it declares (None: none)."""
    found: dict[tuple[str, str], tuple[str, ...] | None] = {}
    for route in _flat(h.app.routes):
        declared = scopes_of(route)
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD"}):
            found[method, route.path] = declared
    return found


def _flat(routes: list[Any]) -> list[Any]:
    """The routes, with included routers' routes in place of the routers (FastAPI 0.165
    keeps an included router as one entry whose ``effective_candidates`` are its routes)."""
    flat = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            flat.extend(_flat(route.effective_candidates()))
        elif isinstance(route, Route | APIRoute) or hasattr(route, "dependant"):
            flat.append(route)
    return flat


async def test_every_route_is_in_the_table_and_declares_the_scopes_the_table_expects(
    h: Harness,
) -> None:
    routes = routes_of(h)
    missing = sorted(r for r in routes if r not in TABLE and r not in PUBLIC)
    assert not missing, f"say who may call these routes in TABLE (or PUBLIC): {missing}"
    for route, declared in routes.items():
        if route in PUBLIC:
            assert declared is None, route
            continue
        allowed = {c for c, status in TABLE[route][1].items() if status not in (401, 403)}
        assert declared is not None and set(declared) == allowed, (route, declared, allowed)
    assert not set(TABLE) - set(routes), "TABLE names routes the app does not have"


@pytest.mark.parametrize("route", sorted(TABLE), ids=lambda r: f"{r[0]} {r[1]}")
async def test_each_scope_gets_the_status_the_table_says(
    h: Harness, t: Tokens, route: tuple[str, str]
) -> None:
    method, _ = route
    probe, expected = TABLE[route]
    got = {}
    for caller in CALLERS:
        path, body = await probe(t)
        r = await t.clients[caller].request(method, path, json=body)
        got[caller] = r.status_code
        if r.status_code in (401, 403):
            assert set(r.json()) >= {"error", "detail"}, r.text
    assert got == expected


async def snapshot(redis: Redis) -> dict[str, Any]:
    """Every key's value, but the tokens' last-use times (a refused use is still a use)."""
    found = {}
    async for key in redis.scan_iter():
        if key != keys.token_used():
            found[key] = await redis.dump(key)
    return found


async def test_an_agent_token_deciding_or_answering_is_refused_and_changes_nothing(
    h: Harness, t: Tokens
) -> None:
    rid, qid = await agent_approval(t), await agent_question(t)
    before = await snapshot(h.redis)
    agent = t.clients["agent"]
    for by in ("bob", "deploy-bot", None):
        body = {"decision": "approve", **({"by": by} if by else {})}
        r = await agent.post(f"/requests/{rid}/decision", json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden" and "needs approver or admin" in r.json()["detail"]
        r = await agent.post(f"/requests/{qid}/answer", json={"text": "eu", "by": by})
        assert r.status_code == 403
    assert await snapshot(h.redis) == before
    assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "open"


async def test_an_approver_decides_as_itself_and_never_as_someone_else(
    h: Harness, t: Tokens
) -> None:
    rid = await agent_approval(t)
    approver = t.clients["approver"]
    before = await snapshot(h.redis)
    r = await approver.post(f"/requests/{rid}/decision", json={"decision": "approve", "by": "ann"})
    assert r.status_code == 403
    assert "decides only as 'bob'" in r.json()["detail"]
    assert await snapshot(h.redis) == before

    r = await approver.post(f"/requests/{rid}/decision", json={"decision": "approve"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    decided = (await t.clients["agent"].get(f"/approvals/{rid}")).json()
    assert [v["by"]["id"] for v in decided["votes"]] == ["bob"]


async def test_an_approver_reads_only_what_it_may_decide_and_never_threads(
    h: Harness, t: Tokens
) -> None:
    mine = await agent_approval(t)
    body = {"tool": "t", "summary": "s", "policy": {"approvers": ["ann"]}}
    others = (await t.clients["agent"].post("/approvals", json=body)).json()["id"]
    approver = t.clients["approver"]
    listed = [r["id"] for r in (await approver.get("/requests")).json()["items"]]
    assert mine in listed and others not in listed
    hidden = await approver.get(f"/requests/{others}")
    assert hidden.status_code == 404
    # Word for word what an id that does not exist gets: nothing says it exists.
    unknown = others[:-1] + ("1" if others[-1] == "0" else "0")
    missing = (await approver.get(f"/requests/{unknown}")).json()
    assert hidden.json() == {k: str(v).replace(unknown, others) for k, v in missing.items()}
    assert (await approver.get(f"/approvals/{others}")).status_code == 404
    # Deciding it is refused as reading it is: its existence is not told either.
    r = await approver.post(f"/requests/{others}/decision", json={"decision": "approve"})
    assert r.status_code == 404 and r.json() == hidden.json(), r.text


async def test_an_approver_deciding_what_it_may_not_read_is_not_told_who_decided(
    h: Harness, t: Tokens
) -> None:
    agent, approver = t.clients["agent"], t.clients["approver"]
    body = {"tool": "t", "summary": "s", "policy": {"approvers": ["ann"]}}
    others = (await agent.post("/approvals", json=body)).json()["id"]
    asked = {"question": "which region?", "answerers": ["ann"]}
    question = (await agent.post("/questions", json=asked)).json()["id"]
    decided = {"decision": "approve", "by": "ann"}
    assert (await h.api.post(f"/requests/{others}/decision", json=decided)).status_code == 200
    answered = {"text": "eu", "by": "ann"}
    assert (await h.api.post(f"/requests/{question}/answer", json=answered)).status_code == 200
    before = await snapshot(h.redis)
    for rid, path, payload in (
        (others, "decision", {"decision": "reject", "reason": "no"}),
        (question, "answer", {"text": "us"}),
    ):
        hidden = await approver.get(f"/requests/{rid}")
        assert hidden.status_code == 404
        r = await approver.post(f"/requests/{rid}/{path}", json=payload)
        # Not a 409 naming ann and when: what GET says, as if there were no such request.
        assert r.status_code == 404 and r.json() == hidden.json(), r.text
        assert "ann" not in r.text
    assert await snapshot(h.redis) == before


async def test_an_approvers_idempotency_keys_are_its_own(h: Harness, t: Tokens) -> None:
    policy = {"approvers": ["bob", "ann"], "min_approvals": 2}
    body = {"tool": "t", "summary": "s", "policy": policy}
    rid = (await t.clients["agent"].post("/approvals", json=body)).json()["id"]
    url, key, vote = (
        f"/requests/{rid}/decision",
        {"Idempotency-Key": "k-1"},
        {"decision": "approve"},
    )
    bob = t.clients["approver"]
    async with (
        _client(h, await make_token(h, "ann-laptop", "approver", "ann")) as ann,
        _client(h, await make_token(h, "carol-phone", "approver", "carol")) as carol,
    ):
        first = await bob.post(url, json=vote, headers=key)
        assert first.status_code == 200 and first.json()["status"] == "open", first.text
        # Someone the policy does not name, replaying bob's key and body: refused, not
        # answered with the request as if it were their replay.
        before = await snapshot(h.redis)
        r = await carol.post(url, json=vote, headers=key)
        assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
        assert await snapshot(h.redis) == before
        # Another approver, the same key and body: a vote of its own, not bob's replayed.
        second = await ann.post(url, json=vote, headers=key)
        assert second.status_code == 200 and second.json()["status"] == "approved", second.text
        # bob's retry, with `by` left out or naming bob, is a replay of bob's call.
        for again in (vote, {**vote, "by": "bob"}):
            replay = await bob.post(url, json=again, headers=key)
            assert replay.status_code == 200 and replay.json()["status"] == "approved"
    decided = (await t.clients["agent"].get(f"/approvals/{rid}")).json()
    assert [v["by"]["id"] for v in decided["votes"]] == ["bob", "ann"]
    # The token's name given to someone else later: bob's calls are not theirs either.
    assert (await h.api.delete("/tokens/bob-phone")).status_code == 204
    async with _client(h, await make_token(h, "bob-phone", "approver", "carol")) as reused:
        before = await snapshot(h.redis)
        r = await reused.post(url, json=vote, headers=key)
        assert r.status_code == 422 and "'k-1'" in r.json()["detail"], r.text
        assert await snapshot(h.redis) == before


async def test_an_answer_under_another_callers_key_is_not_its_replay(h: Harness, t: Tokens) -> None:
    # A question anyone may answer: the second answerer, under the first's key, is told
    # it was answered already instead of getting a 200 as if its answer counted.
    qid = (await t.clients["agent"].post("/questions", json={"question": "why?"})).json()["id"]
    url, key, answer = f"/requests/{qid}/answer", {"Idempotency-Key": "k-1"}, {"text": "eu"}
    bob = t.clients["approver"]
    assert (await bob.post(url, json=answer, headers=key)).status_code == 200
    assert (await bob.post(url, json=answer, headers=key)).status_code == 200  # a retry
    async with _client(h, await make_token(h, "ann-laptop", "approver", "ann")) as ann:
        before = await snapshot(h.redis)
        r = await ann.post(url, json=answer, headers=key)
        assert r.status_code == 409 and "already answered by bob" in r.json()["detail"], r.text
        assert await snapshot(h.redis) == before


async def test_a_decision_key_stored_before_callers_had_their_own_changes_nothing(
    h: Harness, t: Tokens
) -> None:
    # What the route stored before this version: the key as sent, whoever sent it.
    rid = await agent_approval(t)
    bob = Actor(channel="api", id="bob")
    await h.rt.decisions.decide(rid, Decision.APPROVE, bob, delivery="api:d-old")
    # bob's retry after the upgrade is not found as a replay: the decision path refuses
    # a second decision (409, not 200), and nothing is recorded twice.
    before = await snapshot(h.redis)
    r = await t.clients["approver"].post(
        f"/requests/{rid}/decision",
        json={"decision": "approve"},
        headers={"Idempotency-Key": "d-old"},
    )
    assert r.status_code == 409 and "already approved" in r.json()["detail"], r.text
    assert await snapshot(h.redis) == before


async def test_an_agent_is_the_requester_and_reads_only_what_it_created(
    h: Harness, t: Tokens
) -> None:
    rid = await agent_approval(t)
    got = (await t.clients["agent"].get(f"/approvals/{rid}")).json()
    assert got["requester"] == {"channel": "agent", "id": "deploy-bot", "name": None}
    tid = await agent_thread(t)

    async with _client(h, await make_token(h, "other-bot", "agent")) as other:
        assert (await other.get(f"/approvals/{rid}")).status_code == 404
        assert (await other.get(f"/requests/{rid}")).status_code == 404
        assert (await other.get(f"/threads/{tid}")).status_code == 404
        assert (await other.post(f"/threads/{tid}/messages", json={"text": "x"})).status_code == 404
        # It may not ask in someone else's name either.
        body = {"tool": "t", "summary": "s", "requester": "bob", "policy": {"approvers": ["bob"]}}
        r = await other.post("/approvals", json=body)
        assert r.status_code == 403 and "asks only as itself" in r.json()["detail"], r.text
        # Its Idempotency-Key never finds what another caller made with the same key.
        key = {"Idempotency-Key": "k1"}
        body = {"tool": "t", "summary": "s", "policy": {"approvers": ["bob"]}}
        first = await t.clients["agent"].post("/approvals", json=body, headers=key)
        second = await other.post("/approvals", json=body, headers=key)
        assert first.status_code == second.status_code == 201
        assert first.json()["id"] != second.json()["id"]


async def test_missing_unknown_and_revoked_tokens_are_401(h: Harness, t: Tokens) -> None:
    token = await make_token(h, "short-lived", "admin")
    async with _client(h, token) as client:
        assert (await client.get("/tokens")).status_code == 200
        assert (await h.api.delete("/tokens/short-lived")).status_code == 204
        r = await client.get("/tokens")
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
    async with _client(h, "glt_made-up") as client:
        assert (await client.get("/requests")).status_code == 401
    assert (await h.http.get("/requests")).status_code == 401
    assert (await h.api.delete("/tokens/short-lived")).status_code == 404


async def test_tokens_are_never_listed_stored_or_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await make_token(h, "quiet", "approver", "bob")
    async with _client(h, token) as client:
        assert (await client.get("/requests")).status_code == 200
    listed = (await h.api.get("/tokens")).json()["items"]
    assert listed[0]["name"] == "quiet" and listed[0]["identity"] == "bob"
    assert listed[0]["last_used_at"] is not None
    assert set(listed[0]) == {"name", "scope", "identity", "created_at", "last_used_at"}
    stored = [str(await h.redis.dump(k)) async for k in h.redis.scan_iter()]
    assert not any(token in value for value in stored)
    assert token not in caplog.text
    assert "quiet" in caplog.text  # the log names tokens by name


async def test_a_token_name_is_unique_and_an_approver_needs_an_identity(h: Harness) -> None:
    await make_token(h, "dup", "agent")
    assert (await h.api.post("/tokens", json={"name": "dup", "scope": "agent"})).status_code == 409
    r = await h.api.post("/tokens", json={"name": "x", "scope": "approver"})
    assert r.status_code == 422 and "identity" in r.json()["detail"]
    r = await h.api.post("/tokens", json={"name": "y", "scope": "agent", "identity": "bob"})
    assert r.status_code == 422


def test_an_api_route_without_scopes_stops_the_app_being_built() -> None:
    forgot = APIRouter()

    @forgot.get("/forgotten")
    async def forgotten() -> None: ...

    declared = APIRouter(route_class=Scoped, dependencies=[scope("admin")])

    @declared.get("/declared")
    async def fine() -> None: ...

    _check_scoped([declared])
    with pytest.raises(ConfigError, match="/forgotten declares no token scope"):
        _check_scoped([declared, forgot])


async def test_the_token_is_checked_before_the_body_is_read(h: Harness, t: Tokens) -> None:
    cut = b'{"agent": '
    json_type = {"Content-Type": "application/json"}
    assert (await h.http.post("/threads", content=cut, headers=json_type)).status_code == 401
    r = await t.clients["approver"].post("/threads", content=cut, headers=json_type)
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    r = await t.clients["agent"].post("/threads", content=cut, headers=json_type)
    assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
