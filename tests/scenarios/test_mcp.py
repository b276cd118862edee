"""The MCP server: the official MCP client over streamable HTTP (``/mcp``) against the app
served over real HTTP, the requests decided over REST or by a signed Slack click."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from redis.asyncio import Redis

from bot.domain.validate import MAX_JSON
from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import BOB, USERS, slack_settings
from tests.channels.slack.slack import Slack, has_buttons, text_of
from tests.harness import TOKEN, Harness, eventually
from tests.harness import test_settings as settings_with
from tests.standins.slack_api import SlackAPI

GROUPS = {"deployers": ["bob"], "finance": ["bob"]}
POLICIES = {"default": {"approvers": ["bob"]}}


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = settings_with(approver_groups=GROUPS, approval_policies=POLICIES, mcp_wait=1.0)
    async with Harness(redis_server.url, settings=settings) as it:
        yield it


@asynccontextmanager
async def session(h: Harness, token: str | None = TOKEN) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{h.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        yield s


async def agent_token(h: Harness) -> str:
    r = await h.api.post("/tokens", json={"name": "mcp-bot", "scope": "agent"})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def open_request(h: Harness) -> str:
    async def found() -> str | None:
        r = await h.api.get("/requests")
        items = r.json()
        items = items.get("items", items) if isinstance(items, dict) else items
        return next((i["id"] for i in items if i["status"] == "open"), None)

    rid: str = await eventually(found)
    return rid


async def decide(h: Harness, rid: str, decision: str = "approve", **kw: Any) -> None:
    r = await h.api.post(
        f"/requests/{rid}/decision", json={"decision": decision, "by": "bob", **kw}
    )
    assert r.status_code == 200, r.text


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    out: dict[str, Any] = result.structured_content
    if "result" in out and len(out) == 1:
        out = out["result"]
    return out


async def test_lists_the_tools_and_an_approval_made_over_mcp_comes_back_decided(
    h: Harness,
) -> None:
    token = await agent_token(h)
    async with session(h, token) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names >= {"request_approval", "ask_human", "wait_for_request", "permission_prompt"}
        h.app.state.mcp_wait = 20.0
        call = asyncio.create_task(
            s.call_tool(
                "request_approval",
                {
                    "tool": "deploy",
                    "arguments": {"version": "1.5.0"},
                    "summary": "Release 1.5.0",
                    "context": "All checks passed.",
                },
            )
        )
        rid = await open_request(h)
        await decide(h, rid, reason="ship it")
        out = structured(await asyncio.wait_for(call, 15))
    assert out["id"] == rid
    assert (out["status"], out["decision"], out["reason"]) == ("approved", "approve", "ship it")
    assert out["arguments"] == {"version": "1.5.0"}
    assert out["requester"]["id"] == "mcp-bot"  # the agent token asked, as itself
    assert "next" not in out


async def test_an_approval_asked_over_mcp_is_decided_by_a_click_on_its_slack_card(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    channel = "C0APPROV01"
    async with SlackAPI(users=USERS) as api:
        settings = slack_settings(
            api,
            approval_policies={"default": {"approvers": [f"slack:{BOB}"]}},
            slack_approvals_channel=channel,
            mcp_wait=20.0,
        )
        async with Harness(redis_server.url, settings=settings) as h, session(h) as s:
            call = asyncio.create_task(
                s.call_tool(
                    "request_approval",
                    {"tool": "deploy", "arguments": {"version": "2.1.0"}, "summary": "Ship 2.1"},
                )
            )
            rid = await open_request(h)
            await h.drain()  # the worker posts the card
            (card,) = [k for k, m in api.messages.items() if k[0] == channel and has_buttons(m)]
            assert "2.1.0" in text_of(api.messages[card])
            r = await Slack(h.http, api).click(card, "gl_approve", BOB)  # signed, as Slack does
            assert r.status_code == 200, r.text
            out = structured(await asyncio.wait_for(call, 15))
    assert (out["id"], out["status"], out["decision"]) == (rid, "approved", "approve")
    assert [(a["channel"], a["id"]) for a in out["decided_by"]] == [("slack", BOB)]


async def test_a_wait_that_runs_out_says_pending_and_wait_for_request_gets_the_decision(
    h: Harness,
) -> None:
    async with session(h) as s:
        first = structured(
            await s.call_tool(
                "request_approval",
                {
                    "tool": "refund",
                    "arguments": {"amount": 5},
                    "summary": "refund",
                    "policy": "default",
                },
            )
        )
        assert first["status"] == "open"
        assert f"call wait_for_request with {first['id']}" in first["next"]
        again = structured(await s.call_tool("wait_for_request", {"request_id": first["id"]}))
        assert again["status"] == "open"
        await decide(h, first["id"], "reject", reason="too much")
        done = structured(await s.call_tool("wait_for_request", {"request_id": first["id"]}))
    assert (done["status"], done["decision"], done["reason"]) == ("rejected", "reject", "too much")


async def test_ask_human_returns_the_answer(h: Harness) -> None:
    async with session(h) as s:
        asked = structured(
            await s.call_tool("ask_human", {"question": "which region?", "choices": ["eu", "us"]})
        )
        assert asked["status"] == "open" and asked["choices"] == ["eu", "us"]
        r = await h.api.post(f"/requests/{asked['id']}/answer", json={"text": "eu", "by": "bob"})
        assert r.status_code == 200, r.text
        done = structured(await s.call_tool("wait_for_request", {"request_id": asked["id"]}))
    assert (done["status"], done["answer"]) == ("answered", "eu")


async def test_permission_prompt_answers_claude_codes_allow_and_deny_json(h: Harness) -> None:
    call = {"tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "toolu_1"}

    def answer(result: Any) -> dict[str, Any]:
        assert not result.is_error, result.content
        found: dict[str, Any] = json.loads(result.content[0].text)
        return found

    async with session(h) as s:
        waiting = answer(await s.call_tool("permission_prompt", call))
        assert waiting["behavior"] == "deny" and "still waiting" in waiting["message"]
        rid = await open_request(h)
        await decide(h, rid)
        # The same call again waits on the same request: one request, now approved.
        assert answer(await s.call_tool("permission_prompt", call)) == {
            "behavior": "allow",
            "updatedInput": {"command": "ls"},
        }
        other = {**call, "tool_use_id": "toolu_2", "input": {"command": "rm -rf /"}}
        await s.call_tool("permission_prompt", other)
        rid2 = await open_request(h)
        await decide(h, rid2, "reject", reason="never")
        denied = answer(await s.call_tool("permission_prompt", other))
    assert denied["behavior"] == "deny" and "never" in denied["message"]
    assert rid2 != rid


async def open_ids(h: Harness) -> list[str]:
    r = await h.api.get("/requests")
    return [i["id"] for i in r.json()["items"] if i["status"] == "open"]


def permission(result: Any) -> dict[str, Any]:
    """Claude Code's allow/deny answer, as the permission prompt tool returns it."""
    assert not result.is_error, result.content
    found: dict[str, Any] = json.loads(result.content[0].text)
    return found


async def test_permission_prompt_retried_under_a_new_tool_use_id_waits_on_the_same_request(
    h: Harness,
) -> None:
    """Claude Code retries a denied tool use under a new id: that must join the request
    people were already asked, and approving it must answer the retry."""
    ls = {"tool_name": "Bash", "input": {"command": "make deploy"}}
    async with session(h) as s:
        first = permission(await s.call_tool("permission_prompt", {**ls, "tool_use_id": "t1"}))
        (rid,) = await open_ids(h)
        assert first["behavior"] == "deny" and rid in first["message"], first
        again = permission(await s.call_tool("permission_prompt", {**ls, "tool_use_id": "t2"}))
        assert again["behavior"] == "deny" and rid in again["message"], again
        assert await open_ids(h) == [rid]  # one card, not two
        await decide(h, rid)
        allow = {"behavior": "allow", "updatedInput": {"command": "make deploy"}}
        # Either tool use asked again gets the decision of the request it waited on.
        assert permission(await s.call_tool("permission_prompt", {**ls, "tool_use_id": "t2"})) == (
            allow
        )
        assert permission(await s.call_tool("permission_prompt", {**ls, "tool_use_id": "t1"})) == (
            allow
        )
        # A later tool use of the same command is asked anew: one approval, one run.
        later = permission(await s.call_tool("permission_prompt", {**ls, "tool_use_id": "t3"}))
        assert later["behavior"] == "deny" and "still waiting" in later["message"], later
        (rid2,) = await open_ids(h)
        assert rid2 != rid and rid2 in later["message"]

        # Two tool uses at once of one command: one request between them.
        both = {"tool_name": "Bash", "input": {"command": "make clean"}}
        await asyncio.gather(
            *(s.call_tool("permission_prompt", {**both, "tool_use_id": u}) for u in ("t4", "t5"))
        )
    assert len(await open_ids(h)) == 2


async def test_permission_prompt_without_a_tool_use_id_never_reuses_a_decision(
    h: Harness,
) -> None:
    call = {"tool_name": "Bash", "input": {"command": "rm -rf build"}}
    async with session(h) as s:
        first = permission(await s.call_tool("permission_prompt", call))
        (rid,) = await open_ids(h)
        assert first["behavior"] == "deny" and rid in first["message"]
        again = permission(await s.call_tool("permission_prompt", call))
        assert again["behavior"] == "deny" and rid in again["message"]  # joined, while open
        await decide(h, rid)
        # Approved once: the same command later is asked anew, never allowed unasked.
        later = permission(await s.call_tool("permission_prompt", call))
        assert later["behavior"] == "deny" and "still waiting" in later["message"], later
        (rid2,) = await open_ids(h)
        assert rid2 != rid and rid2 in later["message"]


async def test_permission_prompt_joins_a_retry_in_its_session_never_another_sessions_call(
    h: Harness,
) -> None:
    """Two Claude Code sessions sharing a token (in different working directories, say)
    ask the same command: each is its own request, so one approval allows one of them.
    A retry in the same session under a new tool use joins that session's request."""
    call = {"tool_name": "Bash", "input": {"command": "rm -rf dist"}}
    async with session(h) as one, session(h) as two:
        first = permission(await one.call_tool("permission_prompt", {**call, "tool_use_id": "a1"}))
        (rid,) = await open_ids(h)
        assert first["behavior"] == "deny" and rid in first["message"], first
        other = permission(await two.call_tool("permission_prompt", {**call, "tool_use_id": "b1"}))
        (rid2,) = set(await open_ids(h)) - {rid}  # a card of its own
        assert other["behavior"] == "deny" and rid2 in other["message"], other

        again = permission(await one.call_tool("permission_prompt", {**call, "tool_use_id": "a2"}))
        assert again["behavior"] == "deny" and rid in again["message"], again
        assert sorted(await open_ids(h)) == sorted([rid, rid2])  # joined, no third card
        await decide(h, rid)
        allow = {"behavior": "allow", "updatedInput": {"command": "rm -rf dist"}}
        assert permission(
            await one.call_tool("permission_prompt", {**call, "tool_use_id": "a2"})
        ) == (allow)
        # The other session's call is still waiting on its own request.
        still = permission(await two.call_tool("permission_prompt", {**call, "tool_use_id": "b2"}))
        assert still["behavior"] == "deny" and rid2 in still["message"], still
    assert await open_ids(h) == [rid2]


async def test_permission_prompt_without_a_session_id_joins_nothing(h: Harness) -> None:
    """A client that does not send the session id it was given cannot be told from
    another session: each tool use is asked on its own rather than joined."""
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKEN}"}
    call = {"tool_name": "Bash", "input": {"command": "rm -rf dist"}}
    for n, use in enumerate(("t1", "t2")):
        params = {"name": "permission_prompt", "arguments": {**call, "tool_use_id": use}}
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
        r = await h.http.post("/mcp", json=body, headers=headers)
        assert r.status_code == 200 and "still waiting" in r.text, r.text
    assert len(await open_ids(h)) == 2


async def test_permission_prompt_lets_approvers_edit_the_input_and_allows_the_edit(
    h: Harness,
) -> None:
    """Claude Code's contract: allow with ``updatedInput``, here the approver's edit."""
    call = {"tool_name": "Bash", "input": {"command": "rm -rf build"}, "tool_use_id": "toolu_9"}
    async with session(h) as s:
        await s.call_tool("permission_prompt", call)
        rid = await open_request(h)
        # Bash's input schema went with the request: an edit that breaks it is refused.
        r = await h.api.post(
            f"/requests/{rid}/decision",
            json={"decision": "approve", "by": "bob", "edited_args": {"command": 5}},
        )
        assert r.status_code == 422, r.text
        await decide(h, rid, edited_args={"command": "rm -rf build/tmp"})
        result = await s.call_tool("permission_prompt", call)
        assert not result.is_error, result.content
        assert json.loads(result.content[0].text) == {
            "behavior": "allow",
            "updatedInput": {"command": "rm -rf build/tmp"},
        }

        # A tool whose schema is not known: its input is approved as it is, never edited.
        other = {"tool_name": "mcp__db__query", "input": {"sql": "select 1"}, "tool_use_id": "t2"}
        await s.call_tool("permission_prompt", other)
        rid2 = await open_request(h)
        r = await h.api.post(
            f"/requests/{rid2}/decision",
            json={"decision": "approve", "by": "bob", "edited_args": {"sql": "select 2"}},
        )
        assert r.status_code == 422 and "cannot be edited" in r.text, r.text
        await decide(h, rid2)
        result = await s.call_tool("permission_prompt", other)
    assert json.loads(result.content[0].text) == {
        "behavior": "allow",
        "updatedInput": {"sql": "select 1"},
    }


async def test_permission_prompt_denies_input_too_large_to_be_approved_saying_so(
    h: Harness,
) -> None:
    content = "x" * MAX_JSON
    call = {"tool_name": "Write", "input": {"file_path": "/a", "content": content}}
    async with session(h) as s:
        result = await s.call_tool("permission_prompt", call)
    assert not result.is_error, result.content
    answer = json.loads(result.content[0].text)
    assert answer["behavior"] == "deny"
    assert "too large to be approved" in answer["message"], answer
    assert f"over the limit of {MAX_JSON}" in answer["message"], answer
    assert (await h.api.get("/requests")).json()["items"] == []  # nobody was asked


async def test_no_token_or_a_bad_token_is_refused(h: Harness) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    r = await h.http.post("/mcp", json=init, headers=headers)
    assert r.status_code == 401
    r = await h.http.post("/mcp", json=init, headers={**headers, "Authorization": "Bearer nope"})
    assert r.status_code == 401
    try:
        async with session(h, None):
            pytest.fail("the MCP client got in without a token")
    except BaseException as exc:  # the SDK's error for the 401 above, in exception groups
        assert "MCPError" in repr(exc), repr(exc)


@asynccontextmanager
async def stdio_session(h: Harness, token: str, wait: str) -> AsyncIterator[ClientSession]:
    """``greenlight mcp`` as a subprocess, driven over stdio."""
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "bot", "mcp", "--url", h.url, "--wait", wait],
        env={**os.environ, "API_TOKEN": token},
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


async def test_greenlight_mcp_over_stdio_asks_the_server_and_gets_the_decision(
    h: Harness,
) -> None:
    token = await agent_token(h)
    async with stdio_session(h, token, wait="20") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names >= {"request_approval", "ask_human", "wait_for_request"}
        call = asyncio.create_task(
            s.call_tool("request_approval", {"tool": "deploy", "summary": "Release 1.5.0"})
        )
        rid = await open_request(h)
        await decide(h, rid)
        out = structured(await asyncio.wait_for(call, 15))
    assert (out["id"], out["status"], out["requester"]["id"]) == (rid, "approved", "mcp-bot")


async def test_greenlight_mcp_over_stdio_joins_a_retry_in_its_process_never_anothers(
    h: Harness,
) -> None:
    """A ``greenlight mcp`` process serves one client session: a retry through it joins
    its open request, the same call through another process (another Claude Code
    session, the same token) is asked on its own."""
    token = await agent_token(h)
    call = {"tool_name": "Bash", "input": {"command": "rm -rf dist"}}
    async with stdio_session(h, token, "1") as one, stdio_session(h, token, "1") as two:
        await one.call_tool("permission_prompt", {**call, "tool_use_id": "a1"})
        (rid,) = await open_ids(h)
        again = permission(await one.call_tool("permission_prompt", {**call, "tool_use_id": "a2"}))
        assert again["behavior"] == "deny" and rid in again["message"], again
        assert await open_ids(h) == [rid]
        other = permission(await two.call_tool("permission_prompt", {**call, "tool_use_id": "b1"}))
        (rid2,) = set(await open_ids(h)) - {rid}
        assert other["behavior"] == "deny" and rid2 in other["message"], other
