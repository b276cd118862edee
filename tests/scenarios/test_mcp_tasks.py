"""MCP Tasks on ``/mcp``: the official MCP client, declaring the Tasks extension on the
2026-07-28 protocol, against the app over real HTTP; the task is the Greenlight request."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
from mcp.client import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolResult,
    CancelTaskRequest,
    CancelTaskRequestParams,
    GetTaskRequest,
    GetTaskRequestParams,
    Result,
)
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis, free_port
from tests.harness import TOKEN, Harness, eventually
from tests.harness import test_settings as settings_with
from tests.scenarios.test_mcp import agent_token, decide, structured
from tests.scenarios.test_run_process import TOKEN as BOT_TOKEN
from tests.scenarios.test_run_process import Bot, wait_gone

TASKS = "io.modelcontextprotocol/tasks"
SETTINGS = {
    "approver_groups": {"deployers": ["bob"], "finance": ["bob"]},
    "approval_policies": {"default": {"approvers": ["bob"]}},
    "mcp_wait": 20.0,  # a plain call would wait this long; a task answers at once
}
DEPLOY = {"tool": "deploy", "arguments": {"version": "3.0.0"}, "summary": "Ship 3.0"}


class TaskHandle(Result):
    """SEP-2663's CreateTaskResult, as the client parses it."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class DetailedTask(Result):
    """SEP-2663's ``tasks/get`` answer: the task, and its tool result once completed."""

    task_id: str
    status: str
    result: dict[str, Any] | None = None


async def get_task(session: Any, task_id: str) -> DetailedTask:
    request = GetTaskRequest(params=GetTaskRequestParams(task_id=task_id))
    task: DetailedTask = await session.send_request(request, DetailedTask)
    return task


async def resolve(handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
    """Poll the task to its end, as a client that lets the SDK finish the call does."""
    while (task := await get_task(ctx.session, handle.task_id)).status == "working":  # noqa: ASYNC110 - SEP-2663 polls
        await asyncio.sleep((handle.poll_interval_ms or 1000) / 1000)  # at the server's cadence
    assert task.result is not None, task
    return CallToolResult.model_validate(task.result)


class TasksClient(ClientExtension):
    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=resolve)]


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url, settings=settings_with(**SETTINGS)) as it:
        yield it


@asynccontextmanager
async def client(h: Harness | str, token: str = TOKEN, tasks: bool = True) -> AsyncIterator[Client]:
    """The official client at ``/mcp`` of a harness or a URL, declaring Tasks or not."""
    url = h if isinstance(h, str) else h.url
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        extensions = [TasksClient()] if tasks else []
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        async with Client(transport, extensions=extensions) as c:
            yield c


async def ask_as_task(c: Client, tool: str = "request_approval", args: Any = None) -> TaskHandle:
    handle = await c.session.call_tool(tool, args or DEPLOY, allow_claimed=True)
    assert isinstance(handle, TaskHandle), handle
    return handle


async def test_a_task_comes_back_at_once_works_until_approved_then_carries_the_decision(
    h: Harness,
) -> None:
    async with client(h) as c:
        assert c.protocol_version == "2026-07-28"
        assert TASKS in (c.server_capabilities.extensions or {})
        started = time.perf_counter()
        handle = await asyncio.wait_for(ask_as_task(c), 5)  # not the 20 s a plain call waits
        asked = time.perf_counter() - started
        assert handle.status == "working"
        started = time.perf_counter()
        assert (await get_task(c.session, handle.task_id)).status == "working"
        polled = time.perf_counter() - started
        print(f"task-augmented call {asked * 1000:.1f} ms, tasks/get {polled * 1000:.1f} ms")
        await decide(h, handle.task_id, reason="ship it")  # the task id is the request id
        task = await get_task(c.session, handle.task_id)
    assert task.status == "completed"
    assert task.result is not None
    out = structured(CallToolResult.model_validate(task.result))
    assert (out["id"], out["status"], out["decision"]) == (handle.task_id, "approved", "approve")
    assert out["reason"] == "ship it"
    assert out["arguments"] == {"version": "3.0.0"}


async def test_the_sdk_finishes_a_task_call_into_the_same_result_as_a_plain_call(
    h: Harness,
) -> None:
    async with client(h) as c:
        call = asyncio.create_task(c.call_tool("ask_human", {"question": "Which region?"}))

        async def open_question() -> str | None:
            r = await h.api.get("/requests")
            body = r.json()
            items = body.get("items", body) if isinstance(body, dict) else body
            return next((i["id"] for i in items if i["status"] == "open"), None)

        rid = await eventually(open_question)
        r = await h.api.post(f"/requests/{rid}/answer", json={"text": "eu-west", "by": "bob"})
        assert r.status_code == 200, r.text
        out = structured(await asyncio.wait_for(call, 15))
    assert (out["id"], out["status"], out["answer"]) == (rid, "answered", "eu-west")
    assert "next" not in out


async def test_a_task_outlives_the_web_process_that_made_it(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    settings = settings_with(**SETTINGS)
    async with Harness(redis_server.url, settings=settings) as first:
        token = await agent_token(first)
        async with client(first, token) as c:
            handle = await ask_as_task(c)
    async with (
        Harness(redis_server.url, settings=settings) as second,  # a new process
        client(second, token) as c,
    ):
        assert (await get_task(c.session, handle.task_id)).status == "working"
        await decide(second, handle.task_id, "reject", reason="not today")
        task = await get_task(c.session, handle.task_id)
    assert task.status == "completed" and task.result is not None
    out = structured(CallToolResult.model_validate(task.result))
    assert (out["status"], out["reason"]) == ("rejected", "not today")


async def test_a_cancelled_task_closes_the_request(h: Harness) -> None:
    token = await agent_token(h)
    async with client(h, token) as c:
        handle = await ask_as_task(c)
        request = CancelTaskRequest(params=CancelTaskRequestParams(task_id=handle.task_id))
        await c.session.send_request(request, Result)
        assert (await get_task(c.session, handle.task_id)).status == "cancelled"
        with pytest.raises(MCPError, match="cancelled"):  # cancelling twice is refused
            await c.session.send_request(request, Result)
    r = await h.api.get(f"/approvals/{handle.task_id}")
    assert r.json()["status"] == "cancelled"  # approvers no longer see it open


async def test_another_tokens_task_is_not_found(h: Harness) -> None:
    async with client(h, await agent_token(h)) as c:
        handle = await ask_as_task(c)
    r = await h.api.post("/tokens", json={"name": "other-bot", "scope": "agent"})
    other = r.json()["token"]
    async with client(h, other) as c:
        with pytest.raises(MCPError, match="no task"):
            await get_task(c.session, handle.task_id)
        request = CancelTaskRequest(params=CancelTaskRequestParams(task_id=handle.task_id))
        with pytest.raises(MCPError, match="no task"):
            await c.session.send_request(request, Result)
    r = await h.api.get(f"/approvals/{handle.task_id}")
    assert r.json()["status"] == "open"


async def test_a_client_without_the_extension_still_gets_the_pending_answer(h: Harness) -> None:
    h.app.state.mcp_wait = 0.5
    async with client(h, tasks=False) as c:
        out = structured(await c.call_tool("request_approval", DEPLOY))
        with pytest.raises(MCPError, match="did not declare") as refused:
            await get_task(c.session, out["id"])
    assert out["status"] == "open"
    assert f"call wait_for_request with {out['id']}" in out["next"]
    assert refused.value.error.code == -32021  # SEP-2663: tasks/* need the extension declared


async def test_a_refused_call_is_the_error_itself_not_a_task(h: Harness) -> None:
    async with client(h) as c:
        result = await c.session.call_tool(
            "request_approval", {**DEPLOY, "policy": "nosuch"}, allow_claimed=True
        )
    assert isinstance(result, CallToolResult) and result.is_error
    assert "nosuch" in result.content[0].text  # type: ignore[union-attr]


async def test_greenlight_mcp_over_stdio_answers_with_a_task_too(h: Harness) -> None:
    token = await agent_token(h)
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "bot", "mcp", "--url", h.url, "--wait", "20"],
        env={**os.environ, "API_TOKEN": token},
    )
    async with Client(server, extensions=[TasksClient()]) as c:
        handle = await asyncio.wait_for(ask_as_task(c), 10)
        assert (await get_task(c.session, handle.task_id)).status == "working"
        await decide(h, handle.task_id)
        task = await get_task(c.session, handle.task_id)
    assert task.status == "completed" and task.result is not None
    out = structured(CallToolResult.model_validate(task.result))
    assert (out["id"], out["status"], out["requester"]["id"]) == (
        handle.task_id,
        "approved",
        "mcp-bot",
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PDEATHSIG")
async def test_a_task_outlives_a_killed_greenlight_run(tmp_path: Path) -> None:
    data, log, port = tmp_path / "data", tmp_path / "greenlight.log", free_port()
    url = f"http://127.0.0.1:{port}"
    first = Bot(data, port, log)
    try:
        first.ready()
        async with client(url, BOT_TOKEN) as c:
            handle = await ask_as_task(c, "ask_human", {"question": "Which region?"})
        redis_pid = int((data / "redis" / "redis.pid").read_text())
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_gone(redis_pid)  # the embedded Redis follows its parent, its AOF flushed
        second = Bot(data, port, log)
        try:
            second.ready()
            async with client(url, BOT_TOKEN) as c:
                assert (await get_task(c.session, handle.task_id)).status == "working"
                r = second.http.post(
                    f"/requests/{handle.task_id}/answer", json={"text": "eu-west", "by": "bob"}
                )
                assert r.status_code == 200, r.text
                task = await get_task(c.session, handle.task_id)
        finally:
            second.stop(signal.SIGTERM)
    finally:
        first.stop()
    assert task.status == "completed" and task.result is not None
    out = structured(CallToolResult.model_validate(task.result))
    assert (out["status"], out["answer"]) == ("answered", "eu-west")
