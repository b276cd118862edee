"""The open and may-decide rules, on requests folded from events: no Redis, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.errors import ConflictError, ForbiddenError
from bot.domain.events import (
    Actor,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    Decision,
    Escalated,
    Event,
    HumanAnswer,
    HumanQuestion,
    ToolCall,
    args_hash,
)
from bot.domain.events import (
    Expired as ExpiredEvent,
)
from bot.domain.policy import ANYONE
from bot.domain.reducer import Request, RequestStatus, fold
from bot.domain.refusals import (
    AlreadyVoted,
    Closed,
    Expired,
    MaybeOwnRequest,
    NotAllowed,
    OwnRequest,
    is_open,
    may_decide,
    to_words,
    why_closed,
    why_refused,
)

ANN = Actor(channel="api", id="ann")
BOB = Actor(channel="api", id="bob")
CAROL = Actor(channel="slack", id="U0CAROL01", email="carol@example.com")
MAL = Actor(channel="api", id="mallory")
ARGS = {"service": "api", "version": "1.5.0"}
T0 = 1_700_000_000.0
RID = "th_0123456789abcdef0123.r00000001"


def approval(*later: Event, **policy: Any) -> Request:
    """The request, as the reducer folds an approval asked at ``T0`` by Ann and ``later``."""
    fields = {"approvers": ["bob", "carol@example.com"], "expires_at": T0 + 3600, "requester": ANN}
    asked = ApprovalRequested(
        request_id=RID,
        call_id="c1",
        tool="deploy",
        args=ARGS,
        args_hash=args_hash(ARGS),
        at=T0,
        **(fields | policy),
    )
    call = ToolCall(turn="t1", call_id="c1", tool="deploy", args=ARGS, at=T0)
    return fold("th_1", [call, asked, *later]).requests[RID]


def vote(by: Actor, decision: Decision = Decision.APPROVE, at: float = T0 + 60) -> ApprovalDecision:
    return ApprovalDecision(
        request_id=RID, decision=decision, by=by, args_hash=args_hash(ARGS), at=at
    )


def question(*later: Event, answerers: list[str] | None = None) -> Request:
    asked = HumanQuestion(
        request_id=RID, call_id=None, question="Which version?", answerers=answerers or [], at=T0
    )
    return fold("th_1", [asked, *later]).requests[RID]


def test_an_open_request_refuses_nobody_it_names() -> None:
    req = approval()
    assert why_closed(req, T0 + 1) is None and is_open(req, T0 + 1)
    assert why_refused(req, BOB, T0 + 1) is None and may_decide(req, BOB, T0 + 1)
    assert why_refused(req, CAROL, T0 + 1) is None  # named by email, clicking in Slack


def test_past_its_expiry_a_request_is_closed_before_any_worker_says_so() -> None:
    req = approval()
    assert is_open(req, T0 + 3599.9)
    assert why_closed(req, T0 + 3600) == Expired(RID, T0 + 3600)
    assert why_refused(req, BOB, T0 + 3600) == Expired(RID, T0 + 3600)
    assert why_closed(approval(expires_at=None), T0 + 10**9) is None  # never expires


def test_a_decided_request_says_by_whom_and_when() -> None:
    req = approval(vote(BOB, Decision.REJECT))
    closed = why_closed(req, T0 + 61)
    assert closed == Closed(RID, RequestStatus.REJECTED, (BOB,), T0 + 60)
    assert closed.message == f"request {RID} is already rejected by bob at 2023-11-14T22:14:20Z"
    # Closed beats everything else: even the requester hears that it is decided.
    assert why_refused(req, ANN, T0 + 61) == closed


def test_someone_the_policy_does_not_name_hears_only_that_open_or_closed() -> None:
    # Who decided a request, and when, is told to those it asks: Mallory, whom the policy
    # does not name, is refused as she would be while it is open, whatever its state.
    stranger = NotAllowed(MAL, ("bob", "carol@example.com"))
    assert why_refused(approval(), MAL, T0) == stranger
    rejected = approval(vote(BOB, Decision.REJECT))
    for req, now in (
        (rejected, T0 + 61),
        (approval(), T0 + 3600),  # past its expiry, no worker has closed it yet
        (approval(ExpiredEvent(request_id=RID, at=T0 + 3600)), T0 + 3601),
        (approval(Cancelled(by=ANN, at=T0 + 5)), T0 + 6),
    ):
        refusal = why_refused(req, MAL, now)
        assert refusal == stranger, refusal
        assert "bob may" not in refusal.error().message and not refusal.error().detail
    # Those it names still hear that it is closed, by whom and when.
    assert why_refused(rejected, CAROL, T0 + 61) == Closed(
        RID, RequestStatus.REJECTED, (BOB,), T0 + 60
    )
    assert why_refused(approval(), BOB, T0 + 3600) == Expired(RID, T0 + 3600)
    # So do those who voted, though an escalation named others since.
    first = vote(BOB, at=T0 + 10)
    escalated = Escalated(request_id=RID, approvers=["dave"], at=T0 + 20)
    settled = approval(
        first, escalated, vote(Actor(channel="api", id="dave"), at=T0 + 30), min_approvals=2
    )
    assert why_refused(settled, BOB, T0 + 31) == Closed(
        RID, RequestStatus.APPROVED, (BOB, Actor(channel="api", id="dave")), T0 + 30
    )
    assert why_refused(settled, CAROL, T0 + 31) == NotAllowed(CAROL, ("dave",))
    # A question: whom it does not ask, the same.
    answered = question(
        HumanAnswer(request_id=RID, text="1.5.0", by=BOB, at=T0 + 9), answerers=["bob"]
    )
    assert why_refused(answered, MAL, T0 + 10) == NotAllowed(MAL, ("bob",), question=True)


def test_expired_and_cancelled_requests_name_nobody() -> None:
    expired = why_closed(approval(ExpiredEvent(request_id=RID, at=T0 + 3600)), T0 + 3601)
    assert expired == Closed(RID, RequestStatus.EXPIRED, (), T0 + 3600)
    assert expired.message == f"request {RID} is already expired at 2023-11-14T23:13:20Z"
    cancelled = why_closed(approval(Cancelled(by=MAL, at=T0 + 5)), T0 + 6)
    assert isinstance(cancelled, Closed) and cancelled.status is RequestStatus.CANCELLED


def test_someone_the_policy_does_not_name_is_told_who_may() -> None:
    refusal = why_refused(approval(), MAL, T0)
    assert refusal == NotAllowed(MAL, ("bob", "carol@example.com"))
    assert refusal.message == (
        "mallory may not decide this request; approvers: bob, carol@example.com"
    )
    assert not may_decide(approval(), MAL, T0)
    assert why_refused(approval(approvers=[]), BOB, T0) == NotAllowed(BOB, ())  # fail closed
    assert why_refused(approval(approvers=[ANYONE]), MAL, T0) is None


def test_the_requester_may_not_approve_unless_the_policy_allows_it() -> None:
    req = approval(approvers=["ann", "bob"])
    assert why_refused(req, ANN, T0) == OwnRequest(ANN)
    # The same person through another channel, known by the same email.
    ann_by_mail = Actor(channel="email", id="ann@example.com", email="ann@example.com")
    asked_by_mail = approval(approvers=[ANYONE], requester=ann_by_mail)
    ann_in_slack = Actor(channel="slack", id="U0ANN0001", email="ANN@example.com")
    assert why_refused(asked_by_mail, ann_in_slack, T0) == OwnRequest(ann_in_slack)
    assert why_refused(approval(approvers=["ann"], allow_self_approval=True), ANN, T0) is None


# Bob asked in Slack while users.info failed: known by his Slack id alone, no address.
BOB_IN_SLACK = Actor(channel="slack", id="U0BOB0001")
BOB_BY_MAIL = Actor(channel="email", id="bob@example.com", email="bob@example.com")
CAROL_BY_MAIL = Actor(channel="email", id="carol@example.com", email="carol@example.com")
DEPLOYERS = ["bob@example.com", "carol@example.com", "U0BOB0001", "U0CAROL01"]


def web(email: str, *elsewhere: str) -> Actor:
    """A person signed in to the web pages, as ``bot.web.session.to_actor`` makes them."""
    return Actor(channel="web", id=email, email=email, elsewhere=elsewhere)


def test_the_requester_is_known_by_every_identity_they_have_even_without_an_email() -> None:
    req = approval(approvers=DEPLOYERS, requester=BOB_IN_SLACK)
    # Signed in to the web, Bob is matched to his Slack user: the same person.
    bob_on_web = web("bob@example.com", "slack:U0BOB0001")
    assert why_refused(req, bob_on_web, T0) == OwnRequest(bob_on_web)
    # By email, or on the web matched to no Slack user, nothing tells him from the requester.
    assert why_refused(req, BOB_BY_MAIL, T0) == MaybeOwnRequest(BOB_BY_MAIL, BOB_IN_SLACK)
    assert why_refused(req, web("bob@example.com"), T0) == MaybeOwnRequest(
        web("bob@example.com"), BOB_IN_SLACK
    )
    # Nor anyone else by email: Carol could be U0BOB0001 as far as anything says.
    assert why_refused(req, CAROL_BY_MAIL, T0) == MaybeOwnRequest(CAROL_BY_MAIL, BOB_IN_SLACK)
    # Known in Slack as someone else, in Slack or on the web: told apart, so they decide.
    assert why_refused(req, CAROL, T0) is None
    assert why_refused(req, web("carol@example.com", "slack:U0CAROL01"), T0) is None
    # Once Slack said who asked, an address tells people apart as it always did.
    described = approval(
        approvers=DEPLOYERS, requester=BOB_IN_SLACK.model_copy(update={"email": "bob@example.com"})
    )
    assert why_refused(described, BOB_BY_MAIL, T0) == OwnRequest(BOB_BY_MAIL)
    assert why_refused(described, CAROL_BY_MAIL, T0) is None
    # The policy may allow it all the same.
    allowed = approval(approvers=DEPLOYERS, requester=BOB_IN_SLACK, allow_self_approval=True)
    assert why_refused(allowed, BOB_BY_MAIL, T0) is None


def test_an_approver_known_without_an_email_is_not_told_from_a_requester_by_email() -> None:
    # An app without users:read.email: Slack users click without an address.
    req = approval(approvers=[ANYONE], requester=BOB_BY_MAIL)
    refusal = why_refused(req, BOB_IN_SLACK, T0)
    assert refusal == MaybeOwnRequest(BOB_IN_SLACK, BOB_BY_MAIL)
    assert refusal.where == "slack" and type(refusal.error()) is ForbiddenError
    assert "cannot be told apart" in refusal.message
    assert to_words(refusal) == (
        "Greenlight can't tell you apart from who asked for this (one of you is known by a "
        "slack account without an email address), so someone else must decide it"
    )
    # People of channels not linked by email are known by their names, as before.
    assert why_refused(approval(approvers=[ANYONE], requester=ANN), BOB_IN_SLACK, T0) is None
    assert why_refused(approval(approvers=[ANYONE], requester=BOB_IN_SLACK), MAL, T0) is None


def test_an_approval_counts_once_per_person_whichever_identity_they_vote_with() -> None:
    first = vote(BOB_IN_SLACK)
    req = approval(first, approvers=DEPLOYERS, min_approvals=2)
    bob_on_web = web("bob@example.com", "slack:U0BOB0001")
    assert why_refused(req, bob_on_web, T0 + 61) == AlreadyVoted(bob_on_web, first, 2, 1)


def test_an_approver_who_voted_waits_for_the_others() -> None:
    first = vote(BOB)
    req = approval(first, min_approvals=2)
    assert is_open(req, T0 + 61)
    refusal = why_refused(req, BOB, T0 + 61)
    assert refusal == AlreadyVoted(BOB, first, needed=2, counted=1)
    assert refusal.missing == 1
    assert refusal.message == "bob has already approved this request"
    assert why_refused(req, CAROL, T0 + 61) is None


def test_a_question_names_who_answers_or_belongs_to_its_conversation() -> None:
    assert why_refused(question(), MAL, T0) is None
    named = question(answerers=["bob"])
    assert why_refused(named, BOB, T0) is None
    assert why_refused(named, MAL, T0) == NotAllowed(MAL, ("bob",), question=True)
    answered = question(HumanAnswer(request_id=RID, text="1.5.0", by=BOB, at=T0 + 9))
    assert why_refused(answered, BOB, T0 + 10) == Closed(
        RID, RequestStatus.ANSWERED, (BOB,), T0 + 9
    )


@pytest.mark.parametrize(
    ("req", "actor", "error", "detail"),
    [
        (approval(vote(BOB, at=T0 + 1)), CAROL, ConflictError, {"status": "approved"}),
        (approval(), BOB, ConflictError, {"status": "expired"}),
        (approval(expires_at=None), MAL, ForbiddenError, {}),
        (approval(vote(BOB), min_approvals=2, expires_at=None), BOB, ConflictError, {}),
        (approval(approvers=["ann"], expires_at=None), ANN, ForbiddenError, {}),
        (question(answerers=["bob"]), MAL, ForbiddenError, {}),
    ],
)
def test_each_refusal_raises_as_the_error_decisions_always_raised(
    req: Request, actor: Actor, error: type[Exception], detail: dict[str, str]
) -> None:
    refusal = why_refused(req, actor, T0 + 7200)
    assert refusal is not None
    exc = refusal.error()
    assert type(exc) is error and exc.refusal == refusal and exc.message == refusal.message
    assert detail.items() <= exc.detail.items()


def test_the_person_refused_is_told_why_in_words_each_channel_can_name_people_in() -> None:
    decided = why_refused(approval(vote(BOB, at=T0 + 1)), CAROL, T0 + 2)
    assert decided is not None and to_words(decided) == "This request was already approved by bob"
    assert to_words(decided, who=lambda a: f"<@{a.id}>") == (
        "This request was already approved by <@bob>"
    )
    expired = why_refused(approval(), BOB, T0 + 3600)
    assert expired is not None and to_words(expired) == "This request has expired"
    stranger = why_refused(approval(), MAL, T0)
    assert stranger is not None
    assert to_words(stranger) == "You can't decide this request; it is for bob, carol@example.com"
    assert to_words(stranger, allowed="<@U0BOB0001>").endswith("it is for <@U0BOB0001>")
    voted = why_refused(approval(vote(BOB), min_approvals=3), BOB, T0 + 61)
    assert voted is not None and "already approved" in to_words(voted)
    assert "waits for 2 more approvals" in to_words(voted)
