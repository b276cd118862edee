"""Nothing is lost and nothing runs twice when processes die (invariants 6 and 8)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.domain.events import Actor, Decision, HumanQuestion, Origin, Outcome, ToolResult
from bot.domain.reducer import Status, ThreadState
from bot.runtime import Runtime, build_runtime
from bot.storage.connection import Client
from bot.storage.embedded import EmbeddedRedis
from tests.bot.crash_worker import RUNS, crash_agent
from tests.doubles import Ledger, ScriptedModel, c, make_agent, turns
from tests.harness import eventually

ROOT = Path(__file__).resolve().parents[2]
ANN = Actor(channel="api", id="ann")
BOB = Actor(channel="api", id="bob")


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
async def test_worker_killed_mid_tool_another_worker_finishes(
    redis: Redis, redis_server: EmbeddedRedis, idempotent: bool
) -> None:
    await kill_a_worker_mid_tool(redis, redis_server.url, idempotent=idempotent)


async def kill_a_worker_mid_tool(redis: Client, url: str, *, idempotent: bool) -> None:
    """A worker process dies while its tool runs; another finishes, running it at most once
    (or again with the same key when it is idempotent)."""
    # The doomed worker plays the model's first turn; this process only sees the end.
    agent = crash_agent(redis, idempotent=idempotent, hang=False)
    rt = build_runtime(redis, {"bank": agent}, ScriptedModel(turns()))
    got = await rt.inbox.message(agent="bank", text="pay bob", by=ANN, origin=Origin(channel="api"))
    tid = got.thread.id
    args = [sys.executable, "-m", "tests.bot.crash_worker", url]
    doomed = await asyncio.create_subprocess_exec(
        *args, *(["idempotent"] if idempotent else []), cwd=ROOT
    )
    try:
        # The doomed worker is a fresh Python process: importing the bot takes seconds on
        # a loaded machine, so its first step gets a longer deadline than a poll's default.
        state = await eventually(lambda: _status(rt, tid, Status.AWAITING_APPROVAL), timeout=30)
        (req,) = state.open_requests()
        await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
        await eventually(lambda: redis.llen(RUNS))  # the tool is running in the doomed worker
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()

    stop = asyncio.Event()
    survivor = rt.worker(name="survivor", claim_idle_ms=200, block_ms=50)
    serving = asyncio.create_task(survivor.run(stop))
    try:
        if idempotent:
            state = await eventually(lambda: _status(rt, tid, Status.DONE))
        else:
            state = await eventually(lambda: _status(rt, tid, Status.AWAITING_HUMAN))
    finally:
        stop.set()
        await serving

    runs = await redis.lrange(RUNS, 0, -1)  # type: ignore[misc]
    events = await rt.log.events(tid)
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    if idempotent:
        # Re-run with the same idempotency key, so the system acted on can dedupe.
        assert len(runs) == 2 and runs[0] == runs[1]
        assert result.outcome is Outcome.OK
    else:
        assert len(runs) == 1  # not run twice
        assert result.outcome is Outcome.UNKNOWN
        question = next(e for e in events if isinstance(e, HumanQuestion))
        assert "interrupted" in question.question and "outcome is unknown" in question.question


async def _status(rt: Runtime, tid: str, status: Status) -> ThreadState | None:
    state = await rt.log.load(tid)
    return state if state.status is status else None


async def test_suspended_threads_survive_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    ledger = Ledger()
    agents = {"bank": make_agent(ledger)}
    model = ScriptedModel(turns(c("transfer", to="bob", amount=10)))
    try:
        redis = Redis.from_url(server.url, decode_responses=True)
        rt = build_runtime(redis, agents, model)
        got = await rt.inbox.message(agent="bank", text="pay", by=ANN, origin=Origin(channel="api"))
        await rt.worker().burst()
        (req,) = (await rt.log.load(got.thread.id)).open_requests()
        await redis.aclose()

        server.stop(kill=True)  # no shutdown, no final fsync: the AOF must already hold it
        server.start()

        redis = Redis.from_url(server.url, decode_responses=True)
        rt = build_runtime(redis, agents, model)
        assert (await rt.log.load(got.thread.id)).status is Status.AWAITING_APPROVAL
        await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
        await rt.worker().burst()
        assert (await rt.log.load(got.thread.id)).status is Status.DONE
        assert len(ledger.runs) == 1
        await redis.aclose()
    finally:
        server.stop()
