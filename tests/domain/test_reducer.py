"""The thread's state as a fold of its events: statuses, votes, timers and counters, no Redis."""

from __future__ import annotations

import copy
import functools
from typing import Any, get_args

import pytest

from bot.domain.events import (
    Actor,
    AgentChosen,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ContextFetched,
    Decision,
    DeliveryFailed,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    OnExpiry,
    Origin,
    Outcome,
    Paused,
    Reminded,
    Resumed,
    ThreadCreated,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
    args_hash,
)
from bot.domain.reducer import (
    CallStatus,
    RequestStatus,
    Status,
    ThreadState,
    fold,
    is_expiry_action_escalate,
    reduce,
)

ANN = Actor(channel="api", id="ann")
BOB = Actor(channel="api", id="bob")
CAROL = Actor(channel="slack", id="U0CAROL01", email="carol@example.com")
DAN = Actor(channel="email", id="dan@example.com", email="dan@example.com")
OPS = Actor(channel="cli", id="ops")
ARGS = {"service": "api", "version": "1.5.0"}
EDITED = {"service": "api", "version": "1.4.2"}
T0 = 1_700_000_000.0
TID = "th_0123456789abcdef0123"
RID = f"{TID}.r00000001"
QID = f"{TID}.r00000002"


def start(text: str = "Deploy api 1.5.0", at: float = T0) -> list[Event]:
    return [
        ThreadCreated(agent="deployer", origin=Origin(channel="api"), by=ANN, at=at),
        UserMessage(text=text, by=ANN, at=at),
    ]


def thread(*events: Event) -> ThreadState:
    """The state of a thread Ann started with a message, after ``events``."""
    return fold(TID, [*start(), *events])


def call(
    call_id: str = "c1", turn: str = "t1", tool: str = "deploy", at: float = T0 + 1
) -> ToolCall:
    return ToolCall(turn=turn, call_id=call_id, tool=tool, args=ARGS, at=at)


def approval(call_id: str = "c1", **policy: Any) -> ApprovalRequested:
    fields = {"approvers": ["bob", "carol@example.com", "dan@example.com"], "requester": ANN}
    return ApprovalRequested(
        request_id=RID,
        call_id=call_id,
        tool="deploy",
        args=ARGS,
        args_hash=args_hash(ARGS),
        at=T0 + 2,
        **(fields | policy),
    )


def vote(
    by: Actor,
    decision: Decision = Decision.APPROVE,
    *,
    edited: dict[str, Any] | None = None,
    reason: str | None = None,
    at: float = T0 + 60,
) -> ApprovalDecision:
    shown = edited if edited is not None else ARGS
    return ApprovalDecision(
        request_id=RID,
        decision=decision,
        by=by,
        reason=reason,
        args_hash=args_hash(shown),
        edited_args=edited,
        at=at,
    )


def result(
    call_id: str = "c1", outcome: Outcome = Outcome.OK, output: Any = "deployed"
) -> ToolResult:
    return ToolResult(call_id=call_id, outcome=outcome, output=output, at=T0 + 90)


def question(call_id: str | None = None, **fields: Any) -> HumanQuestion:
    return HumanQuestion(request_id=QID, call_id=call_id, question="Which version?", **fields)


def asked_to_approve(**policy: Any) -> list[Event]:
    return [call(), approval(**policy)]


# --- a thread's status --------------------------------------------------------------------


def test_a_message_wakes_the_model_for_the_one_who_spoke() -> None:
    s = thread()
    assert s.exists and s.version == 2 and s.status is Status.RUNNING
    assert s.awaiting_model and s.last_user == ANN and s.agent == "deployer"
    assert fold(TID, []).status is Status.WAITING_FOR_USER and not fold(TID, []).exists


def test_a_final_reply_is_done_and_a_question_back_waits_for_the_user() -> None:
    assert thread(AgentReply(text="Deployed.", final=True)).status is Status.DONE
    waiting = thread(AgentReply(text="Which service?"))
    assert waiting.status is Status.WAITING_FOR_USER and not waiting.awaiting_model
    again = reduce(waiting, UserMessage(text="api", by=BOB))
    assert again.status is Status.RUNNING and again.last_reply is None and again.last_user == BOB


def test_an_open_approval_outranks_an_open_question() -> None:
    asking = thread(call("q1", tool="ask_human"), question("q1"))
    assert asking.status is Status.AWAITING_HUMAN and not asking.awaiting_model
    both = reduce(reduce(asking, call("c1", turn="t2")), approval())
    assert both.status is Status.AWAITING_APPROVAL
    assert {r.id for r in both.open_requests()} == {RID, QID}


# --- approvals ----------------------------------------------------------------------------


def test_a_call_that_needs_approval_waits_and_is_not_run() -> None:
    s = thread(*asked_to_approve(expires_at=T0 + 3600))
    assert s.status is Status.AWAITING_APPROVAL
    assert [r.id for r in s.open_requests()] == [RID] and s.pending_calls() == []
    assert s.calls["c1"].status is CallStatus.AWAITING_HUMAN and s.calls["c1"].request_id == RID
    assert s.next_due() == T0 + 3600


def test_two_of_three_approvals_leave_the_request_open_and_the_third_runs_the_call() -> None:
    two = thread(*asked_to_approve(min_approvals=3), vote(BOB), vote(CAROL))
    assert two.requests[RID].is_open and two.status is Status.AWAITING_APPROVAL
    assert two.pending_calls() == []
    three = reduce(two, vote(DAN, at=T0 + 70))
    req = three.requests[RID]
    assert req.status is RequestStatus.APPROVED and req.closed_at == T0 + 70
    assert req.closed_by == [BOB, CAROL, DAN]
    assert [c.asked.call_id for c in three.pending_calls()] == ["c1"]
    assert three.calls["c1"].status is CallStatus.READY and three.status is Status.RUNNING


def test_one_person_approving_twice_counts_once() -> None:
    s = thread(*asked_to_approve(min_approvals=2), vote(BOB), vote(BOB, at=T0 + 61))
    assert s.requests[RID].is_open and len(s.requests[RID].approvals()) == 1
    assert len(s.requests[RID].votes) == 2  # the audit trail keeps both


def test_approvals_of_the_old_arguments_stop_counting_once_they_are_edited() -> None:
    s = thread(*asked_to_approve(min_approvals=2), vote(BOB), vote(CAROL, edited=EDITED))
    req = s.requests[RID]
    assert req.is_open and req.args == EDITED and req.args_hash == args_hash(EDITED)
    assert [v.by for v in req.approvals()] == [CAROL]
    done = reduce(s, vote(BOB, edited=EDITED, at=T0 + 80))
    assert done.requests[RID].status is RequestStatus.APPROVED
    assert done.calls["c1"].args == EDITED  # what runs is what the approvers saw


def test_one_rejection_closes_the_request_so_the_loop_answers_the_model() -> None:
    rejected = vote(DAN, Decision.REJECT, reason="freeze until Monday", at=T0 + 65)
    s = thread(*asked_to_approve(min_approvals=2), vote(BOB), rejected)
    req = s.requests[RID]
    assert req.status is RequestStatus.REJECTED and req.reason == "freeze until Monday"
    assert req.closed_by == [DAN] and req.closed_at == T0 + 65
    assert s.calls["c1"].status is CallStatus.REJECTED
    assert [c.asked.call_id for c in s.pending_calls()] == ["c1"]
    answered = reduce(s, result(outcome=Outcome.REJECTED, output="Rejected by dan"))
    assert answered.pending_calls() == [] and answered.awaiting_model
    assert answered.consecutive_errors == 0  # a rejection is not the tool failing


# --- timers -------------------------------------------------------------------------------


def test_reminders_come_due_one_by_one_before_the_expiry() -> None:
    s = thread(*asked_to_approve(remind_at=[T0 + 600, T0 + 1200], expires_at=T0 + 3600))
    assert s.next_due() == T0 + 600
    s = reduce(s, Reminded(request_id=RID, due=T0 + 600))
    assert s.next_due() == T0 + 1200
    s = reduce(s, Reminded(request_id=RID, due=T0 + 1200))
    assert s.next_due() == T0 + 3600
    assert reduce(s, vote(BOB)).next_due() is None  # decided: nothing left to wake for


def test_an_expired_approval_rejects_its_call() -> None:
    s = thread(*asked_to_approve(expires_at=T0 + 3600), Expired(request_id=RID, at=T0 + 3600))
    req = s.requests[RID]
    assert req.status is RequestStatus.EXPIRED and req.reason == "expired"
    assert req.closed_by == [] and req.closed_at == T0 + 3600
    assert s.calls["c1"].status is CallStatus.REJECTED and s.next_due() is None


def test_an_expiring_approval_escalates_once_to_the_fallback_approvers() -> None:
    policy = {"expires_at": T0 + 3600, "on_expiry": OnExpiry.ESCALATE, "escalate_to": ["ops"]}
    s = thread(*asked_to_approve(**policy))
    assert is_expiry_action_escalate(s.requests[RID])
    s = reduce(s, Escalated(request_id=RID, approvers=["ops"], expires_at=T0 + 7200))
    req = s.requests[RID]
    assert req.is_open and req.approvers == ["ops"] and s.next_due() == T0 + 7200
    assert not is_expiry_action_escalate(req)  # the second expiry rejects
    no_fallback = thread(*asked_to_approve(on_expiry=OnExpiry.ESCALATE))
    assert not is_expiry_action_escalate(no_fallback.requests[RID])


def test_an_unanswered_question_wakes_the_model_or_fails_the_thread_if_greenlight_asked() -> None:
    asked_by_model = thread(call("q1", tool="ask_human"), question("q1"), Expired(request_id=QID))
    assert asked_by_model.calls["q1"].status is CallStatus.DONE and asked_by_model.awaiting_model
    assert asked_by_model.status is Status.RUNNING
    escalation = thread(ErrorEvent(message="boom"), question(), Expired(request_id=QID))
    assert escalation.status is Status.FAILED and escalation.next_due() is None


def test_a_paused_thread_has_no_timer_until_it_resumes() -> None:
    s = thread(*asked_to_approve(expires_at=T0 + 3600), Paused(by=OPS, reason="incident"))
    assert s.status is Status.PAUSED and s.next_due() is None
    resumed = reduce(s, Resumed(by=OPS))
    assert resumed.status is Status.AWAITING_APPROVAL and resumed.next_due() == T0 + 3600


# --- cancel, crashes and fatal errors -----------------------------------------------------


def test_a_cancelled_thread_closes_its_requests_and_runs_nothing() -> None:
    events: list[Event] = [call("c1"), approval("c1"), call("c2"), question("c2")]
    s = thread(*events, call("c3", turn="t2"), Cancelled(by=OPS, reason="wrong ticket"))
    assert s.status is Status.CANCELLED and s.open_requests() == []
    for req in s.requests.values():
        assert req.status is RequestStatus.CANCELLED and req.closed_by == [OPS]
    assert s.pending_calls() == [] and not s.awaiting_model and s.next_due() is None
    # A tool that was already running may still report; the model stays asleep.
    assert not reduce(s, result("c3")).awaiting_model


def test_a_call_started_without_a_result_is_left_for_the_worker_as_interrupted() -> None:
    started = ToolStarted(call_id="c1", idempotency_key=f"{TID}:c1", args=ARGS)
    s = thread(call(), started)
    assert s.calls["c1"].status is CallStatus.STARTED and s.calls["c1"].started == started
    assert [c.asked.call_id for c in s.pending_calls()] == ["c1"]
    assert s.status is Status.RUNNING and not s.awaiting_model


def test_a_fatal_error_fails_the_thread_and_resuming_retries_it() -> None:
    s = thread(ErrorEvent(message="unknown agent"), ErrorEvent(message="boom", fatal=True))
    assert s.status is Status.FAILED and s.consecutive_errors == 2 and s.last_error == "boom"
    resumed = reduce(s, Resumed(by=OPS))
    assert resumed.status is Status.RUNNING and resumed.awaiting_model
    assert resumed.consecutive_errors == 0


# --- counters the loop escalates on -------------------------------------------------------


def test_tool_errors_count_in_a_row_until_a_success() -> None:
    s = thread(call("c1"), result("c1", Outcome.ERROR, "timeout"))
    s = reduce(reduce(s, call("c2", turn="t2")), result("c2", Outcome.ERROR, "503"))
    s = reduce(s, ErrorEvent(message="model failed"))
    assert s.consecutive_errors == 3 and s.last_error == "model failed"
    s = reduce(reduce(s, call("c3", turn="t3")), result("c3"))
    assert s.consecutive_errors == 0 and s.last_error is None


def test_a_reply_resets_the_error_count() -> None:
    s = thread(ErrorEvent(message="model failed"), AgentReply(text="Sorry, try again?"))
    assert s.consecutive_errors == 0 and s.last_error is None


def test_a_human_answering_greenlights_own_question_resets_the_error_count() -> None:
    s = thread(ErrorEvent(message="a"), ErrorEvent(message="b"), question())
    answered = reduce(s, HumanAnswer(request_id=QID, text="use 1.4.2", by=BOB, at=T0 + 9))
    req = answered.requests[QID]
    assert req.status is RequestStatus.ANSWERED and req.answer == "use 1.4.2"
    assert answered.consecutive_errors == 0 and answered.awaiting_model


def test_calls_of_one_turn_count_as_one_step_and_input_resets_the_count() -> None:
    s = thread(call("c1", "t1"), call("c2", "t1"), call("c3", "t2"))
    assert s.turns_since_input == 2
    s = reduce(s, AgentReply(text="working on it"))
    assert s.turns_since_input == 3
    assert reduce(s, UserMessage(text="go on", by=ANN)).turns_since_input == 0
    s = reduce(reduce(s, call("q1", turn="t3", tool="ask_human")), question("q1"))
    assert reduce(s, HumanAnswer(request_id=QID, text="1.4.2", by=BOB)).turns_since_input == 0


def test_the_model_waits_for_every_call_of_its_turn() -> None:
    s = thread(call("c1", "t1"), call("c2", "t1"), result("c1"))
    assert not s.awaiting_model and [c.asked.call_id for c in s.pending_calls()] == ["c2"]
    assert reduce(s, result("c2")).awaiting_model


def test_a_failed_delivery_is_kept_but_changes_nothing_else() -> None:
    before = thread(*asked_to_approve())
    failed = DeliveryFailed(channel="slack", event_id="ev_1", error="channel_not_found")
    after = reduce(before, failed)
    assert after.failed_deliveries == [failed] and after.status is before.status
    assert after.version == before.version + 1


# --- the fold itself ----------------------------------------------------------------------

EVERY_KIND: list[Event] = [
    call("c2", turn="t9"),
    approval("c1", min_approvals=2, remind_at=[T0 + 600]),
    vote(BOB),
    vote(CAROL, edited=EDITED),
    vote(DAN, Decision.REJECT),
    question("c1"),
    HumanAnswer(request_id=QID, text="yes", by=BOB),
    ToolStarted(call_id="c1", idempotency_key="k", args=ARGS),
    result("c1", Outcome.ERROR, "boom"),
    ContextFetched(name="services", data=["api"]),
    AgentReply(text="done", final=True),
    ErrorEvent(message="boom", fatal=True),
    Paused(by=OPS),
    Resumed(by=OPS),
    Cancelled(by=OPS),
    Expired(request_id=RID),
    Escalated(request_id=RID, approvers=["ops"], expires_at=T0 + 7200),
    Reminded(request_id=RID, due=T0 + 600),
    DeliveryFailed(channel="slack", event_id="ev_1", error="x"),
    UserMessage(text="more", by=BOB),
    AgentChosen(agent="other", how="named"),
    *start(),
]


def test_the_kinds_below_are_every_kind_of_event() -> None:
    # so that the test below reduces each kind the log may hold, a new one included
    (union, _discriminator) = get_args(Event)
    assert {type(event) for event in EVERY_KIND} == set(get_args(union))


@pytest.mark.parametrize("event", EVERY_KIND, ids=lambda e: e.type)
def test_reduce_leaves_the_state_it_was_given_as_it_was(event: Event) -> None:
    waiting: list[Event] = [call("q1", tool="ask_human"), question("q1")]
    before = thread(*asked_to_approve(min_approvals=2, remind_at=[T0 + 600]), vote(BOB), *waiting)
    snapshot = copy.deepcopy(before)
    after = reduce(before, event)
    assert before == snapshot
    assert after.version == before.version + 1 and after is not before


def test_folding_a_log_is_reducing_it_event_by_event() -> None:
    log = [*start(), *asked_to_approve(min_approvals=2), vote(BOB), vote(CAROL), result()]
    stepped = functools.reduce(reduce, log, ThreadState(id=TID))
    assert stepped == fold(TID, log)
    assert stepped.version == len(log) and stepped.updated_at == log[-1].at


# --- agents that run elsewhere ------------------------------------------------------------


def _elsewhere(*more: Event) -> ThreadState:
    call = ToolCall(turn="t1", call_id="c1", tool="deploy", args=ARGS, at=T0)
    asked = ApprovalRequested(
        request_id=RID,
        call_id="c1",
        tool="deploy",
        args=ARGS,
        args_hash=args_hash(ARGS),
        requester=ANN,
        approvers=["bob"],
        expires_at=T0 + 60,
        at=T0,
    )
    created = ThreadCreated(agent="ext", origin=Origin(channel="api"), by=ANN, hosted=False, at=T0)
    return fold(TID, [created, call, asked, *more])


def test_an_unhosted_request_leaves_nothing_for_the_worker_once_closed() -> None:
    waiting = _elsewhere()
    assert not waiting.hosted and waiting.status is Status.AWAITING_APPROVAL
    vote = ApprovalDecision(
        request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash=args_hash(ARGS), at=T0 + 1
    )
    for closed in (_elsewhere(vote), _elsewhere(Expired(request_id=RID, at=T0 + 61))):
        assert closed.status is Status.DONE and not closed.awaiting_model
        assert closed.pending_calls() == [] and closed.next_due() is None


def test_an_unhosted_question_that_expires_does_not_fail_its_thread() -> None:
    created = ThreadCreated(agent="ext", origin=Origin(channel="api"), by=ANN, hosted=False)
    question = HumanQuestion(request_id=QID, call_id=None, question="ok?", expires_at=T0 + 5)
    state = fold(TID, [created, question, Expired(request_id=QID)])
    assert state.status is Status.DONE and not state.failed
    answered = fold(TID, [created, question, HumanAnswer(request_id=QID, text="yes", by=BOB)])
    assert answered.status is Status.DONE and not answered.awaiting_model
