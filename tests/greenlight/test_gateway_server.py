"""The gateway's view of its upstream, against a real MCP server over in-memory streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.memory import create_client_server_memory_streams

from greenlight.client import AsyncGreenlight
from greenlight.gateway.policy import Policy
from greenlight.gateway.record import CallLog
from greenlight.gateway.server import Gateway

NAMES = [f"tool_{n}" for n in range(5)]
PAGE = 2


@asynccontextmanager
async def paged_upstream(pages: list[str | None]) -> AsyncIterator[ClientSession]:
    """An upstream listing ``NAMES`` two a page; each page asked for is noted in ``pages``
    (by its cursor, None for the first)."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        cursor = params.cursor if params else None
        pages.append(cursor)
        start = int(cursor or 0)
        tools = [
            types.Tool(name=n, input_schema={"type": "object", "properties": {n: {}}})
            for n in NAMES[start : start + PAGE]
        ]
        more = start + PAGE < len(NAMES)
        return types.ListToolsResult(tools=tools, next_cursor=str(start + PAGE) if more else None)

    server: Server[Any] = Server("paged", on_list_tools=list_tools)
    async with (
        create_client_server_memory_streams() as ((c_read, c_write), (s_read, s_write)),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(server.run, s_read, s_write, server.create_initialization_options())
        async with ClientSession(c_read, c_write) as session:
            await session.initialize()
            yield session
        tg.cancel_scope.cancel()


async def test_learn_pages_through_every_tool_or_up_to_the_one_asked_for(tmp_path: Path) -> None:
    pages: list[str | None] = []
    async with paged_upstream(pages) as session:
        gateway = Gateway(
            session,
            name="paged",
            policy=Policy(),
            client=AsyncGreenlight("http://127.0.0.1:9", "unused"),  # never asked here
            log=CallLog(tmp_path / "calls.jsonl"),
            wait=None,
        )
        learned = await gateway.learn()
        assert sorted(learned) == NAMES
        assert learned["tool_4"] == {"type": "object", "properties": {"tool_4": {}}}
        assert pages == [None, "2", "4"]

        gateway.schemas.clear()  # as when the upstream says its tools changed
        pages.clear()
        assert sorted(await gateway.learn(until="tool_3")) == NAMES[:4]
        assert pages == [None, "2"]  # the page listing tool_3 is the last one asked for
