"""Approvers that resolve to nobody never mean "anyone" (invariant 10)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.agents import load_agents
from bot.domain.errors import ConfigError
from bot.domain.events import SYSTEM, ApprovalRequested, Origin, ToolCall
from bot.domain.policy import ANYONE, ApprovalPolicy, Groups, check_policies, is_allowed
from bot.models.offline import OfflineModel
from bot.runtime import build_runtime
from bot.serve import groups_from, policies_from
from bot.storage.embedded import EmbeddedRedis
from tests.doubles import Ledger, make_agent
from tests.harness import Harness
from tests.harness import test_settings as settings_with
from tests.scenarios.test_rest import assert_error, launch


def groups(**members: list[str]) -> Groups:
    return Groups({k: tuple(v) for k, v in members.items()})


@pytest.mark.parametrize(
    ("members", "wrong"),
    [
        ({}, "'deployers' is not in APPROVER_GROUPS"),  # unset, as a fresh install has it
        ({"deployers": [], "finance": ["fin"]}, "'deployers' is empty"),  # as .env.example had it
        ({"deployer": ["bob"], "finance": ["fin"]}, "'deployers' is not in APPROVER_GROUPS"),
    ],
)
def test_start_up_names_the_agent_tool_and_group_that_resolve_to_nobody(
    members: dict[str, list[str]], wrong: str
) -> None:
    with pytest.raises(ConfigError, match=f"agent 'deploy', tool 'deploy': approver group {wrong}"):
        check_policies(load_agents(), groups(**members))


def test_build_runtime_refuses_the_same(redis: Redis) -> None:
    agents = load_agents()
    with pytest.raises(ConfigError, match="tool 'refund': approver group 'finance'"):
        build_runtime(redis, agents, OfflineModel(agents), groups=groups(deployers=["bob"]))


def test_a_policy_naming_nobody_is_refused_and_anyone_is_explicit() -> None:
    silent = {"bank": make_agent(Ledger(), policy=ApprovalPolicy())}
    with pytest.raises(ConfigError, match="names no approver"):
        check_policies(silent, Groups())
    explicit = {"bank": make_agent(Ledger(), policy=ApprovalPolicy(approvers=(ANYONE,)))}
    assert check_policies(explicit, Groups()) == []


def test_escalating_to_an_empty_group_is_refused() -> None:
    policy = ApprovalPolicy(
        approvers=("bob",),
        on_expiry="escalate",  # type: ignore[arg-type]
        escalate_to=("group:oncall",),
    )
    agents = {"bank": make_agent(Ledger(), policy=policy)}
    with pytest.raises(ConfigError, match=r"tool 'transfer' \(escalate_to\): .*'oncall'"):
        check_policies(agents, groups(oncall=[]))


def test_an_empty_group_allowed_on_purpose_needs_admins_and_warns() -> None:
    allowed = Groups({"deployers": (), "finance": ("fin",)}, allow_empty=frozenset({"deployers"}))
    with pytest.raises(ConfigError, match="ADMINS names nobody"):
        check_policies(load_agents(), allowed)
    with_admins = Groups(allowed.members, allow_empty=allowed.allow_empty, admins=("root",))
    warnings = check_policies(load_agents(), with_admins)
    assert warnings and all("group:deployers is empty" in w for w in warnings)
    assert all("only ADMINS (root) can decide" in w for w in warnings)
    assert with_admins.expand(("group:deployers",)) == ["root"]


def test_an_empty_list_allows_nobody() -> None:
    mallory = SYSTEM.model_copy(update={"channel": "api", "id": "mallory"})
    assert not is_allowed(mallory, [])
    assert is_allowed(mallory, [ANYONE])


# --- through the REST API -------------------------------------------------------------------


@pytest.fixture
async def admins_only(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = settings_with(
        approver_groups={"deployers": [], "finance": ["fin"]},
        approver_groups_allow_empty=["deployers"],
        admins=["root"],
    )
    async with Harness(redis_server.url, settings=settings) as harness:
        yield harness


async def test_with_an_empty_group_allowed_only_admins_decide(
    admins_only: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = admins_only
    with caplog.at_level(logging.WARNING):
        tid, req = await launch(h)
    assert req["approvers"] == ["root"]
    assert any("group:deployers is empty" in r.getMessage() for r in caplog.records)

    before = await h.thread(tid)
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "mallory"}
    )
    assert_error(r, 403, "forbidden", "mallory may not decide")
    assert (await h.thread(tid)).version == before.version

    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "root"}
    )
    assert r.status_code == 200


async def test_a_stored_request_with_no_approvers_is_decided_by_nobody(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    """A request recorded with an empty approver list (as releases before this fix stored
    one for an empty group) is refused to everyone, and nothing changes."""
    async with Harness(redis_server.url) as h:
        await _decided_by_nobody(h)


async def _decided_by_nobody(h: Harness) -> None:
    ann = SYSTEM.model_copy(update={"channel": "api", "id": "ann"})
    got = await h.rt.inbox.message(agent="deploy", text="hi", by=ann, origin=Origin(channel="api"))
    tid, state = got.thread.id, got.thread
    call = ToolCall(turn="t1", call_id="c1", tool="deploy", args={"service": "api"})
    asked = ApprovalRequested(
        request_id=f"{tid}.r0000beef",
        call_id="c1",
        tool="deploy",
        args=call.args,
        args_hash="0" * 16,
        requester=SYSTEM,
        approvers=[],
    )
    state = await h.rt.log.append(state, [call, asked], enqueue=False)
    for who in ("mallory", "bob", "ann"):
        body: dict[str, Any] = {"decision": "approve", "by": who}
        r = await h.api.post(f"/requests/{asked.request_id}/decision", json=body)
        assert_error(r, 403, "forbidden", "may not decide")
    assert (await h.thread(tid)).version == state.version


def test_a_named_policy_for_agents_elsewhere_that_resolves_to_nobody_stops_start_up() -> None:
    settings = settings_with(
        approval_policies={"nightly": {"approvers": ["group:ghosts"]}},
        approver_groups={"deployers": ["bob"], "finance": ["bob"]},
    )
    with pytest.raises(ConfigError, match="APPROVAL_POLICIES 'nightly': approver group 'ghosts'"):
        policies_from(settings, groups_from(settings))
