"""Agents from the user's own package: named by AGENT_MODULES or offered by an entry point."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.domain.agents import load_agents
from bot.domain.errors import ConfigError
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.scenarios.processes import run_bot

AGENT = """
from pydantic import BaseModel
from bot.domain.agents import Agent
from bot.domain.policy import ApprovalPolicy
from bot.domain.tools import Tool, ToolContext


class Invoice(BaseModel):
    customer: str
    amount: int


async def send(args: Invoice, ctx: ToolContext) -> str:
    return f"sent {args.amount} to {args.customer}"


def offline(request):
    from bot.domain.model import ModelCall
    if any(b.tag == "tool_result" for b in request.blocks):
        return [ModelCall("reply", {"text": "invoice sent", "final": True})]
    return [ModelCall("send_invoice", {"customer": "acme", "amount": 90})]


AGENT = Agent(
    name="{name}",
    prompt="You send invoices.",
    tools=(Tool("send_invoice", "Send an invoice.", Invoice, send,
                approval=ApprovalPolicy(approvers=("alice",))),),
    offline=offline,
)
"""


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for the user's code; what it imported is forgotten after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_package_outside_agents_is_loaded_by_the_setting(site: Path) -> None:
    write(site, "acme_agents/__init__.py", "")
    write(site, "acme_agents/billing/__init__.py", AGENT.replace("{name}", "billing"))
    write(site, "acme_agents/helpers.py", "X = 1\n")  # a module without AGENT is no agent
    assert list(load_agents(["acme_agents"])) == ["billing"]
    write(site, "one_agent.py", AGENT.replace("{name}", "solo"))
    assert sorted(load_agents(["acme_agents", "one_agent", "agents"])) == [
        "billing", "deploy", "refunds", "solo",
    ]  # fmt: skip


async def test_a_users_agent_runs_the_whole_cycle(
    site: Path, redis_server: EmbeddedRedis, redis: Redis
) -> None:
    write(site, "acme_agents/__init__.py", "")
    write(site, "acme_agents/billing/__init__.py", AGENT.replace("{name}", "billing"))
    async with Harness(redis_server.url, agents=load_agents(["acme_agents"])) as h:
        r = await h.api.post("/threads", json={"agent": "billing", "user": "bo", "text": "bill"})
        await h.drain()
        (req,) = (await h.api.get(f"/threads/{r.json()['id']}")).json()["open_requests"]
        assert req["tool"] == "send_invoice" and req["approvers"] == ["alice"]
        body = {"decision": "approve", "by": "alice"}
        assert (await h.api.post(f"/requests/{req['id']}/decision", json=body)).status_code == 200
        await h.drain()
        done = (await h.api.get(f"/threads/{r.json()['id']}")).json()
        assert done["status"] == "done" and done["last_reply"] == "invoice sent"


def test_an_entry_point_offers_an_agent(site: Path) -> None:
    write(site, "acme_plugin.py", AGENT.replace("{name}", "plugged"))
    write(
        site,
        "acme_plugin-1.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n",
    )
    write(
        site,
        "acme_plugin-1.0.dist-info/entry_points.txt",
        "[greenlight.agents]\nplugged = acme_plugin:AGENT\n",
    )
    assert list(load_agents([])) == ["plugged"]


PKG = {"pkg/__init__.py": ""}
BROKEN = {
    "missing": ({}, ["nope_agents"], "AGENT_MODULES names 'nope_agents', which does not import"),
    "no AGENT": ({"lonely.py": "X = 1\n"}, ["lonely"], "lonely must define AGENT = Agent(...)"),
    "not an Agent": ({"wrong.py": "AGENT = 1\n"}, ["wrong"], "wrong must define AGENT.*found int"),
    "sub without AGENT": ({**PKG, "pkg/half/__init__.py": "X = 1\n"}, ["pkg"], "pkg.half must"),
    "sub fails": ({**PKG, "pkg/bad/__init__.py": "import nothing\n"}, ["pkg"], "pkg.bad does not"),
    "same name": (
        {"dup.py": AGENT.replace("{name}", "deploy")},
        ["agents", "dup"],
        "two agents are named 'deploy'",
    ),
}


@pytest.mark.parametrize(("files", "modules", "says"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_source_stops_start_up_naming_what_is_wrong(
    site: Path, files: dict[str, str], modules: list[str], says: str
) -> None:
    for relative, text in files.items():
        write(site, relative, text)
    with pytest.raises(ConfigError, match=says.replace("(...)", r"\(\.\.\.\)")):
        load_agents(modules)


def test_greenlight_run_exits_2_for_an_agent_module_that_is_missing(tmp_path: Path) -> None:
    env = {"AGENT_MODULES": '["acme_nowhere"]', "DATA_DIR": str(tmp_path / "data")}
    done = run_bot("run", tmp_path, env)
    assert done.returncode == 2, done.stderr
    assert "AGENT_MODULES names 'acme_nowhere', which does not import" in done.stderr
    assert "Traceback" not in done.stderr
