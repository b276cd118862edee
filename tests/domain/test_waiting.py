"""What waits for a person, read from a summary: the same answer as the decision rule."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.events import (
    Actor,
    ApprovalDecision,
    ApprovalRequested,
    Decision,
    Event,
    HumanQuestion,
    ToolCall,
    Urgency,
    UserMessage,
    args_hash,
)
from bot.domain.policy import ANYONE, is_same_person
from bot.domain.reducer import ThreadState, fold
from bot.domain.refusals import may_decide
from bot.domain.waiting import to_waiting, waiting_for, waits_for
from tests.domain.test_refusals import (
    ANN,
    ARGS,
    BOB,
    BOB_BY_MAIL,
    BOB_IN_SLACK,
    CAROL,
    DEPLOYERS,
    MAL,
    T0,
    web,
)

CAROL_BY_MAIL = Actor(channel="email", id="carol@example.com", email="Carol@Example.com")
PEOPLE = (
    ANN,
    BOB,
    CAROL,
    CAROL_BY_MAIL,
    MAL,
    BOB_IN_SLACK,
    BOB_BY_MAIL,
    web("bob@example.com", "slack:U0BOB0001"),
    web("bob@example.com"),
    web("carol@example.com", "slack:U0CAROL01"),
)
TID = "th_0123456789abcdef0123"


def rid(n: int) -> str:
    return f"{TID}.r{n:08d}"


def approval(n: int = 1, **policy: Any) -> list[Event]:
    fields = {"approvers": ["bob", "carol@example.com"], "expires_at": T0 + 3600, "requester": ANN}
    return [
        ToolCall(turn=f"t{n}", call_id=f"c{n}", tool="deploy", args=ARGS, at=T0),
        ApprovalRequested(
            request_id=rid(n),
            call_id=f"c{n}",
            tool="deploy",
            args=ARGS,
            args_hash=args_hash(ARGS),
            at=T0 + n,
            **(fields | policy),
        ),
    ]


def vote(by: Actor, n: int = 1) -> ApprovalDecision:
    return ApprovalDecision(
        request_id=rid(n), decision=Decision.APPROVE, by=by, args_hash=args_hash(ARGS), at=T0 + 60
    )


def question(n: int = 1, answerers: list[str] | None = None, **more: Any) -> HumanQuestion:
    return HumanQuestion(
        request_id=rid(n), question="Which?", answerers=answerers or [], at=T0 + n, **more
    )


def the_old_rule(state: ThreadState, rid_: str, actor: Actor, now: float) -> bool:
    """What the Home asked of a whole thread before summaries: the decision rule, and a
    question naming nobody only for the person last heard."""
    req = state.requests[rid_]
    heard = state.last_user
    if isinstance(req.asked, HumanQuestion) and not req.asked.answerers:
        return heard is not None and is_same_person(heard, actor) and may_decide(req, actor, now)
    return may_decide(req, actor, now)


CASES: dict[str, list[Event]] = {
    "an approval": approval(),
    "an approval anyone may decide": approval(approvers=[ANYONE]),
    "one the requester may approve": approval(allow_self_approval=True, approvers=["ann", "bob"]),
    "one the requester may not": approval(approvers=["ann", "bob"]),
    "two of two, Bob voted": [*approval(min_approvals=2), vote(BOB)],
    "two of two, Carol voted by mail": [*approval(min_approvals=2), vote(CAROL_BY_MAIL)],
    "asked in Slack by Bob, whom Slack did not describe": approval(
        approvers=DEPLOYERS, requester=BOB_IN_SLACK
    ),
    "asked by mail, Bob in Slack voted without an address": [
        *approval(approvers=[ANYONE], requester=BOB_BY_MAIL, min_approvals=2),
        vote(BOB_IN_SLACK),
    ],
    "a question for Carol": [question(answerers=["carol@example.com"])],
    "a question for its conversation": [UserMessage(text="hi", by=CAROL, at=T0), question()],
    "a question nobody was heard in": [question()],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("now", [T0 + 100, T0 + 3600])
def test_a_summary_waits_for_exactly_whom_the_decision_rule_lets_decide(
    case: str, now: float
) -> None:
    state = fold(TID, CASES[case])
    (req,) = state.requests.values()
    item = to_waiting(state, req)
    for actor in PEOPLE:
        expected = the_old_rule(state, req.id, actor, now)
        assert waits_for(item, actor.names(), now) is expected, (case, actor.id)


def test_what_waits_is_ordered_by_soonest_expiry_then_urgency_then_age() -> None:
    events: list[Event] = [
        *approval(1, expires_at=T0 + 900),
        *approval(2, expires_at=None),
        question(3, answerers=["bob"], expires_at=T0 + 300),
        question(4, answerers=["bob"], expires_at=T0 + 300, urgency=Urgency.HIGH),
        *approval(5, expires_at=T0 + 900),
        *approval(6, expires_at=T0 + 50),
    ]
    state = fold(TID, events)
    every = [to_waiting(state, r) for r in state.requests.values()]
    listed = waiting_for(every, BOB, T0 + 100)  # the sixth has expired by then
    assert [w.request for w in listed] == [rid(4), rid(3), rid(1), rid(5), rid(2)]
