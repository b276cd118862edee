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

from mcp.server.mcpserver import Context, MCPServer


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
    def write_file(path: str, content: str) -> str:
        """Write a file (as @modelcontextprotocol/server-filesystem names it)."""
        received("write_file", {"path": path, "content": content})
        return f"wrote {path}"

    @server.tool()
    def edit_file(path: str, edits: list[dict[str, str]], dryRun: bool = False) -> str:
        """Edit a file (as @modelcontextprotocol/server-filesystem names it)."""
        received("edit_file", {"path": path, "edits": edits, "dryRun": dryRun})
        return f"edited {path}"

    @server.tool()
    def create_directory(path: str) -> str:
        """Make a directory (as @modelcontextprotocol/server-filesystem names it)."""
        received("create_directory", {"path": path})
        return f"made {path}"

    @server.tool()
    def move_file(source: str, destination: str) -> str:
        """Move a file: no ``path``, a source and a destination."""
        received("move_file", {"source": source, "destination": destination})
        return f"moved {source} to {destination}"

    @server.tool()
    def deploy(version: str, replicas: int = 3) -> str:
        """Deploy a version."""
        received("deploy", {"version": version, "replicas": replicas})
        return f"deployed {version} x{replicas}"

    @server.tool()
    def environment() -> list[str]:
        """The names of this server's environment variables."""
        return sorted(os.environ)

    @server.tool()
    async def learn(name: str, ctx: Context) -> str:
        """Add a tool of this name (it echoes), and say the tool list changed."""

        def echo(text: str) -> str:
            return text

        server.add_tool(echo, name=name, description="Echo the text.")
        await ctx.session.send_tool_list_changed()
        return f"learned {name}"

    @server.resource("file:///readme", mime_type="text/plain")
    def readme() -> str:
        """The server's readme."""
        return "Files, served for tests."

    @server.resource("file:///notes/{name}")
    def note(name: str) -> str:
        """A note by name."""
        return f"note {name}"

    @server.prompt()
    def review(path: str) -> str:
        """Ask for a review of a file."""
        return f"Please review {path}."

    return server


if __name__ == "__main__":
    build(Path(sys.argv[1])).run("stdio")
