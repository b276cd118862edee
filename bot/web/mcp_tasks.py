"""MCP Tasks for the tools that wait for people: a task IS the Greenlight request.

The Tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663, protocol 2026-07-28)
lets a server answer ``tools/call`` with a task handle instead of the result; the client
then polls ``tasks/get`` (which carries the tool result once the task is completed) and
may ``tasks/cancel`` it. The SDK has no Tasks of its own, but its extension API
(``mcp.server.extension``) serves them: this module is that extension.

No new storage: the task id is the request's id, so a task lives as long as the request
does in Redis, any web process answers for it, and a token sees only the tasks it may read
through the REST API (another agent's task is not found). A client that did not declare
the extension (or speaks an older protocol) keeps the plain answer, "still pending" included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequestParams,
    GetTaskRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

TASKS = "io.modelcontextprotocol/tasks"
"""The extension's identifier, as clients declare it and the server advertises it."""
TASK_TOOLS = frozenset({"request_approval", "ask_human"})
"""The tools that may answer with a task (``permission_prompt``'s caller, Claude Code,
waits on the call itself; ``wait_for_request`` is what a task replaces)."""
POLL_MS = 2000
"""How often a client is asked to poll ``tasks/get``, in milliseconds."""

Look = Callable[[str], Awaitable[CallToolResult]]
"""The tool result for a request id as it stands now (``wait_for_request`` without waiting)."""
Cancel = Callable[[str], Awaitable[None]]
"""Withdraw the open request of this id, as the caller."""
Defer = Callable[[], AbstractAsyncContextManager[None]]
"""A context in which the waiting tools answer at once instead of waiting for people."""


def request_of(result: CallToolResult) -> dict[str, Any] | None:
    """The request a waiting tool answered with (its structured content), if it did."""
    out = result.structured_content
    if isinstance(out, dict) and set(out) == {"result"}:
        out = out["result"]
    return out if isinstance(out, dict) and "id" in out and "status" in out else None


def _iso(at: Any) -> str:
    return datetime.fromtimestamp(float(at), UTC).isoformat().replace("+00:00", "Z")


def task_of(request: dict[str, Any]) -> dict[str, Any]:
    """The SEP-2663 task fields for a request: open is working, cancelled is cancelled,
    any other end (approved, rejected, answered, expired) is a completed tool call."""
    status = request["status"]
    state = {"open": "working", "cancelled": "cancelled"}.get(status, "completed")
    ended = request.get("decided_at") or request.get("answered_at")
    return {
        "taskId": request["id"],
        "status": state,
        "statusMessage": f"the request is {status}",
        "createdAt": _iso(request["created_at"]),
        "lastUpdatedAt": _iso(ended or request["created_at"]),
        "ttlMs": None,  # kept as long as the request is
        "pollIntervalMs": POLL_MS,
    }


class Tasks(Extension):
    """Answer a task-declaring client's ``request_approval``/``ask_human`` with a task."""

    identifier = TASKS

    def __init__(self, look: Look, cancel: Cancel, defer: Defer) -> None:
        self._look = look
        self._cancel = cancel
        self._defer = defer

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", GetTaskRequestParams, self._get),
            MethodBinding("tasks/update", GetTaskRequestParams, self._update),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, self._cancel_task),
        ]

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        if params.name not in TASK_TOOLS or not _declared(ctx):
            return await call_next(ctx)
        async with self._defer():
            result = await call_next(ctx)
        if not isinstance(result, CallToolResult) or result.is_error:
            return result  # refused: the error itself, no task
        request = request_of(result)
        if request is None or request["status"] != "open":
            return result  # already decided (a repeated idempotency key): the result itself
        return {"resultType": "task", **task_of(request)}

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS)
        result = await self._found(params.task_id)
        task = task_of(request_of(result) or {})
        if task["status"] == "completed":
            task["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return task

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams
    ) -> HandlerResult:
        """Greenlight's tasks never ask the client for input: an update is acknowledged."""
        require_client_extension(ctx, TASKS)
        await self._found(params.task_id)
        return {}

    async def _cancel_task(
        self, ctx: ServerRequestContext[Any, Any], params: CancelTaskRequestParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS)
        await self._found(params.task_id)
        try:
            await self._cancel(params.task_id)
        except ToolError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        return {}

    async def _found(self, task_id: str) -> CallToolResult:
        try:
            result = await self._look(task_id)
        except ToolError:
            result = None
        if result is None or result.is_error or request_of(result) is None:
            raise MCPError(INVALID_PARAMS, f"no task {task_id!r}")
        return result


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this call's client declared the extension on a protocol that carries tasks."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False  # the 2025-11-25 wire sieves a tools/call result to CallToolResult
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS in capabilities.extensions)
