"""The approval gateway: any MCP server's tools, with the calls a policy names approved first.

``greenlight mcp-gateway --upstream <command or URL> --policy gates.toml`` serves, over
stdio, the upstream server's tools unchanged. A call that a gate of the policy matches
is sent for approval (``POST /approvals`` through :class:`greenlight.AsyncGreenlight`,
keyed by the call) and forwarded only once approved, with the approved (possibly edited)
arguments; a rejected or expired call returns an MCP tool error with the reason and the
upstream never sees it. Every call is written to the call log before it is forwarded.
The upstream's resources and prompts, and its notifications that a list changed, pass
through as they are (``greenlight.gateway.passthrough``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

from greenlight.calls import call_key
from greenlight.client import Approved, AsyncGreenlight
from greenlight.errors import (
    ConfigError,
    Expired,
    NotApproved,
    Rejected,
    RequestError,
    StillPending,
)
from greenlight.gateway.passthrough import Passthrough, Relay, notification_options
from greenlight.gateway.policy import Gate, Policy
from greenlight.gateway.record import CallLog, Entry, Outcome

SECRET_ENV = ("API_TOKEN", "GREENLIGHT_TOKEN")
"""The gateway's own token: never handed to the upstream server."""


@asynccontextmanager
async def connect(upstream: str, relay: Relay | None = None) -> AsyncIterator[ClientSession]:
    """A session with the upstream server: a streamable-HTTP URL, or a command run over
    stdio (with the gateway's environment, less its Greenlight token); its notifications
    go to ``relay``."""
    if upstream.startswith(("http://", "https://")):
        transport = streamable_http_client(upstream)
    else:
        argv = shlex.split(upstream)
        if not argv:
            raise ConfigError("--upstream is empty: give a command or an http(s) URL")
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        transport = stdio_client(StdioServerParameters(command=argv[0], args=argv[1:], env=env))
    async with (
        transport as (read, write),
        ClientSession(read, write, message_handler=relay) as session,
    ):
        await session.initialize()
        yield session


class Gateway:
    """Tools listed from the upstream; calls forwarded, or asked about first."""

    def __init__(
        self,
        upstream: ClientSession,
        *,
        name: str,
        policy: Policy,
        client: AsyncGreenlight,
        log: CallLog,
        wait: float | None,
        relay: Relay | None = None,
    ) -> None:
        """Args:
        upstream: the session with the upstream server.
        name: the upstream as given (command or URL): part of every call's key, never
            shown (a command line or URL may carry a secret).
        wait: seconds a gated call waits for people before answering that it is still
            pending (the same call again waits on the same request); None: until decided.
        relay: the upstream's notifications: told the client's session, and told to
            forget the tools' schemas when the upstream's tools change.
        """
        self.upstream = upstream
        self.name = name
        self.policy = policy
        self.client = client
        self.log = log
        self.wait = wait
        self.schemas: dict[str, dict[str, Any]] = {}
        self.relay = relay or Relay()
        self.relay.on_tools_changed = self.schemas.clear

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self.relay.seen(ctx)
        return await self._list(params)

    async def _list(self, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        listed = await self.upstream.list_tools(params=params)
        self.schemas.update({t.name: t.input_schema for t in listed.tools})
        return listed

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self.relay.seen(ctx)
        tool, arguments = params.name, dict(params.arguments or {})
        if self.policy.tests(tool):
            misfits = self.policy.misfits(tool, await self._schema(tool))
            if misfits:  # a tool learned since start-up that the policy's tests miss
                reason = "the gateway's policy does not fit this tool: " + "; ".join(misfits)
                self.log.write(Entry(tool, arguments, "error", reason=reason))
                return _refused(f"the call was not made: {reason}")
        found = self.policy.gate_for(tool, arguments)
        if found is None:
            self.log.write(Entry(tool, arguments, "forwarded"))
            return await self.upstream.call_tool(tool, arguments)
        gate_name, gate = found
        try:
            approved = await self._approval(tool, arguments, gate_name, gate)
        except NotApproved as exc:
            outcome: Outcome = (
                "rejected"
                if isinstance(exc, Rejected)
                else "expired"
                if isinstance(exc, Expired)
                else "cancelled"
            )
            by = getattr(exc, "by", [])
            self.log.write(
                Entry(tool, arguments, outcome, gate_name, exc.request_id, by=by, reason=exc.reason)
            )
            return _refused(f"not approved: {exc}")
        except StillPending as exc:
            self.log.write(Entry(tool, arguments, "pending", gate_name, exc.request_id))
            return _refused(
                f"still waiting for approval {exc.request_id}: nobody has decided yet. "
                "Call the tool again with the same arguments to keep waiting on the same request."
            )
        except RequestError as exc:
            self.log.write(Entry(tool, arguments, "error", gate_name, reason=str(exc)))
            # Nobody could ever approve it: say why, not that the server could not be asked.
            if exc.code == "too_large":  # "the arguments are too large ...: N bytes, over M"
                return _refused(f"{exc.detail}; the call was not made")
            if exc.status == 413:  # the whole body, over the server's MAX_BODY_BYTES
                return _refused(
                    f"the arguments are too large to be approved ({exc.detail}); "
                    "the call was not made"
                )
            return _refused(f"approval could not be asked for, so the call was not made: {exc}")
        entry = Entry(
            tool,
            approved.arguments,
            "forwarded",
            gate_name,
            approved.request_id,
            edited=approved.edited,
            by=approved.by,
            reason=approved.reason,
        )
        self.log.write(entry)
        return await self.upstream.call_tool(tool, approved.arguments)

    async def _approval(
        self, tool: str, arguments: dict[str, Any], gate_name: str, gate: Gate
    ) -> Approved:
        """The approval of this call: a request not yet spent on an earlier call.

        The n-th same call in flight asks under the n-th key; a request whose call was
        already forwarded or refused (this run, or an earlier one, per the call log) is
        spent, and the next key is tried, which asks people anew.
        """
        # What the gate asks for is part of the call's key: a gate tightened (more approvers,
        # another policy) while a call waits asks anew under it, never reuses the request
        # made under the weaker one.
        asked = {"arguments": arguments, "policy": gate.to_policy(), "slack": gate.slack_channel}
        base = call_key("approval", f"mcp-gateway:{self.name}:{tool}", asked, None)
        schema = await self._schema(tool)
        summary = gate.summary or f"{tool} through the MCP gateway"
        info = self.upstream.initialize_result
        server = info.server_info.name if info else "the upstream server"
        context = f"Gate: {gate_name}\nMCP server: {server}"
        while True:
            nth = self.client.slots.take(base)
            try:
                approved = await self.client.request_approval(
                    tool,
                    arguments,
                    summary=summary,
                    arguments_schema=schema,
                    policy=gate.to_policy(),
                    context=context,
                    slack_channel=gate.slack_channel,
                    idempotency_key=f"{base}.{nth}",
                    timeout=self.wait,
                )
            except NotApproved as exc:
                if exc.request_id in self.log.spent:
                    continue
                raise
            except BaseException:
                self.client.slots.give_back(base, nth)  # a wait cut short: ask the same again
                raise
            if approved.request_id not in self.log.spent:
                return approved

    async def learn(self, until: str | None = None) -> dict[str, dict[str, Any]]:
        """The tools the upstream lists, page by page: their input schemas, by name.

        Args:
            until: stop at the page that lists this tool; None: list every page.
        """
        cursor: str | None = None
        while True:
            page = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            cursor = (await self._list(page)).next_cursor
            if cursor is None or (until is not None and until in self.schemas):
                return dict(self.schemas)

    async def _schema(self, tool: str) -> dict[str, Any] | None:
        """The tool's input schema, so approvers may edit the arguments."""
        if tool not in self.schemas:
            await self.learn(until=tool)
        return self.schemas.get(tool)


class UpstreamError(ConfigError):
    """The upstream MCP server cannot be used: the gateway does not start."""


def _innermost(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups: what actually went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _refused(text: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"Greenlight: {text}")], is_error=True
    )


async def serve(
    upstream: str, policy: Policy, client: AsyncGreenlight, log: CallLog, wait: float | None
) -> None:
    """Connect to ``upstream``, then serve its tools over stdio until the client leaves.

    Raises:
        UpstreamError: the upstream did not start, or did not answer MCP's handshake.
        PolicyError: a gate names tools the upstream does not list, or tests an argument
            that a tool it covers does not take.
    """
    relay = Relay()
    unfit: ConfigError | None = None
    async with AsyncExitStack() as stack:
        try:
            session = await stack.enter_async_context(connect(upstream, relay))
        except Exception as exc:  # OSError, or the SDK's MCPError inside exception groups
            raise UpstreamError(
                f"the upstream MCP server did not start or answer: {_innermost(exc)}"
            ) from exc
        init = session.initialize_result
        offered = init.capabilities if init else None
        gateway = Gateway(
            session, name=upstream, policy=policy, client=client, log=log, wait=wait, relay=relay
        )
        unfit = await _unfit(gateway, policy, offered)
        if unfit is None:
            server: Server[Any] = Server(
                init.server_info.name if init else "greenlight-gateway",
                version=init.server_info.version if init else "",
                instructions=init.instructions if init else None,
                on_list_tools=gateway.list_tools,
                on_call_tool=gateway.call_tool,
                **Passthrough(session).handlers(offered),
            )
            options = server.create_initialization_options(notification_options(offered))
            async with stdio_server() as (read, write):
                await server.run(read, write, options)
    if unfit is not None:  # raised once the upstream's session is closed: not in its group
        raise unfit


async def _unfit(
    gateway: Gateway, policy: Policy, offered: types.ServerCapabilities | None
) -> ConfigError | None:
    """Why not to serve: the upstream's tools cannot be listed, or the policy's gates do not
    fit them (:meth:`Policy.check`); None: serve."""
    try:
        policy.check(await gateway.learn() if offered and offered.tools else {})
    except ConfigError as exc:
        return exc
    except Exception as exc:
        error = UpstreamError(f"the upstream MCP server did not list its tools: {_innermost(exc)}")
        error.__cause__ = exc
        return error
    return None
