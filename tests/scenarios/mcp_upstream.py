"""A small upstream MCP server for the gateway's tests: over stdio as a script, or built
in process (``build``) to serve over streamable HTTP.

    python tests/scenarios/mcp_upstream.py calls.jsonl

Every call it receives is appended to the file as one JSON line, so a test can see what
reached it, and how many times.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer


def build(record: Path) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("files", instructions="A tiny file server for tests.")

    def received(tool: str, arguments: dict[str, object]) -> None:
        with record.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")

    @server.tool()
    def read_file(path: str) -> str:
        """Read a file."""
        received("read_file", {"path": path})
        return f"contents of {path}"

    @server.tool()
    def delete_file(path: str, force: bool = False) -> str:
        """Delete a file, for good."""
        received("delete_file", {"path": path, "force": force})
        return f"deleted {path}"

    @server.tool()
    def deploy(version: str, replicas: int = 3) -> str:
        """Deploy a version."""
        received("deploy", {"version": version, "replicas": replicas})
        return f"deployed {version} x{replicas}"

    @server.tool()
    def environment() -> list[str]:
        """The names of this server's environment variables."""
        return sorted(os.environ)

    return server


if __name__ == "__main__":
    build(Path(sys.argv[1])).run("stdio")
