"""Reminders before an approval expires: each sent once, to the channels, the request left open."""

from __future__ import annotations

import time
from typing import ClassVar

from fastapi import APIRouter
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.events import Actor, ApprovalRequested, Decision, Event, Origin, Reminded
from bot.domain.policy import ANYONE, ApprovalPolicy
from bot.domain.reducer import Status, ThreadState
from bot.runtime import Runtime, build_runtime
from tests.doubles import Ledger, ScriptedModel, c, make_agent, turns

ALICE = Actor(channel="api", id="alice")
BOB = Actor(channel="api", id="bob")
# Expires in an hour; reminders due 30 and 50 minutes after the request.
POLICY = ApprovalPolicy(approvers=(ANYONE,), expires_in=3600, remind_before=(1800, 600))


class RecordingChannel:
    """A channel that keeps what it is given to deliver (a double of the Channel port)."""

    name = "recorder"
    router: APIRouter | None = None
    body_limits: ClassVar[dict[str, int]] = {}

    def __init__(self) -> None:
        self.got: list[tuple[ThreadState, Event]] = []

    async def start(self, *, inbound: bool) -> None:
        pass

    async def stop(self) -> None:
        pass

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        return True

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        self.got.append((thread, event))

    def reminders(self) -> list[tuple[ThreadState, Reminded]]:
        return [(t, e) for t, e in self.got if isinstance(e, Reminded)]


async def start(
    redis: Redis, ledger: Ledger, channel: RecordingChannel, clock: ManualClock
) -> tuple[Runtime, str]:
    agent = make_agent(ledger, policy=POLICY)
    model = ScriptedModel(turns(c("transfer", to="bob", amount=10)))
    rt = build_runtime(redis, {"bank": agent}, model, channels=lambda _: [channel], clock=clock)
    got = await rt.inbox.message(
        agent="bank", text="pay bob 10", by=ALICE, origin=Origin(channel="api")
    )
    await rt.worker().burst()
    return rt, got.thread.id


async def reminded(rt: Runtime, clock: ManualClock, thread_id: str, until: float) -> list[Reminded]:
    """Burst a worker at each minute of the clock until it passes ``until``; the reminders."""
    while True:
        await rt.worker().burst()
        if clock.now() > until:
            return [e for e in await rt.log.events(thread_id) if isinstance(e, Reminded)]
        clock.advance(60)


async def test_each_reminder_is_sent_once_and_the_request_stays_open(redis: Redis) -> None:
    ledger, channel, clock = Ledger(), RecordingChannel(), ManualClock(time.time())
    rt, thread_id = await start(redis, ledger, channel, clock)
    asked = next(e for e in await rt.log.events(thread_id) if isinstance(e, ApprovalRequested))
    assert len(asked.remind_at) == 2

    # Many bursts run before, between and after the two reminder times.
    got = await reminded(rt, clock, thread_id, until=max(asked.remind_at) + 120)
    for _ in range(3):
        await rt.worker().burst()

    events = [e for e in await rt.log.events(thread_id) if isinstance(e, Reminded)]
    assert [e.due for e in events] == [e.due for e in got] == sorted(asked.remind_at)
    assert {e.request_id for e in events} == {asked.request_id}
    state = await rt.log.load(thread_id)
    assert state.status is Status.AWAITING_APPROVAL
    assert state.requests[asked.request_id].is_open and ledger.runs == []

    delivered = channel.reminders()
    assert [e.id for _, e in delivered] == [e.id for e in events]
    assert all(t.requests[asked.request_id].is_open for t, _ in delivered)

    # A reminded request is decided like any other.
    await rt.decisions.decide(asked.request_id, Decision.APPROVE, BOB)
    await rt.worker().burst()
    assert (await rt.log.load(thread_id)).status is Status.DONE
    assert [r[0] for r in ledger.runs] == ["transfer"]


async def test_a_request_decided_before_its_reminders_gets_none(redis: Redis) -> None:
    ledger, channel, clock = Ledger(), RecordingChannel(), ManualClock(time.time())
    rt, thread_id = await start(redis, ledger, channel, clock)
    asked = next(e for e in await rt.log.events(thread_id) if isinstance(e, ApprovalRequested))

    await rt.decisions.decide(asked.request_id, Decision.APPROVE, BOB)
    assert await reminded(rt, clock, thread_id, until=max(asked.remind_at) + 120) == []
    assert channel.reminders() == []
    assert [r[0] for r in ledger.runs] == ["transfer"]


async def test_a_reminder_missed_before_an_escalation_is_not_sent_after_it(redis: Redis) -> None:
    # No worker ran between the reminder's time and the expiry: the expiry escalates, and
    # the missed reminder of the first approvers' hour must not follow the new prompt.
    ledger, channel, clock = Ledger(), RecordingChannel(), ManualClock(time.time())
    policy = ApprovalPolicy(
        approvers=("bob",),
        expires_in=3600,
        remind_before=(600,),
        on_expiry="escalate",  # type: ignore[arg-type]
        escalate_to=("carol",),
    )
    agent = make_agent(ledger, policy=policy)
    model = ScriptedModel(turns(c("transfer", to="bob", amount=10)))
    rt = build_runtime(redis, {"bank": agent}, model, channels=lambda _: [channel], clock=clock)
    got = await rt.inbox.message(agent="bank", text="pay", by=ALICE, origin=Origin(channel="api"))
    await rt.worker().burst()

    clock.advance(3600)
    for _ in range(3):
        await rt.worker().burst()
    state = await rt.log.load(got.thread.id)
    (req,) = state.open_requests()
    assert req.approvers == ["carol"]
    assert channel.reminders() == []
    assert state.next_due() == req.expires_at  # and nothing due before the new expiry
