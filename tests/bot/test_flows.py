"""The loop end to end against a real Redis: every human-in-the-loop flow."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis

from bot.domain.clock import Clock, ManualClock
from bot.domain.errors import ConflictError, ForbiddenError, InvalidInputError
from bot.domain.events import (
    Actor,
    AgentReply,
    ApprovalDecision,
    Decision,
    HumanQuestion,
    Origin,
    Outcome,
    ToolResult,
)
from bot.domain.policy import ANYONE, ApprovalPolicy
from bot.domain.reducer import Status, ThreadState
from bot.runtime import Runtime, build_runtime
from bot.storage import keys
from tests.doubles import Ledger, ScriptedModel, c, make_agent, turns

ALICE = Actor(channel="api", id="alice")
BOB = Actor(channel="api", id="bob")
CAROL = Actor(channel="api", id="carol")
ORIGIN = Origin(channel="api")


def runtime(
    redis: Redis,
    model: ScriptedModel,
    ledger: Ledger,
    *,
    clock: Clock | None = None,
    **agent: object,
) -> Runtime:
    bank = make_agent(ledger, **agent)  # type: ignore[arg-type]
    return build_runtime(redis, {"bank": bank}, model, clock=clock)


async def start(rt: Runtime, text: str = "pay bob 10", by: Actor = ALICE) -> ThreadState:
    got = await rt.inbox.message(agent="bank", text=text, by=by, origin=ORIGIN)
    await rt.worker().burst()
    return await rt.log.load(got.thread.id)


def results(events: list[object]) -> list[ToolResult]:
    return [e for e in events if isinstance(e, ToolResult)]


async def test_full_cycle_approve_runs_the_tool_then_replies(redis: Redis) -> None:
    ledger = Ledger()
    model = ScriptedModel(turns(c("transfer", to="bob", amount=10)))
    rt = runtime(redis, model, ledger)

    state = await start(rt)
    assert state.status is Status.AWAITING_APPROVAL
    assert ledger.runs == []
    (req,) = state.open_requests()

    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.worker().burst()

    state = await rt.log.load(state.id)
    assert state.status is Status.DONE
    assert [r[0] for r in ledger.runs] == ["transfer"]
    events = await rt.log.events(state.id)
    assert results(events)[0].output == "sent 10 to bob"
    assert isinstance(events[-1], AgentReply) and events[-1].text == "done"
    # The model's second turn saw the tool's result.
    assert "sent 10 to bob" in model.requests[-1].context_text()


async def test_the_log_says_each_change_of_status_at_info_and_each_append_at_debug(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Operators follow a thread at INFO, a line a status (each line costs the worker
    about 5 % of a cycle's CPU); the appends between are there at DEBUG."""
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), Ledger())
    caplog.set_level(logging.DEBUG, logger="bot.storage.threadlog")
    state = await start(rt)
    (req,) = state.open_requests()
    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.worker().burst()

    lines = [r for r in caplog.records if state.id in r.getMessage()]
    info = [r.getMessage().split()[3:] for r in lines if r.levelno == logging.INFO]
    assert info == [
        ["running", "(+thread_created,user_message)"],
        ["awaiting_approval", "(+tool_call,approval_requested)"],
        ["running", "(+approval_decision)"],
        ["done", "(+agent_reply)"],
    ]
    debug = [r.getMessage().split()[3:] for r in lines if r.levelno == logging.DEBUG]
    assert debug == [["running", "(+tool_started)"], ["running", "(+tool_result)"]]


async def test_reject_gives_the_reason_to_the_model_and_never_runs(redis: Redis) -> None:
    ledger = Ledger()
    model = ScriptedModel(turns(c("transfer", to="bob", amount=10)))
    rt = runtime(redis, model, ledger)
    state = await start(rt)
    (req,) = state.open_requests()

    await rt.decisions.decide(req.id, Decision.REJECT, BOB, reason="not during the freeze")
    await rt.worker().burst()

    assert ledger.runs == []
    events = await rt.log.events(state.id)
    (rejected,) = results(events)
    assert rejected.outcome is Outcome.REJECTED
    context = model.requests[-1].context_text()
    assert "not during the freeze" in context
    assert "Do not retry the same call unchanged" in context


async def test_edited_arguments_run_and_invalid_edits_are_refused(redis: Redis) -> None:
    ledger = Ledger()
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), ledger)
    state = await start(rt)
    (req,) = state.open_requests()

    with pytest.raises(InvalidInputError, match="amount"):
        await rt.decisions.decide(
            req.id, Decision.APPROVE, BOB, edited_args={"to": "bob", "amount": "lots"}
        )
    assert (await rt.log.load(state.id)).version == state.version  # nothing recorded

    await rt.decisions.decide(req.id, Decision.APPROVE, BOB, edited_args={"to": "bob", "amount": 5})
    await rt.worker().burst()
    assert ledger.runs[0][1] == {"to": "bob", "amount": 5}
    decision = next(e for e in await rt.log.events(state.id) if isinstance(e, ApprovalDecision))
    assert decision.edited_args == {"to": "bob", "amount": 5}


async def test_ask_human_answer_continues_the_loop(redis: Redis) -> None:
    ledger = Ledger()
    model = ScriptedModel(turns(c("ask_human", question="Which Bob?"), c("echo", word="ok")))
    rt = runtime(redis, model, ledger)
    state = await start(rt)
    assert state.status is Status.AWAITING_HUMAN
    (req,) = state.open_requests()

    await rt.decisions.answer(req.id, "Bob Marley", CAROL)
    await rt.worker().burst()

    assert "Bob Marley" in model.requests[1].context_text()
    assert [r[0] for r in ledger.runs] == ["echo"]
    assert (await rt.log.load(state.id)).status is Status.DONE


async def test_two_gated_calls_in_one_turn_resume_when_both_are_decided(redis: Redis) -> None:
    ledger = Ledger()
    both = [*c("transfer", to="bob", amount=1), *c("transfer", to="carol", amount=2)]
    rt = runtime(redis, ScriptedModel(turns(both)), ledger)
    state = await start(rt)
    first, second = state.open_requests()

    await rt.decisions.decide(first.id, Decision.APPROVE, BOB)
    await rt.worker().burst()
    assert ledger.runs == []
    await rt.decisions.decide(second.id, Decision.REJECT, BOB, reason="no")
    await rt.worker().burst()
    assert [r[1]["to"] for r in ledger.runs] == [first.args["to"]]  # type: ignore[index]


async def test_n_of_m_and_no_self_approval(redis: Redis) -> None:
    ledger = Ledger()
    policy = ApprovalPolicy(approvers=("alice", "bob", "carol"), min_approvals=2)
    rt = runtime(
        redis, ScriptedModel(turns(c("transfer", to="x", amount=1))), ledger, policy=policy
    )
    state = await start(rt, by=ALICE)
    (req,) = state.open_requests()

    with pytest.raises(ForbiddenError, match="themselves"):
        await rt.decisions.decide(req.id, Decision.APPROVE, ALICE)
    with pytest.raises(ForbiddenError, match="may not decide"):
        await rt.decisions.decide(req.id, Decision.APPROVE, Actor(channel="api", id="mallory"))

    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.worker().burst()
    assert ledger.runs == []
    assert (await rt.log.load(state.id)).status is Status.AWAITING_APPROVAL
    with pytest.raises(ConflictError, match="already approved"):
        await rt.decisions.decide(req.id, Decision.APPROVE, BOB)

    await rt.decisions.decide(req.id, Decision.APPROVE, CAROL)
    await rt.worker().burst()
    assert len(ledger.runs) == 1


async def test_a_decision_redis_lost_does_not_stand_in_this_processs_copy(
    redis: Redis,
) -> None:
    # Redis restarted within its fsync window and lost a rejection this process recorded:
    # the next approver decides on what Redis has, and the thread goes on from there.
    ledger = Ledger()
    policy = ApprovalPolicy(approvers=("bob", "carol"))
    rt = runtime(
        redis, ScriptedModel(turns(c("transfer", to="x", amount=1))), ledger, policy=policy
    )
    state = await start(rt)
    (req,) = state.open_requests()
    await rt.decisions.decide(req.id, Decision.REJECT, BOB, reason="no")
    await redis.rpop(keys.log(state.id))  # type: ignore[misc]

    await rt.decisions.decide(req.id, Decision.APPROVE, CAROL)
    await rt.worker().burst()
    state = await rt.log.load(state.id)
    assert state.status is Status.DONE and len(ledger.runs) == 1


async def test_concurrent_decisions_exactly_one_wins(redis: Redis, redis_server: object) -> None:
    ledger = Ledger()
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), ledger)
    state = await start(rt)
    (req,) = state.open_requests()

    # Two approvers, each on their own connection and runtime, at the same moment.
    url = redis.connection_pool.connection_kwargs
    others = [Redis(host=url["host"], port=url["port"], decode_responses=True) for _ in range(2)]
    rts = [runtime(r, ScriptedModel(turns()), ledger) for r in others]

    async def decide(rt_: Runtime, who: Actor, d: Decision) -> str:
        try:
            await rt_.decisions.decide(req.id, d, who, reason="race")
        except ConflictError as exc:
            return f"lost: {exc.message}"
        return "won"

    outcomes = await asyncio.gather(
        decide(rts[0], BOB, Decision.APPROVE), decide(rts[1], CAROL, Decision.REJECT)
    )
    for r in others:
        await r.aclose()
    assert sorted(o.split(":")[0] for o in outcomes) == ["lost", "won"]
    loser = next(o for o in outcomes if o.startswith("lost"))
    assert "already" in loser and ("bob" in loser or "carol" in loser)
    decisions = [e for e in await rt.log.events(state.id) if isinstance(e, ApprovalDecision)]
    assert len(decisions) == 1


async def test_same_delivery_twice_is_one_event(redis: Redis) -> None:
    ledger = Ledger()
    rt = runtime(redis, ScriptedModel(turns(c("transfer", to="bob", amount=10))), ledger)
    tid = "th_" + "a" * 20
    first, again = [
        await rt.inbox.message(
            agent="bank", text="hi", by=ALICE, origin=ORIGIN, thread_id=tid, delivery="evt-1"
        )
        for _ in range(2)
    ]
    assert again.duplicate and not first.duplicate
    assert again.thread.version == first.thread.version == 2

    await rt.worker().burst()
    (req,) = (await rt.log.load(first.thread.id)).open_requests()
    await rt.decisions.decide(req.id, Decision.APPROVE, BOB, delivery="click-1")
    replay = await rt.decisions.decide(req.id, Decision.APPROVE, BOB, delivery="click-1")
    assert replay.duplicate
    decisions = [
        e for e in await rt.log.events(req.id.split(".")[0]) if isinstance(e, ApprovalDecision)
    ]
    assert len(decisions) == 1


async def test_three_consecutive_tool_errors_ask_a_human(redis: Redis) -> None:
    ledger = Ledger(fail_next=3)
    model = ScriptedModel(turns(*(c("echo", word=str(i)) for i in range(5))))
    rt = runtime(redis, model, ledger)
    state = await start(rt)

    assert state.status is Status.AWAITING_HUMAN
    question = next(e for e in await rt.log.events(state.id) if isinstance(e, HumanQuestion))
    assert "3 errors in a row" in question.question
    assert len(model.requests) == 3
    # Errors are compacted into one block showing the latest.
    ctx = model.requests[-1].context_text()
    assert ctx.count("<errors") == 1 and 'consecutive="2"' in ctx

    (req,) = state.open_requests()
    await rt.decisions.answer(req.id, "try again, it is back", CAROL)
    await rt.worker().burst()
    state = await rt.log.load(state.id)
    assert state.status is Status.DONE and "<errors" not in model.requests[-1].context_text()


async def test_expiry_rejects_and_late_decision_is_refused(redis: Redis) -> None:
    ledger, clock = Ledger(), ManualClock(time.time())
    rt = runtime(
        redis,
        ScriptedModel(turns(c("transfer", to="bob", amount=10))),
        ledger,
        clock=clock,
        policy=ApprovalPolicy(approvers=(ANYONE,), expires_in=3600),
    )
    state = await start(rt)
    (req,) = state.open_requests()

    clock.advance(3599)
    await rt.worker().burst()
    assert (await rt.log.load(state.id)).status is Status.AWAITING_APPROVAL
    clock.advance(1)
    await rt.worker().burst()
    state = await rt.log.load(state.id)
    assert state.requests[req.id].status == "expired"
    assert ledger.runs == []
    with pytest.raises(ConflictError, match="expired"):
        await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    assert results(await rt.log.events(state.id))[0].outcome is Outcome.REJECTED


async def test_expiry_escalates_to_other_approvers(redis: Redis) -> None:
    ledger, clock = Ledger(), ManualClock(time.time())
    policy = ApprovalPolicy(
        approvers=("bob",),
        expires_in=3600,
        on_expiry="escalate",  # type: ignore[arg-type]
        escalate_to=("carol",),
    )
    rt = runtime(
        redis,
        ScriptedModel(turns(c("transfer", to="x", amount=1))),
        ledger,
        clock=clock,
        policy=policy,
    )
    state = await start(rt)
    (req,) = state.open_requests()

    clock.advance(3600)
    await rt.worker().burst()
    escalated = (await rt.log.load(state.id)).requests[req.id]
    assert escalated.approvers == ["carol"]
    # The escalation gets as long again, from when it happened.
    assert escalated.expires_at == clock.now() + 3600
    with pytest.raises(ForbiddenError):
        await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await rt.decisions.decide(req.id, Decision.APPROVE, CAROL)
    await rt.worker().burst()
    assert len(ledger.runs) == 1


async def test_step_cap_asks_a_human(redis: Redis) -> None:
    ledger = Ledger()
    model = ScriptedModel(lambda r: c("echo", word="again"))
    rt = runtime(redis, model, ledger, max_steps=3)
    state = await start(rt)
    assert state.status is Status.AWAITING_HUMAN
    assert len(ledger.runs) == 3
