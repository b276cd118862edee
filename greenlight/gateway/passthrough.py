"""What the gateway passes through untouched: the upstream server's resources and prompts,
and its notifications that a list changed.

Only tool calls are gated; reading a resource or getting a prompt does nothing, so they
go to the upstream and back as they are, and the gateway offers them only when the
upstream does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession, IncomingMessage
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.session import ServerSession

CHANGES = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)
"""The upstream's notifications the gateway's client gets too."""


class Passthrough:
    """Resources and prompts, from the upstream as they are."""

    def __init__(self, upstream: ClientSession) -> None:
        self.upstream = upstream

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await self.upstream.list_resources(params=params)

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await self.upstream.list_resource_templates(params=params)

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await self.upstream.read_resource(params.uri)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await self.upstream.list_prompts(params=params)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        return await self.upstream.get_prompt(params.name, params.arguments)

    def handlers(self, offered: types.ServerCapabilities | None) -> dict[str, Any]:
        """The ``Server`` handlers for what the upstream ``offered``, and only that."""
        out: dict[str, Any] = {}
        if offered and offered.resources:
            out |= {
                "on_list_resources": self.list_resources,
                "on_list_resource_templates": self.list_resource_templates,
                "on_read_resource": self.read_resource,
            }
        if offered and offered.prompts:
            out |= {"on_list_prompts": self.list_prompts, "on_get_prompt": self.get_prompt}
        return out


def notification_options(offered: types.ServerCapabilities | None) -> NotificationOptions:
    """Say the lists may change where the upstream says so: its notifications come through."""

    def changes(capability: Any) -> bool:
        return bool(capability and capability.list_changed)

    return NotificationOptions(
        prompts_changed=changes(offered and offered.prompts),
        resources_changed=changes(offered and offered.resources),
        tools_changed=changes(offered and offered.tools),
    )


class Relay:
    """The upstream session's message handler: a changed list goes on to the gateway's
    client (once it has made a request, so there is a session to send on)."""

    def __init__(self) -> None:
        self.downstream: ServerSession | None = None
        self.on_tools_changed: Callable[[], None] = lambda: None

    def seen(self, ctx: ServerRequestContext[Any]) -> None:
        """Remember the client's session from one of its requests."""
        self.downstream = ctx.session

    async def __call__(self, message: IncomingMessage) -> None:
        if not isinstance(message, CHANGES):
            return
        if isinstance(message, types.ToolListChangedNotification):
            self.on_tools_changed()
        if self.downstream is not None:
            await self.downstream.send_notification(message)
