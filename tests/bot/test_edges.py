"""Edge cases of the loop and the worker: timers while paused, failures, cancel mid-run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.errors import ModelError
from bot.domain.events import (
    Actor,
    ErrorEvent,
    HumanQuestion,
    Origin,
    Outcome,
    ToolResult,
    ToolStarted,
)
from bot.domain.model import ModelCall
from bot.domain.policy import ANYONE, ApprovalPolicy
from bot.domain.reducer import RequestStatus, Status
from bot.domain.tools import Tool, ToolContext
from bot.runtime import build_runtime
from bot.storage import keys
from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis
from tests.doubles import Echo, Ledger, ScriptedModel, c, make_agent, turns
from tests.harness import eventually

ALICE = Actor(channel="api", id="alice")
ORIGIN = Origin(channel="api")


async def test_a_paused_thread_past_its_expiry_is_not_requeued_forever(redis: Redis) -> None:
    ledger, clock = Ledger(), ManualClock(time.time())
    agent = make_agent(ledger, policy=ApprovalPolicy(approvers=(ANYONE,), expires_in=600))
    rt = build_runtime(
        redis,
        {"bank": agent},
        ScriptedModel(turns(c("transfer", to="b", amount=1))),
        clock=clock,
    )
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=ORIGIN)
    await rt.worker().burst()
    (req,) = (await rt.log.load(got.thread.id)).open_requests()
    await rt.inbox.control(got.thread.id, "pause", ALICE)

    clock.advance(601)  # overdue
    # Paused, nothing can happen: a burst worker finds nothing to do and returns.
    await asyncio.wait_for(rt.worker().burst(), 5)
    state = await rt.log.load(got.thread.id)
    assert state.status is Status.PAUSED and state.requests[req.id].is_open
    assert await redis.zscore(keys.timers(keys.shard_of(got.thread.id)), got.thread.id) is None

    # Resumed, the overdue expiry takes effect.
    await rt.inbox.control(got.thread.id, "resume", ALICE)
    await asyncio.wait_for(rt.worker().burst(), 5)
    state = await rt.log.load(got.thread.id)
    assert state.requests[req.id].status is RequestStatus.EXPIRED
    assert ledger.runs == []


async def test_a_failing_prefetch_is_recorded_and_escalates(redis: Redis) -> None:
    async def down() -> dict[str, Any]:
        raise ConnectionError("inventory is down")

    agent = replace(make_agent(Ledger()), prefetch={"services": down})
    model = ScriptedModel(turns())
    rt = build_runtime(redis, {"bank": agent}, model)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=ORIGIN)
    await rt.worker().burst()

    state = await rt.log.load(got.thread.id)
    events = await rt.log.events(got.thread.id)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 3 and "inventory is down" in errors[0].message
    assert state.status is Status.AWAITING_HUMAN
    assert any(isinstance(e, HumanQuestion) and e.call_id is None for e in events)
    assert model.requests == []
    shard = keys.shard_of(got.thread.id)
    assert int((await redis.xpending(keys.queue(shard), keys.GROUP))["pending"]) == 0


async def test_cancel_while_a_tool_runs_keeps_its_result(redis: Redis) -> None:
    running, finish = asyncio.Event(), asyncio.Event()

    async def slow(args: Echo, ctx: ToolContext) -> str:
        running.set()
        await finish.wait()
        return f"charged {args.word}"

    agent = make_agent(Ledger())
    agent = replace(agent, tools=(*agent.tools, Tool("charge", "Charge a card.", Echo, slow)))
    rt = build_runtime(redis, {"bank": agent}, ScriptedModel(turns(c("charge", word="ann"))))
    got = await rt.inbox.message(agent="bank", text="charge", by=ALICE, origin=ORIGIN)
    draining = asyncio.create_task(rt.worker().burst())
    await asyncio.wait_for(running.wait(), 5)

    await rt.inbox.control(got.thread.id, "cancel", ALICE)
    finish.set()
    await asyncio.wait_for(draining, 5)

    events = await rt.log.events(got.thread.id)
    (started,) = [e for e in events if isinstance(e, ToolStarted)]
    # The side effect happened: the log must say so, even though the thread was cancelled.
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    assert result.call_id == started.call_id
    assert result.outcome is Outcome.OK and result.output == "charged ann"
    assert (await rt.log.load(got.thread.id)).status is Status.CANCELLED


async def test_a_worker_outlives_a_redis_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    redis = await connect(server.url)
    rt = build_runtime(
        redis, {"bank": make_agent(Ledger())}, ScriptedModel(turns(c("transfer", to="b", amount=1)))
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.worker(block_ms=50).run(stop))
    try:
        await eventually(lambda: redis.zcard(keys.workers()))  # it is serving
        server.stop(kill=True)

        async def outage_seen() -> bool:
            unavailable = [r for r in caplog.records if "queue unavailable" in r.message]
            # The second warning comes after the periodic chores met the outage too.
            return serving.done() or len(unavailable) >= 2

        await eventually(outage_seen)
        assert not serving.done(), serving.exception()

        server.start()
        got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=ORIGIN)

        async def suspended() -> bool:
            state = await rt.log.load(got.thread.id)
            return state.status is Status.AWAITING_APPROVAL

        await eventually(suspended)
    finally:
        stop.set()
        await asyncio.gather(serving, return_exceptions=True)
        await redis.aclose()
        server.stop()


async def test_errors_before_a_reply_do_not_count_after_it(redis: Redis) -> None:
    down = ModelError("overloaded")
    reply = [ModelCall("reply", {"text": "which account?"})]
    model = ScriptedModel(turns(down, down, reply, down, c("echo", word="ok")))
    rt = build_runtime(redis, {"bank": make_agent(Ledger())}, model)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=ORIGIN)
    await rt.worker().burst()
    assert (await rt.log.load(got.thread.id)).status is Status.WAITING_FOR_USER

    # One error since the last success is not three in a row: no human is asked.
    await rt.inbox.say(got.thread.id, "savings", ALICE)
    await rt.worker().burst()
    events = await rt.log.events(got.thread.id)
    assert not any(isinstance(e, HumanQuestion) for e in events)
    assert (await rt.log.load(got.thread.id)).status is Status.DONE


SECRET_URL = "https://deploy:s3cr3t-token@vault.example.com/v1/kv?token=qwerty123"


def _no_secret(text: str | None) -> bool:
    return not any(s in (text or "") for s in ("s3cr3t-token", "qwerty123", "deploy:"))


async def test_credentials_in_a_failing_tools_error_reach_neither_model_nor_people(
    redis: Redis,
) -> None:
    # A tool's exception carries a URL with a password and a token: the model's context,
    # the tool's recorded result and the question people are asked after the error streak
    # say where it pointed (scheme and host), not the credentials.
    async def fetch(args: Echo, ctx: ToolContext) -> str:
        raise ConnectionError(f"cannot GET {SECRET_URL}: refused")

    agent = make_agent(Ledger())
    agent = replace(agent, tools=(*agent.tools, Tool("fetch", "Fetch a page.", Echo, fetch)))
    model = ScriptedModel(turns(*(c("fetch", word=str(i)) for i in range(5))))
    rt = build_runtime(redis, {"bank": agent}, model)
    got = await rt.inbox.message(agent="bank", text="look", by=ALICE, origin=ORIGIN)
    await rt.worker().burst()

    state = await rt.log.load(got.thread.id)
    events = await rt.log.events(got.thread.id)
    outputs = [str(e.output) for e in events if isinstance(e, ToolResult)]
    assert len(outputs) == 3
    assert all("https://vault.example.com" in o and _no_secret(o) for o in outputs)
    assert all(_no_secret(r.context_text()) for r in model.requests[1:])
    question = next(e for e in events if isinstance(e, HumanQuestion))
    assert state.status is Status.AWAITING_HUMAN
    assert question.context and "vault.example.com" in question.context
    assert _no_secret(question.context) and _no_secret(question.question)


async def test_credentials_in_a_failing_prefetch_reach_no_one(redis: Redis) -> None:
    async def down() -> dict[str, Any]:
        raise ConnectionError(f"inventory at {SECRET_URL} is down")

    agent = replace(make_agent(Ledger()), prefetch={"services": down})
    rt = build_runtime(redis, {"bank": agent}, ScriptedModel(turns()))
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=ORIGIN)
    await rt.worker().burst()

    events = await rt.log.events(got.thread.id)
    errors = [e.message for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 3 and all("vault.example.com" in m and _no_secret(m) for m in errors)
    question = next(e for e in events if isinstance(e, HumanQuestion))
    assert question.context and _no_secret(question.context)
