"""A small upstream MCP server for the gateway's tests, run over stdio as a script.

    python tests/scenarios/mcp_upstream.py calls.jsonl

Every call it receives is appended to the file as one JSON line, so a test can see what
reached it, and how many times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

RECORD = Path(sys.argv[1])
server: MCPServer = MCPServer("files", instructions="A tiny file server for tests.")


def _record(tool: str, arguments: dict[str, object]) -> None:
    with RECORD.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    _record("read_file", {"path": path})
    return f"contents of {path}"


@server.tool()
def delete_file(path: str, force: bool = False) -> str:
    """Delete a file, for good."""
    _record("delete_file", {"path": path, "force": force})
    return f"deleted {path}"


@server.tool()
def deploy(version: str, replicas: int = 3) -> str:
    """Deploy a version."""
    _record("deploy", {"version": version, "replicas": replicas})
    return f"deployed {version} x{replicas}"


if __name__ == "__main__":
    server.run("stdio")
