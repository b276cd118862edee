"""Approvals and questions for agents that run elsewhere, over real HTTP against a real Redis.

The requests are created over REST and decided by REST and the CLI (Slack and email in
``tests/channels``); the agent reads the decision by long-poll and by signed callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.events import ContextFetched, ToolResult, ToolStarted
from bot.domain.reducer import Status
from bot.domain.validate import MAX_JSON
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from channels.webhook.signing import SIGNATURE_HEADER, verify
from tests.doubles import ScriptedModel, turns
from tests.harness import Harness
from tests.harness import test_settings as settings_with
from tests.standins.receiver import Receiver
from tests.test_cli import cli

GROUPS = {"deployers": ["ann", "bob"], "oncall": ["carol"], "finance": ["bob"], "nobody": []}
POLICIES = {
    "deploys": {"approvers": ["group:deployers"], "min_approvals": 2},
    "short": {
        "approvers": ["bob"],
        "expires_in": 60,
        "on_expiry": "escalate",
        "escalate_to": ["group:oncall"],
        "remind_before": [30],
    },
}
SCHEMA = {
    "type": "object",
    "properties": {
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["version"],
    "additionalProperties": False,
}
SECRET = "callback-secret"


def deploy(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent": "deployer",
        "requester": "robot",
        "tool": "deploy",
        "arguments": {"version": "1.5.0", "replicas": 3},
        "arguments_schema": SCHEMA,
        "summary": "Release 1.5.0 of the api",
        "context": "All checks passed on main.",
        "policy": {"approvers": ["group:deployers"]},
    }
    return {**body, **extra}


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel(turns())


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, model: ScriptedModel
) -> AsyncIterator[Harness]:
    settings = settings_with(
        approver_groups=GROUPS,
        approver_groups_allow_empty=["nobody"],
        admins=["root"],
        approval_policies=POLICIES,
        webhook_secret=SECRET,
    )
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=settings, model=model, clock=clock) as harness:
        yield harness


def clock_of(h: Harness) -> ManualClock:
    assert isinstance(h.clock, ManualClock)
    return h.clock


async def ask(h: Harness, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    r = await h.api.post("/approvals", json=body, headers=headers)
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


async def decide(h: Harness, rid: str, by: str, decision: str = "approve", **kw: Any) -> Any:
    return await h.api.post(
        f"/requests/{rid}/decision", json={"decision": decision, "by": by, **kw}
    )


async def test_rest_decision_reaches_the_long_poll_within_100ms_and_the_callback(
    h: Harness, model: ScriptedModel
) -> None:
    async with Receiver() as receiver:
        asked = await ask(h, deploy(callback_url=f"{receiver.url}/hooks"))
        rid = asked["id"]
        assert asked["status"] == "open" and asked["decision"] is None
        assert asked["approvers"] == ["ann", "bob"] and asked["requester"]["id"] == "robot"
        assert asked["summary"] == "Release 1.5.0 of the api\n\nAll checks passed on main."
        await h.drain()  # the cards, emails and callback of the request go out

        polling = asyncio.create_task(h.api.get(f"/approvals/{rid}", params={"wait": 10}))
        # A wait that runs out answers "still open", and the first poll is waiting by then.
        still = await h.api.get(f"/approvals/{rid}", params={"wait": 0.2})
        assert still.status_code == 200 and still.json()["status"] == "open"
        assert not polling.done()

        started = time.perf_counter()
        r = await decide(h, rid, "bob", reason="ship it")
        assert r.status_code == 200, r.text
        got = await polling
        latency = time.perf_counter() - started
        print(f"long-poll answered {latency * 1000:.1f} ms after the decision was sent")
        assert latency < 1.0
        out = got.json()
        assert (out["status"], out["decision"], out["reason"]) == ("approved", "approve", "ship it")
        assert [a["id"] for a in out["decided_by"]] == ["bob"] and out["decided_at"]
        assert (out["approvals"], out["min_approvals"]) == (1, 1)
        assert out["arguments"] == {"version": "1.5.0", "replicas": 3} and not out["edited"]

        await h.drain()
        sent = await h.wait_for(lambda: receiver.delivered(2))
        kinds = [r.json()["type"] for r in sent]
        assert kinds == ["approval_requested", "request_decided"]
        decided = sent[-1]
        assert decided.path == "/hooks"
        verify(SECRET, decided.headers[SIGNATURE_HEADER.lower()], decided.body, clock_of(h).now())
        data = decided.json()["data"]
        assert data["request_id"] == rid and data["decision"] == "approve"
        assert data["request_status"] == "approved" and data["args"]["version"] == "1.5.0"
        assert decided.json()["agent"] == "deployer"

    # The agent runs it elsewhere: the loop never ran the call, nor asked the model.
    events = await h.rt.log.events(asked["thread_id"])
    assert not [e for e in events if isinstance(e, ToolStarted | ToolResult | ContextFetched)]
    assert model.requests == []
    assert (await h.thread(asked["thread_id"])).status is Status.DONE


async def test_the_cli_decides_and_an_agent_may_not_approve_itself(h: Harness) -> None:
    asked = await ask(h, deploy(requester="bob"))
    r = await decide(h, asked["id"], "bob")
    assert r.status_code == 403 and "may not approve it themselves" in r.json()["detail"]

    done = await cli(h, "approve", asked["id"], "--reason", "fine by me", "--as", "ann")
    assert done.exit_code == 0, done.output
    out = (await h.api.get(f"/approvals/{asked['id']}")).json()
    assert (out["status"], out["decided_by"][0]["id"], out["reason"]) == (
        "approved",
        "ann",
        "fine by me",
    )


async def test_the_same_idempotency_key_twice_gives_one_request(h: Harness) -> None:
    first = await h.api.post("/approvals", json=deploy(), headers={"Idempotency-Key": "job-7"})
    again = await h.api.post("/approvals", json=deploy(), headers={"Idempotency-Key": "job-7"})
    other = await h.api.post("/approvals", json=deploy(), headers={"Idempotency-Key": "job-8"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    _, total = await h.rt.indexes.threads(agent="deployer", offset=0, limit=10)
    assert total == 2
    q1 = await h.api.post("/questions", json={"question": "go?"}, headers={"Idempotency-Key": "q"})
    q2 = await h.api.post("/questions", json={"question": "go?"}, headers={"Idempotency-Key": "q"})
    assert (q1.status_code, q2.status_code) == (201, 200) and q1.json()["id"] == q2.json()["id"]


async def test_a_key_reused_with_another_body_is_422_naming_it(h: Harness) -> None:
    key = {"Idempotency-Key": "release"}
    first = await h.api.post("/approvals", json=deploy(), headers=key)
    assert first.status_code == 201, first.text
    assert (await decide(h, first.json()["id"], "bob")).status_code == 200
    # Another action, or other approvers, under the same key: never the first one's approval.
    for other in [
        deploy(arguments={"version": "2.0.0", "replicas": 3}),
        deploy(tool="rollback"),
        deploy(policy={"approvers": ["bob"]}),
        deploy(requester="bob"),
    ]:
        r = await h.api.post("/approvals", json=other, headers=key)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_input"
        assert "Idempotency-Key 'release'" in r.json()["detail"]
    # The same body again (keys in another order, a default spelled out) is a retry; so is
    # one that shows it otherwise (a client restarted with a new summary) or would join
    # another open request (an open_key of another MCP session).
    same = {"metadata": {}, **dict(reversed(deploy().items()))}
    shown = deploy(summary="Ship 1.5.0", context=None, arguments_schema=None)
    for body in [same, shown, deploy(open_key="elsewhere")]:
        again = await h.api.post("/approvals", json=body, headers=key)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    _, total = await h.rt.indexes.threads(agent="deployer", offset=0, limit=10)
    assert total == 1

    q = {"Idempotency-Key": "q"}
    asked = await h.api.post("/questions", json={"question": "go?"}, headers=q)
    assert asked.status_code == 201, asked.text
    r = await h.api.post("/questions", json={"question": "stop?"}, headers=q)
    assert r.status_code == 422 and "Idempotency-Key 'q'" in r.json()["detail"], r.text


async def test_an_open_key_joins_the_open_request_and_asks_anew_once_it_is_closed(
    h: Harness, redis: Redis
) -> None:
    async def post(key: str | None = None, **extra: Any) -> tuple[int, str]:
        headers = {"Idempotency-Key": key} if key else {}
        body = deploy(open_key="deploy-1.5.0", **extra)
        r = await h.api.post("/approvals", json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.status_code, r.json()["id"]

    status, first = await post()
    assert status == 201
    assert await post() == (200, first)  # asked again while open: the same request
    assert await post("try-2") == (200, first)  # with a key of its own too
    assert (await decide(h, first, "bob")).status_code == 200
    assert await post("try-2") == (200, first)  # that key's retry: what its first try got
    status, second = await post()
    assert status == 201 and second != first  # decided: asked anew, never reused
    # The key is kept a day past the request's expiry (an hour), then Redis forgets it.
    digest = hashlib.sha256(b"approvals\x00deploy-1.5.0").hexdigest()
    assert 86_400_000 < await redis.pttl(keys.open_key(digest)) <= 90_000_000

    # Expired: asked anew too.
    status, third = await post(policy={"approvers": ["group:deployers"], "expires_in": 60})
    assert (status, third) == (200, second)  # still open: joined, whatever else it says
    clock_of(h).advance(3601)
    await h.drain()
    assert (await h.api.get(f"/approvals/{second}")).json()["status"] == "expired"
    status, fourth = await post()
    assert status == 201 and fourth not in (first, second)

    # Another agent's open_key of the same name is its own.
    r = await h.api.post("/tokens", json={"name": "other-bot", "scope": "agent"})
    other = {"Authorization": f"Bearer {r.json()['token']}"}
    body = deploy(open_key="deploy-1.5.0", requester=None)
    r = await h.http.post("/approvals", json=body, headers=other)
    assert r.status_code == 201 and r.json()["id"] != fourth, r.text


async def test_edited_arguments_are_validated_against_the_schema(h: Harness) -> None:
    asked = await ask(h, deploy())
    rid = asked["id"]
    bad = await decide(h, rid, "bob", edited_args={"version": "1.5.0", "replicas": 50})
    assert bad.status_code == 422, bad.text
    assert "edited arguments do not match the schema at /replicas" in bad.json()["detail"]
    assert "50 is greater than the maximum of 10" in bad.json()["detail"]
    assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "open"

    good = await decide(h, rid, "bob", edited_args={"version": "1.5.1", "replicas": 2})
    assert good.status_code == 200, good.text
    out = (await h.api.get(f"/approvals/{rid}", params={"wait": 1})).json()
    assert out["status"] == "approved" and out["edited"]
    assert out["arguments"] == {"version": "1.5.1", "replicas": 2}
    assert out["votes"][0]["edited"]


async def test_arguments_edited_down_to_none_are_what_the_agent_gets(h: Harness) -> None:
    # An approver may remove every argument the schema does not require: the agent must
    # run without them, not with the ones asked.
    optional = {"type": "object", "properties": {"force": {"type": "boolean"}}}
    asked = await ask(h, deploy(arguments={"force": True}, arguments_schema=optional))
    decided = await decide(h, asked["id"], "bob", edited_args={})
    assert decided.status_code == 200, decided.text
    out = (await h.api.get(f"/approvals/{asked['id']}", params={"wait": 1})).json()
    assert (out["status"], out["edited"], out["arguments"]) == ("approved", True, {})


async def test_a_request_only_its_requester_could_approve_is_refused(h: Harness) -> None:
    alone = deploy(requester="bob", policy={"approvers": ["bob"]})
    r = await h.api.post("/approvals", json=alone)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "the policy needs 1 approvals but names 0 approver(s): none besides the requester,"
        " bob, who may approve their own request only with allow_self_approval"
    )
    two = deploy(requester="bob", policy={"approvers": ["bob", "carol"], "min_approvals": 2})
    assert (
        "needs 2 approvals but names 1 approver(s): carol"
        in ((await h.api.post("/approvals", json=two)).json()["detail"])
    )
    assert await h.redis.keys("gl:*th_*") == []  # nothing was opened
    for body in (
        deploy(requester="bob", policy={"approvers": ["bob", "carol"]}),
        deploy(requester="bob", policy={"approvers": ["bob"], "allow_self_approval": True}),
        deploy(requester="bob", policy={"approvers": ["*"]}),
    ):
        r = await h.api.post("/approvals", json=body)
        assert r.status_code == 201, (body, r.text)


async def test_bad_requests_are_refused_naming_what_is_wrong(h: Harness) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (deploy(policy="nightly"), "unknown policy 'nightly'"),
        (deploy(policy={"approvers": ["group:ghosts"]}), "'ghosts' is not in APPROVER_GROUPS"),
        (deploy(policy={"approvers": ["ann"], "min_approvals": 2}), "needs 2 approvals"),
        (deploy(policy=None), "'default' in APPROVAL_POLICIES"),
        (deploy(arguments={"version": "latest"}), "arguments do not match arguments_schema"),
        (deploy(arguments_schema={"type": "frog"}), "arguments_schema is not a valid JSON"),
        (deploy(agent="no spaces please"), "agent"),
    ]
    for body, why in cases:
        r = await h.api.post("/approvals", json=body)
        assert r.status_code == 422, (body, r.text)
        assert why in r.json()["detail"], (why, r.json())

    unschemed = await ask(h, deploy(arguments_schema=None))
    r = await decide(h, unschemed["id"], "bob", edited_args={"version": "2.0.0"})
    assert r.status_code == 422 and "no arguments_schema" in r.json()["detail"]
    r = await h.api.post("/approvals", json=deploy(), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_a_schema_ref_is_never_fetched_and_one_that_does_not_resolve_is_422(
    h: Harness,
) -> None:
    async with Receiver() as inside:  # a URL of the network the server runs in
        remote = {"type": "object", "properties": {"version": {"$ref": f"{inside.url}/s"}}}
        nowhere = {"type": "object", "properties": {"version": {"$ref": "#/$defs/nowhere"}}}
        for schema, ref in [(remote, f"{inside.url}/s"), (nowhere, "#/$defs/nowhere")]:
            r = await h.api.post("/approvals", json=deploy(arguments_schema=schema))
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "invalid_input", r.text
            assert f"arguments_schema: $ref {ref!r} does not resolve" in r.json()["detail"]
            question = {"question": "Which version?", "answer_schema": schema}
            r = await h.api.post("/questions", json=question)
            assert r.status_code == 422, r.text
            assert f"answer_schema: $ref {ref!r} does not resolve" in r.json()["detail"]
        assert inside.requests == []
    # A $ref within the schema, and to the meta-schemas (known without fetching), resolve.
    local = {
        "type": "object",
        "properties": {"version": {"$ref": "#/$defs/version"}},
        "$defs": {"version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"}},
    }
    asked = await ask(h, deploy(arguments_schema=local))
    bad = await decide(h, asked["id"], "bob", edited_args={"version": "latest"})
    assert bad.status_code == 422 and "does not match" in bad.json()["detail"], bad.text
    meta = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    r = await h.api.post("/questions", json={"question": "A schema?", "answer_schema": meta})
    assert r.status_code == 201, r.text


async def test_arguments_too_large_to_be_approved_are_refused_saying_so_and_the_limit(
    h: Harness,
) -> None:
    big = {"version": "1.5.0", "notes": "x" * MAX_JSON}
    r = await h.api.post("/approvals", json=deploy(arguments=big, arguments_schema=None))
    assert r.status_code == 422, r.text
    out = r.json()
    assert (out["error"], out["limit"], out["size"]) == (
        "too_large",
        MAX_JSON,
        len(json.dumps(big)),
    )
    assert out["detail"] == (
        f"the arguments are too large to be approved: {len(json.dumps(big))} bytes of JSON, "
        f"over the limit of {MAX_JSON}"
    )
    # A schema too large is named as the schema, not as the arguments.
    schema = {"type": "object", "description": "x" * MAX_JSON}
    r = await h.api.post("/approvals", json=deploy(arguments_schema=schema))
    assert r.status_code == 422, r.text
    assert "arguments_schema are over" in r.json()["detail"], r.text
    _, total = await h.rt.indexes.threads(agent="deployer", offset=0, limit=10)
    assert total == 0


async def test_a_named_policy_needs_n_of_m(h: Harness) -> None:
    asked = await ask(h, deploy(policy="deploys"))
    assert (asked["min_approvals"], asked["approvers"]) == (2, ["ann", "bob"])
    assert (await decide(h, asked["id"], "ann")).status_code == 200
    one = (await h.api.get(f"/approvals/{asked['id']}")).json()
    assert (one["status"], one["approvals"]) == ("open", 1)
    assert (await decide(h, asked["id"], "bob")).status_code == 200
    both = (await h.api.get(f"/approvals/{asked['id']}")).json()
    assert (both["status"], both["approvals"], len(both["decided_by"])) == ("approved", 2, 2)


async def test_expiry_escalates_then_rejects_and_the_long_poll_sees_it(h: Harness) -> None:
    async with Receiver() as receiver:
        asked = await ask(h, deploy(policy="short", callback_url=receiver.url))
        rid = asked["id"]
        await h.drain()
        clock_of(h).advance(61)
        await h.drain()
        out = (await h.api.get(f"/approvals/{rid}")).json()
        assert out["status"] == "open" and out["approvers"] == ["carol"]
        assert out["expires_at"] > clock_of(h).now()
        r = await decide(h, rid, "bob")
        assert r.status_code == 403  # escalated away from bob

        clock_of(h).advance(61)
        await h.drain()
        out = (await h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
        assert (out["status"], out["decision"], out["reason"]) == ("expired", None, "expired")
        sent = await h.wait_for(lambda: receiver.delivered(3))
        assert [r.json()["type"] for r in sent] == [
            "approval_requested",
            "request_escalated",
            "request_expired",
        ]
    thread = await h.thread(asked["thread_id"])
    assert thread.status is Status.DONE and not thread.failed


async def test_questions_take_typed_answers(h: Harness, model: ScriptedModel) -> None:
    async def question(**body: Any) -> dict[str, Any]:
        r = await h.api.post("/questions", json=body)
        assert r.status_code == 201, r.text
        found: dict[str, Any] = r.json()
        return found

    async def answer(rid: str, text: str) -> Any:
        return await h.api.post(f"/requests/{rid}/answer", json={"text": text, "by": "ann"})

    yes_no = await question(question="Is the freeze over?", format="yes_no")
    assert (await answer(yes_no["id"], "perhaps")).status_code == 422
    assert (await answer(yes_no["id"], "Yes.")).status_code == 200
    got = (await h.api.get(f"/questions/{yes_no['id']}", params={"wait": 1})).json()
    assert (got["status"], got["answer"], got["value"]) == ("answered", "yes", True)
    assert got["answered_by"]["id"] == "ann"

    typed = await question(
        question="How many replicas?",
        answer_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        answerers=["group:oncall"],
    )
    assert (await answer(typed["id"], '{"n": 3}')).status_code == 403  # ann is not on call
    r = await h.api.post(
        f"/requests/{typed['id']}/answer", json={"text": '{"n": "three"}', "by": "carol"}
    )
    assert r.status_code == 422 and "'three' is not of type 'integer'" in r.json()["detail"]
    r = await h.api.post(
        f"/requests/{typed['id']}/answer", json={"text": '{ "n": 3 }', "by": "carol"}
    )
    assert r.status_code == 200
    got = (await h.api.get(f"/questions/{typed['id']}")).json()
    assert (got["answer"], got["value"]) == ('{"n":3}', {"n": 3})

    picked = await question(question="Which region?", format="choices", choices=["eu", "us"])
    assert (await answer(picked["id"], "US")).status_code == 200
    assert (await h.api.get(f"/questions/{picked['id']}")).json()["value"] == "us"

    lapsing = await question(question="Anyone there?", expires_in=30)
    clock_of(h).advance(31)
    await h.drain()
    got = (await h.api.get(f"/questions/{lapsing['id']}", params={"wait": 5})).json()
    assert got["status"] == "expired"
    thread = await h.thread(lapsing["thread_id"])
    assert thread.status is Status.DONE and not thread.failed
    assert model.requests == []


async def test_ids_of_the_other_kind_are_not_found(h: Harness) -> None:
    asked = await ask(h, deploy())
    q = (await h.api.post("/questions", json={"question": "why?"})).json()
    assert (await h.api.get(f"/questions/{asked['id']}")).status_code == 404
    assert (await h.api.get(f"/approvals/{q['id']}")).status_code == 404
    assert (await h.api.get("/approvals/th_0000.r1")).status_code == 404
    r = await h.api.get(f"/approvals/{asked['id']}", params={"wait": 61})
    assert r.status_code == 422


async def test_the_agent_that_asked_withdraws_its_request_and_the_long_poll_sees_it(
    h: Harness,
) -> None:
    asked = await ask(h, deploy())
    q = (await h.api.post("/questions", json={"question": "which region?"})).json()
    polling = asyncio.create_task(h.api.get(f"/approvals/{asked['id']}", params={"wait": 10}))
    assert (await h.api.post(f"/questions/{asked['id']}/cancel")).status_code == 404
    r = await h.api.post(f"/approvals/{asked['id']}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["decision"]) == ("cancelled", None)
    assert (await asyncio.wait_for(polling, 5)).json()["status"] == "cancelled"
    assert (await decide(h, asked["id"], "bob")).status_code == 409  # nobody decides it now
    again = await h.api.post(f"/approvals/{asked['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    r = await h.api.post(f"/questions/{q['id']}/cancel")
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")


async def test_the_loop_never_runs_an_external_call_even_of_a_hosted_tool_name(
    h: Harness, model: ScriptedModel
) -> None:
    body = deploy(
        agent="deploy",  # a hosted agent's name and tool: still nothing runs here
        arguments={"service": "api", "version": "1.5.0", "environment": "production"},
        arguments_schema=None,
    )
    asked = await ask(h, body)
    await h.drain()
    assert (await decide(h, asked["id"], "bob")).status_code == 200
    await h.drain()
    events = await h.rt.log.events(asked["thread_id"])
    assert [e.type for e in events] == [
        "thread_created",
        "tool_call",
        "approval_requested",
        "approval_decision",
    ]
    assert model.requests == []
    r = await h.api.post(
        f"/threads/{asked['thread_id']}/messages", json={"text": "and now?", "user": "ann"}
    )
    assert r.status_code == 409 and "runs elsewhere" in r.json()["detail"]
    listed = json.dumps((await h.api.get("/requests")).json())
    assert asked["id"] not in listed  # decided: no longer open
