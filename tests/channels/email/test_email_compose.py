"""Which emails an event calls for: pure, from a thread folded from its events."""

from __future__ import annotations

import time

from bot.domain.events import (
    Actor,
    ApprovalDecision,
    ApprovalRequested,
    Decision,
    Escalated,
    Event,
    Expired,
    Origin,
    Reminded,
    ThreadCreated,
    ToolCall,
    UserMessage,
)
from bot.domain.reducer import ThreadState, fold
from channels.email import compose, tokens
from channels.email.config import EmailConfig
from channels.email.drafts import message_id
from channels.email.render import to_message

CFG = EmailConfig(
    sender="Greenlight <bot@example.test>",
    domain="example.test",
    secret=b"0123456789abcdef",
    public_url="http://gl.test",
)
TID = "th_0123456789abcdef0123"
RID = f"{TID}.r0badcafe"
ANN = Actor(channel="api", id="ann")
NOW = time.time()


def thread(*extra: Event, min_approvals: int = 1) -> tuple[ThreadState, ApprovalRequested]:
    asked = ApprovalRequested(
        request_id=RID,
        call_id="call_1",
        tool="deploy",
        args={"service": "api"},
        args_hash="h1",
        requester=ANN,
        approvers=["ops@example.test", "email:sre@example.test", "U123"],
        expires_at=NOW + 3600,
        min_approvals=min_approvals,
    )
    events: list[Event] = [
        ThreadCreated(agent="deploy", origin=Origin(channel="api"), by=ANN),
        UserMessage(text="deploy api", by=ANN),
        ToolCall(turn="t1", call_id="call_1", tool="deploy", args={"service": "api"}),
        asked,
        *extra,
    ]
    return fold(TID, events), asked


def test_approval_goes_to_each_email_approver_with_their_own_token() -> None:
    state, asked = thread()
    drafts = compose.for_event(CFG, state, asked, why="deploy api")
    assert [d.to for d in drafts] == ["ops@example.test", "sre@example.test"]
    for d in drafts:
        token = tokens.token_of(d.reply_to or "", "example.test")
        claim = tokens.verify(token or "", CFG.secret)
        assert claim is not None and claim.request_id == RID and claim.is_for(d.to, CFG.secret)
        assert claim.expires_at == int(NOW + 3600)
    assert drafts[0].message_id != drafts[1].message_id


def test_a_reminder_goes_to_who_has_not_voted_threaded_under_the_request() -> None:
    vote = ApprovalDecision(
        request_id=RID,
        decision=Decision.APPROVE,
        args_hash="h1",
        by=Actor(channel="email", id="sre@example.test", email="sre@example.test"),
    )
    reminded = Reminded(request_id=RID, due=NOW)
    state, asked = thread(vote, reminded)
    # min_approvals is 1, so the vote closed it: no reminder at all.
    assert compose.for_event(CFG, state, reminded) == []
    state, asked = thread(reminded)
    drafts = compose.for_event(CFG, state, reminded)
    assert [d.to for d in drafts] == ["ops@example.test", "sre@example.test"]
    first = message_id(asked.id, "ops@example.test", "example.test")
    assert drafts[0].in_reply_to == first and drafts[0].subject.startswith("Re: ")
    assert drafts[0].context["reminder"] is True


def test_escalation_asks_the_new_approvers_until_the_new_expiry() -> None:
    later = NOW + 7200
    escalated = Escalated(request_id=RID, approvers=["boss@example.test"], expires_at=later)
    state, _ = thread(escalated)
    (draft,) = compose.for_event(CFG, state, escalated)
    claim = tokens.verify(tokens.token_of(draft.reply_to or "", "example.test") or "", CFG.secret)
    assert draft.to == "boss@example.test" and claim and claim.expires_at == int(later)


def test_expiry_is_told_to_the_approvers() -> None:
    expired = Expired(request_id=RID)
    state, _ = thread(expired)
    drafts = compose.for_event(CFG, state, expired)
    assert [d.to for d in drafts] == ["ops@example.test", "sre@example.test"]
    assert all("expired" in d.context["text"] for d in drafts)


def test_arguments_with_line_breaks_still_make_a_one_line_subject() -> None:
    state, asked = thread()
    asked = asked.model_copy(update={"args": {"service": "api\r\nBcc: eve@evil.test"}})
    (draft, _) = compose.for_event(CFG, state, asked)
    msg = to_message(draft, CFG)
    # Without the fold, setting the header raised: no approval email could ever go out.
    subject = "Approval needed: deploy wants to run deploy(service=api Bcc: eve@evil.test)"
    assert msg["Subject"] == subject
    assert msg["Bcc"] is None


def test_each_vote_is_told_with_the_arguments_it_was_cast_on() -> None:
    # Delivered late, both with the state after the edit: the first vote was on "api".
    ops = Actor(channel="email", id="ops@example.test", email="ops@example.test")
    before = ApprovalDecision(request_id=RID, decision=Decision.APPROVE, args_hash="h1", by=ops)
    edit = ApprovalDecision(
        request_id=RID,
        decision=Decision.APPROVE,
        args_hash="h2",
        edited_args={"service": "web"},
        by=Actor(channel="slack", id="U123"),
    )
    state, asked = thread(before, edit, min_approvals=3)
    told = compose.for_event(CFG, state, before)
    assert "you approved deploy(service=api)" in told[0].context["text"]
    # The edit: who approved before is asked again, with the edited arguments and their hash.
    drafts = compose.for_event(CFG, state, edit)
    assert [(d.to, d.template) for d in drafts] == [
        ("ops@example.test", "approval"),
        ("sre@example.test", "approval"),
    ]
    assert drafts[0].context["args"] == [("service", "web")] and drafts[0].args_hash == "h2"
    assert drafts[0].context["edited"] is True
    assert drafts[0].in_reply_to == message_id(asked.id, "ops@example.test", "example.test")
