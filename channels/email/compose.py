"""Which emails a thread event calls for, and to whom. Pure.

Approvals and questions carry each recipient's own reply token; decisions,
answers, reminders, escalations and expiry are told in the same conversation.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot.domain.events import (
    Actor,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Decision,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Reminded,
)
from bot.domain.forms import Field, Kind, to_form
from bot.domain.policy import ANYONE
from bot.domain.reducer import Request, ThreadState
from channels.email import tokens
from channels.email.config import TOKEN_TTL, EmailConfig
from channels.email.drafts import (
    Draft,
    approval_subject,
    describe_call,
    email_identities,
    follow_up,
    in_origin,
    message_id,
    origin_subject,
    originators,
    question_recipients,
    root_of,
    to_rows,
    to_utc,
    up_for_approval,
    with_re,
)

HOW_TO_ANSWER = "Reply APPROVE, or REJECT: reason."


def for_event(
    cfg: EmailConfig, thread: ThreadState, event: Event, *, why: str | None = None
) -> list[Draft]:
    """The emails ``event`` calls for; ``why`` is what the requester asked, for approvals."""
    match event:
        case AgentReply():
            return [
                in_origin(cfg, thread, event.id, to, template="reply", context={"text": event.text})
                for to in originators(thread)
            ]
        case ApprovalRequested():
            return _approval_asked(cfg, thread, event, why)
        case HumanQuestion():
            return [_question(cfg, thread, event, to) for to in question_recipients(thread, event)]
        case ApprovalDecision():
            return _decided(cfg, thread, event)
        case HumanAnswer():
            return _answered(cfg, thread, event)
        case Reminded():
            return _reminded(cfg, thread, event)
        case Escalated():
            return _escalated(cfg, thread, event)
        case Expired():
            return _expired(cfg, thread, event)
    return []


# --- approvals ---------------------------------------------------------------------------


def _approval_asked(
    cfg: EmailConfig, thread: ThreadState, e: ApprovalRequested, why: str | None
) -> list[Draft]:
    approvers = email_identities(e.approvers)
    drafts = [
        _approval(cfg, thread, e, to, key=e.id, expires_at=e.expires_at, why=why)
        for to in approvers
    ]
    waiting = [a for a in originators(thread) if a not in approvers]
    who = "anyone who can reach the request" if ANYONE in e.approvers else ", ".join(e.approvers)
    args, _ = _up_for_approval(thread, e)
    text = (
        f"I need approval to run {describe_call(e.tool, args)}. I have asked {who}; "
        "I will carry on when they answer."
    )
    drafts += [
        in_origin(
            cfg,
            thread,
            e.id,
            to,
            template="notice",
            context={"title": "Waiting for approval", "text": text},
        )
        for to in waiting
    ]
    return drafts


def _approval(
    cfg: EmailConfig,
    thread: ThreadState,
    e: ApprovalRequested,
    to: str,
    *,
    key: str,
    expires_at: float | None,
    why: str | None,
    reminder: bool = False,
    note: str | None = None,
    follows: str | None = None,
) -> Draft:
    """An approval email to ``to``, with the arguments up for approval now (an edit's,
    once an approver edited them) and their hash, which a reply to it decides on."""
    args, shown = _up_for_approval(thread, e)
    until = _token_expiry(expires_at, e.at)
    token = tokens.mint(e.request_id, to, until, cfg.secret)
    link_token = tokens.mint(e.request_id, to, until, cfg.secret, purpose="link")
    link = f"{cfg.public_url}/email/decide/{link_token}?a={quote(to)}"
    context = {
        "agent": thread.agent,
        "tool": e.tool,
        "args": to_rows(args),
        "edited": shown != e.args_hash,
        "note": note,
        "requester": e.requester.label(),
        "why": e.reason or why,
        "expires": to_utc(expires_at),
        "min_approvals": e.min_approvals,
        "risky": e.risky,
        "how": HOW_TO_ANSWER,
        "link": link,
        "reminder": reminder,
        "request_id": e.request_id,
    }
    root = root_of(thread)
    first = message_id(e.id, to, cfg.domain)
    subject = approval_subject(thread.agent, e)
    return Draft(
        key=key,
        to=to,
        subject=with_re(subject) if follows else subject,
        message_id=message_id(key, to, cfg.domain),
        template="approval",
        context=context,
        in_reply_to=follows or root,
        references=tuple(x for x in (root, follows and first) if x),
        reply_to=tokens.to_reply_address(token, cfg.domain),
        args_hash=shown,
    )


def _decided(cfg: EmailConfig, thread: ThreadState, e: ApprovalDecision) -> list[Draft]:
    req = thread.requests.get(e.request_id)
    if req is None or not isinstance(req.asked, ApprovalRequested):
        return []
    asked = req.asked
    verb = "approved" if e.decision is Decision.APPROVE else "rejected"
    because = f": {e.reason}" if e.reason else "."
    call = describe_call(asked.tool, _voted_on(req, asked, e))
    drafts: list[Draft] = []
    decider = _email_of(e.by)
    seen_by = (e.by.email or "").lower()
    if decider:
        more = ""
        if req.is_open and e.decision is Decision.APPROVE:
            more = f" {_still_needed(req)} more approval(s) are needed before it runs."
        text = f"Thanks: you {verb} {call}{because}{more}"
        drafts.append(
            follow_up(
                cfg,
                thread,
                asked,
                decider,
                key=e.id,
                title=f"You {verb} it",
                text=text,
                after=_message_id_or_none(e.delivery),
            )
        )
    # An edit leaves the request open for approvals of the new arguments: the others are
    # asked again with them (an answer to an earlier email is refused: it showed others).
    ask_again = e.edited_args is not None and req.is_open
    note = (
        f"{e.by.label()} edited the arguments and approved them; these are the ones to decide on."
    )
    text = f"{e.by.label()} {verb} {call}{because}"
    for to in email_identities(req.approvers):
        if to in (decider, seen_by):
            continue
        if ask_again:
            first = message_id(asked.id, to, cfg.domain)
            drafts.append(
                _approval(
                    cfg,
                    thread,
                    asked,
                    to,
                    key=e.id,
                    expires_at=req.expires_at,
                    why=None,
                    note=note,
                    follows=first,
                )
            )
            continue
        drafts.append(
            follow_up(
                cfg,
                thread,
                asked,
                to,
                key=e.id,
                title=f"{verb.capitalize()} by {e.by.label()}",
                text=text,
            )
        )
    return drafts


def _answered(cfg: EmailConfig, thread: ThreadState, e: HumanAnswer) -> list[Draft]:
    req = thread.requests.get(e.request_id)
    answerer = _email_of(e.by)
    if req is None or not isinstance(req.asked, HumanQuestion) or not answerer:
        return []
    text = "Thanks: your answer went to the agent, which carries on from here."
    return [
        follow_up(
            cfg,
            thread,
            req.asked,
            answerer,
            key=e.id,
            title="Answer received",
            text=text,
            after=_message_id_or_none(e.delivery),
        )
    ]


def _reminded(cfg: EmailConfig, thread: ThreadState, e: Reminded) -> list[Draft]:
    req = thread.requests.get(e.request_id)
    if req is None or not req.is_open or not isinstance(req.asked, ApprovalRequested):
        return []
    # Approvals of arguments since edited no longer count: their voters are reminded too.
    voted = {_email_of(v.by) for v in req.approvals()}
    return [
        _approval(
            cfg,
            thread,
            req.asked,
            to,
            key=e.id,
            expires_at=req.expires_at,
            why=None,
            reminder=True,
            follows=message_id(req.asked.id, to, cfg.domain),
        )
        for to in email_identities(req.approvers)
        if to not in voted
    ]


def _escalated(cfg: EmailConfig, thread: ThreadState, e: Escalated) -> list[Draft]:
    req = thread.requests.get(e.request_id)
    if req is None or not isinstance(req.asked, ApprovalRequested):
        return []
    return [
        _approval(cfg, thread, req.asked, to, key=e.id, expires_at=e.expires_at, why=None)
        for to in email_identities(e.approvers)
    ]


def _expired(cfg: EmailConfig, thread: ThreadState, e: Expired) -> list[Draft]:
    req = thread.requests.get(e.request_id)
    if req is None:
        return []
    asked = req.asked
    if isinstance(asked, ApprovalRequested):
        people = email_identities(req.approvers)
        what = describe_call(asked.tool, _up_for_approval(thread, asked)[0])
    else:
        people = question_recipients(thread, asked)
        what = f"the question {asked.question!r}"
    text = f"Nobody answered in time: {what} expired, and your reply address no longer works."
    return [
        follow_up(cfg, thread, asked, to, key=e.id, title="Expired", text=text) for to in people
    ]


def _question(cfg: EmailConfig, thread: ThreadState, q: HumanQuestion, to: str) -> Draft:
    token = tokens.mint(q.request_id, to, _token_expiry(q.expires_at, q.at), cfg.secret)
    root = root_of(thread)
    context = {
        "agent": thread.agent,
        "question": q.question,
        "context": q.context,
        "choices": q.choices,
        "yes_no": q.format == "yes_no",
        "urgent": q.urgency == "high",
        "expires": to_utc(q.expires_at),
        # A typed answer: the web inbox shows its form; a reply carries it as JSON.
        "form_url": None,
        "fields": [],
    }
    if q.answer_schema is not None:
        context["form_url"] = f"{cfg.public_url}/inbox/requests/{q.request_id}"
        context["fields"] = to_field_lines(q.answer_schema)
    in_origin = to in originators(thread) and root is not None
    subject = with_re(origin_subject(thread)) if in_origin else f"Question from {thread.agent}"
    return Draft(
        key=q.id,
        to=to,
        subject=subject,
        message_id=message_id(q.id, to, cfg.domain),
        template="question",
        context=context,
        in_reply_to=root,
        references=(root,) if root else (),
        reply_to=tokens.to_reply_address(token, cfg.domain),
    )


FIELDS_SHOWN = 40


def to_field_lines(schema: dict[str, object]) -> list[str]:
    """What a typed answer's JSON holds, one line per field, e.g. ``replicas: a whole
    number (required)``; a form too large to list is one line saying so."""
    fields = [f for f in to_form(schema, strict=False) if isinstance(f, Field)]
    if len(fields) > FIELDS_SHOWN or (len(fields) == 1 and fields[0].kind is Kind.JSON):
        return ["JSON matching the question's schema (the form shows it)"]
    return [
        f"{'.'.join(f.path) or 'the answer'}: {_kind_words(f)}"
        + (" (required)" if f.required and f.path else "")
        for f in fields
    ]


def _kind_words(f: Field) -> str:
    choices = ", ".join(f'"{c}"' for c in f.choices)
    return {
        Kind.TEXT: "text",
        Kind.NUMBER: "a number",
        Kind.INTEGER: "a whole number",
        Kind.BOOLEAN: "true or false",
        Kind.DATE: 'a date, "YYYY-MM-DD"',
        Kind.CHOICE: f"one of {choices}",
        Kind.CHOICES: f"a list of {choices}",
        Kind.JSON: "JSON",
    }[f.kind]


def _up_for_approval(thread: ThreadState, e: ApprovalRequested) -> tuple[dict[str, Any], str]:
    """The arguments ``e`` is for now and their hash (as asked, unless since edited)."""
    req = thread.requests.get(e.request_id)
    return up_for_approval(req) if req is not None else (e.args, e.args_hash)


def _voted_on(req: Request, asked: ApprovalRequested, vote: ApprovalDecision) -> dict[str, Any]:
    """The arguments ``vote`` was cast on, by their hash: its own edit, an earlier edit,
    or those asked. (The thread may have moved on by the time the vote is told.)"""
    if vote.edited_args is not None:
        return vote.edited_args
    for earlier in req.votes:
        if earlier.edited_args is not None and earlier.args_hash == vote.args_hash:
            return earlier.edited_args
    return asked.args if vote.args_hash == asked.args_hash else up_for_approval(req)[0]


def _token_expiry(expires_at: float | None, asked_at: float) -> float:
    return expires_at if expires_at is not None else asked_at + TOKEN_TTL


def _still_needed(req: Request) -> int:
    needed = req.asked.min_approvals if isinstance(req.asked, ApprovalRequested) else 1
    return max(needed - len(req.approvals()), 0)


def _email_of(actor: Actor) -> str | None:
    return actor.email.lower() if actor.channel == "email" and actor.email else None


def _message_id_or_none(delivery: str | None) -> str | None:
    """The inbound Message-ID a decision came with (not a link's delivery key)."""
    return delivery if delivery and delivery.startswith("<") else None
