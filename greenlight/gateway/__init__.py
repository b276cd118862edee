"""The approval gateway for any MCP server: ``greenlight mcp-gateway`` (see ``server``)."""

from __future__ import annotations

from greenlight.gateway.policy import Policy, PolicyError, load
from greenlight.gateway.record import CallLog, Entry
from greenlight.gateway.server import Gateway, serve

__all__ = ["CallLog", "Entry", "Gateway", "Policy", "PolicyError", "load", "serve"]
