"""The approval gateway: ``greenlight mcp-gateway`` run as a real subprocess, driven by the
official MCP client over stdio, in front of a small upstream MCP server (a script that
records every call it receives), asking a real Greenlight over its approvals API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.validate import MAX_JSON
from bot.storage.embedded import EmbeddedRedis
from tests.harness import DEMO_GROUPS, Harness
from tests.harness import test_settings as settings_with
from tests.scenarios.mcp_upstream import build
from tests.scenarios.test_mcp import agent_token, decide, open_request

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).with_name("mcp_upstream.py")
TOOLS = {
    *("read_file", "write_file", "edit_file", "create_directory", "move_file", "delete_file"),
    *("deploy", "environment", "learn"),
}
POLICY = """
[[gate]]
name = "deploys"
tools = ["deploy"]
approvers = ["bob"]
expires_in = 600

[[gate]]
name = "deletes of data"
tools = ["delete_*"]
when = [{ arg = "path", glob = "/data/*" }]
policy = "default"
"""


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = settings_with(
        approver_groups={**DEMO_GROUPS, "ops": ["bob", "carol"], "leads": ["dan"]},
        approval_policies={
            "default": {"approvers": ["bob"]},
            "prod-changes": {"approvers": ["group:ops"], "min_approvals": 2},
        },
    )
    clock = ManualClock(time.time())  # moved to expire a request
    async with Harness(redis_server.url, settings=settings, clock=clock) as it:
        yield it


class Files:
    """The test's files: the policy, the gateway's call log, the upstream's record."""

    def __init__(self, root: Path) -> None:
        self.policy = root / "gates.toml"
        self.policy.write_text(POLICY)
        self.log = root / "log" / "calls.jsonl"  # a directory not made yet: the gateway makes it
        self.record = root / "upstream.jsonl"

    def upstream(self) -> str:
        return f"{sys.executable} {UPSTREAM} {self.record}"

    def received(self) -> list[dict[str, Any]]:
        """What reached the upstream server, in order."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
async def token(h: Harness) -> str:
    return await agent_token(h)


@asynccontextmanager
async def gateway(
    h: Harness,
    files: Files,
    token: str,
    *,
    upstream: str | None = None,
    wait: str = "20",
    message_handler: Any = None,
) -> AsyncIterator[ClientSession]:
    """The gateway as a subprocess, in front of the stdio upstream (or ``upstream``)."""
    upstream = upstream or files.upstream()
    server = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "bot", "mcp-gateway", "--url", h.url, "--upstream", upstream),
            *("--policy", str(files.policy), "--log", str(files.log), "--wait", wait),
        ],
        env={**os.environ, "API_TOKEN": token},
    )
    async with (
        stdio_client(server) as (read, write),
        ClientSession(read, write, message_handler=message_handler) as s,
    ):
        await s.initialize()
        yield s


@asynccontextmanager
async def upstream_directly(files: Files) -> AsyncIterator[ClientSession]:
    server = StdioServerParameters(command=sys.executable, args=[str(UPSTREAM), str(files.record)])
    async with stdio_client(server) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


async def asked(h: Harness) -> int:
    """How many approvals the gateway asked for (each is a thread of its agent)."""
    r = await h.api.get("/threads", params={"agent": "mcp-gateway"})
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


@asynccontextmanager
async def served_over_http(files: Files) -> AsyncIterator[str]:
    """The upstream served over streamable HTTP on loopback: its URL."""
    app = build(files.record).streamable_http_app(stateless_http=True, json_response=True)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await serving


async def decided(
    h: Harness, s: ClientSession, tool: str, arguments: dict[str, Any], *how: str, **kw: Any
) -> tuple[str, Any]:
    """Call a gated tool, decide the request it opens over REST: its id and the result."""
    call = asyncio.create_task(s.call_tool(tool, arguments))
    rid = await open_request(h)
    await decide(h, rid, *how, **kw)
    return rid, await asyncio.wait_for(call, 15)


def text(result: Any) -> str:
    return "".join(c.text for c in result.content)


async def test_tools_are_listed_unchanged_and_an_ungated_call_passes_straight_through(
    h: Harness, files: Files, token: str
) -> None:
    async with upstream_directly(files) as direct:
        expected = [t.model_dump() for t in (await direct.list_tools()).tools]
    async with gateway(h, files, token) as s:
        listed = [t.model_dump() for t in (await s.list_tools()).tools]
        assert listed == expected
        assert {t["name"] for t in listed} == TOOLS
        out = await s.call_tool("read_file", {"path": "/etc/motd"})
        assert (out.is_error, text(out)) == (False, "contents of /etc/motd")
        # A delete outside /data matches no gate's predicate: it passes too.
        out = await s.call_tool("delete_file", {"path": "/tmp/scratch"})
        assert (out.is_error, text(out)) == (False, "deleted /tmp/scratch")
        # The upstream runs with the gateway's environment, less its Greenlight token.
        seen = (await s.call_tool("environment", {})).structured_content
        assert seen is not None and "PATH" in seen["result"]
        assert "API_TOKEN" not in seen["result"]
    assert [c["tool"] for c in files.received()] == ["read_file", "delete_file"]
    assert await asked(h) == 0
    assert [(e["tool"], e["outcome"], e["gate"]) for e in files.logged()] == [
        ("read_file", "forwarded", None),
        ("delete_file", "forwarded", None),
        ("environment", "forwarded", None),
    ]


async def test_a_gated_call_waits_for_approval_and_is_forwarded_once_with_edited_arguments(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token) as s:
        call = asyncio.create_task(s.call_tool("deploy", {"version": "1.5.0"}))
        rid = await open_request(h)
        asked = (await h.api.get(f"/approvals/{rid}")).json()
        assert (asked["tool"], asked["arguments"]) == ("deploy", {"version": "1.5.0"})
        assert asked["approvers"] == ["bob"]
        assert files.received() == []  # the upstream has not seen it while people decide
        await decide(h, rid, edited_args={"version": "1.5.1", "replicas": 2})
        out = await asyncio.wait_for(call, 15)
        assert (out.is_error, text(out)) == (False, "deployed 1.5.1 x2")

        # The same call again is a new call: it asks anew, and this time as asked.
        rid2, out = await decided(h, s, "deploy", {"version": "1.5.0"})
        assert rid2 != rid
        assert text(out) == "deployed 1.5.0 x3"
    assert files.received() == [
        {"tool": "deploy", "arguments": {"version": "1.5.1", "replicas": 2}},
        {"tool": "deploy", "arguments": {"version": "1.5.0", "replicas": 3}},
    ]
    first, second = files.logged()
    assert (first["outcome"], first["request_id"], first["edited"]) == ("forwarded", rid, True)
    assert (first["gate"], first["by"], first["arguments"]["version"]) == (
        "deploys",
        ["api:bob"],
        "1.5.1",
    )
    assert (second["request_id"], second["edited"]) == (rid2, False)


async def test_a_rejected_call_returns_the_reason_and_never_reaches_the_upstream(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token) as s:
        delete = {"path": "/data/orders.db"}
        why = "that is the production database"
        rid, out = await decided(h, s, "delete_file", delete, "reject", reason=why)
    assert out.is_error
    assert "rejected" in text(out) and "that is the production database" in text(out)
    assert files.received() == []
    (entry,) = files.logged()
    assert (entry["outcome"], entry["request_id"], entry["gate"]) == (
        "rejected",
        rid,
        "deletes of data",
    )
    assert entry["reason"] == "that is the production database"


async def test_an_expired_call_returns_an_error_and_never_reaches_the_upstream(
    h: Harness, files: Files, token: str
) -> None:
    assert isinstance(h.clock, ManualClock)
    async with gateway(h, files, token) as s:
        call = asyncio.create_task(s.call_tool("deploy", {"version": "3.0.0"}))
        rid = await open_request(h)
        h.clock.advance(601)  # the gate's expires_in is 600 s
        await h.drain()
        out = await asyncio.wait_for(call, 15)
    assert out.is_error and "expired" in text(out), text(out)
    assert files.received() == []
    (entry,) = files.logged()
    assert (entry["outcome"], entry["request_id"]) == ("expired", rid)


async def still_waiting(h: Harness, s: ClientSession, arguments: dict[str, Any]) -> str:
    """Call deploy through the gateway, whose wait runs out first: the request it waits on."""
    out = await s.call_tool("deploy", arguments)
    rid = await open_request(h)
    assert out.is_error and f"still waiting for approval {rid}" in text(out), text(out)
    return rid


async def test_a_wait_that_runs_out_says_pending_and_the_same_call_again_keeps_waiting(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token, wait="1") as s:
        rid = await still_waiting(h, s, {"version": "4.0.0"})
        await decide(h, rid)
        out = await s.call_tool("deploy", {"version": "4.0.0"})
        assert text(out) == "deployed 4.0.0 x3"
    assert await asked(h) == 1
    assert len(files.received()) == 1
    assert [(e["outcome"], e["request_id"]) for e in files.logged()] == [
        ("pending", rid),
        ("forwarded", rid),
    ]


async def test_a_call_too_large_to_be_approved_is_refused_saying_so_and_the_limit(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token) as s:
        out = await s.call_tool("deploy", {"version": "x" * MAX_JSON})
    assert out.is_error
    assert "too large to be approved" in text(out), text(out)
    assert f"over the limit of {MAX_JSON}; the call was not made" in text(out), text(out)
    assert "could not be asked for" not in text(out)
    assert files.received() == []
    assert await asked(h) == 0
    (entry,) = files.logged()
    assert (entry["outcome"], entry["gate"]) == ("error", "deploys")


async def test_an_upstream_over_streamable_http_is_gated_the_same(
    h: Harness, files: Files, token: str
) -> None:
    async with served_over_http(files) as url, gateway(h, files, token, upstream=url) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names == TOOLS
        assert text(await s.call_tool("read_file", {"path": "/a"})) == "contents of /a"
        _, out = await decided(h, s, "delete_file", {"path": "/data/a"}, "reject", reason="keep")
    assert out.is_error and "keep" in text(out)
    assert files.received() == [{"tool": "read_file", "arguments": {"path": "/a"}}]


async def test_a_restarted_gateway_waits_on_the_same_request(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token) as s:
        first = asyncio.create_task(s.call_tool("deploy", {"version": "2.0.0"}))
        rid = await open_request(h)
        first.cancel()
    async with gateway(h, files, token) as s:
        call = asyncio.create_task(s.call_tool("deploy", {"version": "2.0.0"}))
        await decide(h, rid)
        out = await asyncio.wait_for(call, 15)
        assert text(out) == "deployed 2.0.0 x3"
    assert await asked(h) == 1  # one request: the restarted gateway waited on it
    assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "approved"
    assert files.received() == [
        {"tool": "deploy", "arguments": {"version": "2.0.0", "replicas": 3}}
    ]


async def test_a_gate_tightened_while_a_call_waits_asks_anew_under_the_new_policy(
    h: Harness, files: Files, token: str
) -> None:
    async with gateway(h, files, token, wait="1") as s:
        first = await still_waiting(h, s, {"version": "7.0.0"})
    assert '"bob"]\nexpires_in' in files.policy.read_text()
    files.policy.write_text(
        files.policy.read_text().replace(
            '"bob"]\nexpires_in', '"bob", "carol"]\nmin_approvals = 2\nexpires_in', 1
        )
    )
    async with gateway(h, files, token, wait="1") as s:
        out = await s.call_tool("deploy", {"version": "7.0.0"})
    assert out.is_error and "still waiting for approval" in text(out), text(out)
    assert first not in text(out)  # not the request asked under one approver
    assert await asked(h) == 2
    r = await h.api.get("/requests")
    (second,) = [i for i in r.json()["items"] if i["id"] != first]
    shown = (await h.api.get(f"/approvals/{second['id']}")).json()
    assert (shown["approvers"], shown["min_approvals"]) == (["bob", "carol"], 2)
    assert files.received() == []


def docs_policy() -> str:
    """The policy file docs/gateway.md shows, as it is written there."""
    docs = (ROOT / "docs" / "gateway.md").read_text()
    return docs.split("```toml\n", 1)[1].split("```", 1)[0]


async def test_the_docs_policy_gates_writes_and_moves_into_and_out_of_prod_however_spelled(
    h: Harness, files: Files, token: str
) -> None:
    files.policy.write_text(docs_policy())
    gated = [
        ("write_file", {"path": "/srv/data//prod/a", "content": "x"}),
        ("write_file", {"path": "/srv/data/tmp/../prod/b", "content": "x"}),
        ("move_file", {"source": "/srv/data/./prod/c", "destination": "/srv/data/tmp/c"}),
        ("move_file", {"source": "/srv/data/tmp/d", "destination": "/srv/data/prod/d"}),
        ("move_file", {"source": "/srv/data/prod", "destination": "/srv/data/old"}),
    ]
    passing = [
        ("write_file", {"path": "/srv/data/tmp/e", "content": "x"}),
        ("move_file", {"source": "/srv/data/tmp/f", "destination": "/srv/data/tmp/./g"}),
    ]
    async with gateway(h, files, token, wait="0.2") as s:
        for tool, arguments in gated:
            out = await s.call_tool(tool, arguments)
            assert out.is_error and "still waiting for approval" in text(out), (tool, text(out))
        for tool, arguments in passing:
            out = await s.call_tool(tool, arguments)
            assert not out.is_error, text(out)
    assert files.received() == [{"tool": t, "arguments": a} for t, a in passing]
    assert await asked(h) == len(gated)
    assert [(e["tool"], e["outcome"], e["gate"]) for e in files.logged()] == [
        ("write_file", "pending", "changes in production"),
        ("write_file", "pending", "changes in production"),
        ("move_file", "pending", "moves out of production"),
        ("move_file", "pending", "moves into production"),
        ("move_file", "pending", "moves out of production"),
        ("write_file", "forwarded", None),
        ("move_file", "forwarded", None),
    ]


def refused_start(files: Files, upstream: str | None = None) -> str:
    """Start the gateway with the test's policy (and the stand-in upstream, or
    ``upstream``), expecting it to stop at once (exit status 2): what it said, on one line."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "mcp-gateway"),
            *("--upstream", upstream or files.upstream()),
            *("--policy", str(files.policy), "--log", str(files.log)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "API_TOKEN": "unused"},
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    return " ".join(run.stderr.split())


def test_a_test_of_an_argument_a_gated_tool_does_not_take_stops_start_up(files: Files) -> None:
    """The docs' example as it was: move_file takes source and destination, not path, so
    the gate would never have stopped a move."""
    files.policy.write_text(
        '[[gate]]\nname = "writes under /srv/data/prod"\n'
        'tools = ["write_file", "move_*"]\n'
        'when = [{ arg = "path", glob = "/srv/data/prod/*" }]\napprovers = ["bob"]\n'
    )
    assert (
        "gate 'writes under /srv/data/prod' tests argument 'path', which tool 'move_file' "
        "does not take (it takes destination, source)"
    ) in refused_start(files)
    assert files.received() == []


def test_a_gate_naming_a_tool_the_upstream_does_not_list_stops_start_up(files: Files) -> None:
    """A misspelled tool name: the gate would guard nothing, and the deletes pass."""
    files.policy.write_text(
        POLICY + '\n[[gate]]\nname = "writes"\ntools = ["write_file", "delete_fiel"]\n'
    )
    said = refused_start(files)
    assert "gate 'writes': 'delete_fiel'" in said, said
    assert "The upstream lists create_directory, delete_file, deploy, edit_file," in said, said
    assert files.received() == []


async def test_a_gate_on_an_argument_being_absent_starts_and_gates_the_calls_without_it(
    h: Harness, files: Files, token: str
) -> None:
    """``exists = false`` holds exactly when the argument is missing: over tools that do
    not take it, the gate gates every call (start-up refused it as a misfit)."""
    files.policy.write_text(
        '[[gate]]\nname = "not a dry run"\ntools = ["*"]\n'
        'when = [{ arg = "dry_run", exists = false }]\napprovers = ["bob"]\n'
    )
    async with gateway(h, files, token) as s:
        _, out = await decided(h, s, "delete_file", {"path": "/tmp/a"}, "reject", reason="no")
    assert out.is_error and "rejected" in text(out), text(out)
    assert files.received() == []
    assert [(e["outcome"], e["gate"]) for e in files.logged()] == [("rejected", "not a dry run")]


async def test_a_tool_learned_later_that_a_gate_does_not_fit_is_refused_naming_why(
    h: Harness, files: Files, token: str
) -> None:
    files.policy.write_text(
        POLICY + '\n[[gate]]\nname = "echoes"\ntools = ["echo_*"]\ntools_added_later = true\n'
        'when = [{ arg = "path", glob = "/data/*" }]\n'
    )
    async with gateway(h, files, token) as s:
        assert not (await s.call_tool("learn", {"name": "echo_back"})).is_error
        out = await s.call_tool("echo_back", {"text": "/data/a"})
    assert out.is_error, text(out)
    assert "the call was not made" in text(out)
    assert "gate 'echoes' tests argument 'path', which tool 'echo_back' does not take" in text(out)
    assert await asked(h) == 0
    assert files.logged()[-1]["outcome"] == "error"


def test_a_bad_policy_file_stops_start_up_naming_what_is_wrong(files: Files) -> None:
    files.policy.write_text(
        '[[gate]]\ntools = ["deploy"]\nwhen = [{ arg = "env", glob = "prod*", equals = 1 }]\n'
    )
    said = refused_start(files, "true")
    assert "gate[1].when[1]" in said and "exactly one test" in said
    assert "glob, equals" in said or "equals, glob" in said


@pytest.mark.parametrize(
    ("upstream", "says"),
    [("no-such-server-xyz", "No such file or directory"), ("true", "Connection closed")],
)
def test_an_upstream_that_does_not_start_or_answer_stops_start_up(
    files: Files, upstream: str, says: str
) -> None:
    said = refused_start(files, upstream)
    assert "the upstream MCP server did not start or answer" in said and says in said


async def test_resources_and_prompts_pass_through_and_a_changed_tool_list_comes_through(
    h: Harness, files: Files, token: str
) -> None:
    changed = asyncio.Event()

    async def seen(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with upstream_directly(files) as direct:
        expected = (
            await direct.list_resources(),
            await direct.list_resource_templates(),
            await direct.read_resource("file:///notes/todo"),
            await direct.list_prompts(),
            await direct.get_prompt("review", {"path": "/data/a.csv"}),
        )
    async with gateway(h, files, token, message_handler=seen) as s:
        got = (
            await s.list_resources(),
            await s.list_resource_templates(),
            await s.read_resource("file:///notes/todo"),
            await s.list_prompts(),
            await s.get_prompt("review", {"path": "/data/a.csv"}),
        )
        assert "echo_back" not in {t.name for t in (await s.list_tools()).tools}
        out = await s.call_tool("learn", {"name": "echo_back"})
        assert not out.is_error, out.content
        await asyncio.wait_for(changed.wait(), 10)  # the upstream's notification, forwarded
        assert "echo_back" in {t.name for t in (await s.list_tools()).tools}
        echoed = await s.call_tool("echo_back", {"text": "hi"})
    assert got == expected  # unchanged, field by field
    assert [r.uri for r in got[0].resources] == ["file:///readme"]
    assert got[2].contents[0].text == "note todo"  # type: ignore[union-attr]
    assert "Please review /data/a.csv." in str(got[4].messages[0].content)
    assert echoed.content[0].text == "hi"  # type: ignore[union-attr]
