"""Email drafts and their threading: who in a thread reads email, Message-IDs, subjects. Pure.

Every email gets a Message-ID derived from what caused it (an event or an
inbound message) and its recipient, so a redelivery resends the very same
message, and a follow-up names the message it follows without a lookup.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from bot.domain.events import ApprovalRequested, HumanQuestion
from bot.domain.reducer import Request, ThreadState
from bot.domain.text import cut, to_call, to_shown
from channels.email.config import EmailConfig
from channels.email.mime import Inbound


@dataclass(frozen=True)
class Draft:
    """One email to send, before rendering.

    Attributes:
        key: what caused it (an event id, ``in:<hash>`` for an inbound message);
            with ``to`` it makes the send idempotent.
        template: ``approval``, ``question``, ``reply`` or ``notice``.
        auto: the ``Auto-Submitted`` value (RFC 3834): ``auto-generated`` for
            our own messages, ``auto-replied`` for answers to someone's email.
    """

    key: str
    to: str
    subject: str
    message_id: str
    template: str
    context: dict[str, Any]
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None
    auto: str = "auto-generated"
    headers: dict[str, str] = field(default_factory=dict)
    args_hash: str | None = None
    """The hash of the arguments an approval email shows: recorded with its Message-ID
    when sent, so a reply to it decides on what it showed (``Mailer.shown_hash``)."""


def message_id(key: str, recipient: str, domain: str) -> str:
    """The Message-ID of the email ``key`` caused for ``recipient``."""
    tag = hashlib.sha256(recipient.lower().encode()).hexdigest()[:10]
    return f"<gl.{key}.{tag}@{domain}>"


def for_sign_in(cfg: EmailConfig, to: str, link: str, *, valid_for: float) -> Draft:
    """The email with a web sign-in link; its key hides the link's token."""
    key = "signin." + hashlib.sha256(link.encode()).hexdigest()[:20]
    return Draft(
        key=key,
        to=to,
        subject="Your Greenlight sign-in link",
        message_id=message_id(key, to, cfg.domain),
        template="signin",
        context={"link": link, "minutes": max(1, round(valid_for / 60))},
    )


def for_inbound(
    cfg: EmailConfig, mail: Inbound, text: str, *, title: str, reply_to: str | None = None
) -> Draft:
    """A short answer to someone's email (a refusal, a request to answer again)."""
    key = "in." + hashlib.sha256(mail.message_id.encode()).hexdigest()[:20]
    refs = (*mail.references, mail.message_id)
    return Draft(
        key=key,
        to=mail.sender,
        subject=with_re(mail.subject or title),
        message_id=message_id(key, mail.sender, cfg.domain),
        template="notice",
        context={"title": title, "text": text},
        in_reply_to=mail.message_id,
        references=refs[-10:],
        reply_to=reply_to,
        auto="auto-replied",
    )


# --- who ---------------------------------------------------------------------------------


def originators(thread: ThreadState) -> list[str]:
    """Who talks to the agent by email in this thread: its starter and the last speaker."""
    if thread.origin is None or thread.origin.channel != "email":
        return []
    found: list[str] = []
    for actor in (thread.created_by, thread.last_user):
        if actor and actor.channel == "email" and actor.email and actor.email not in found:
            found.append(actor.email.lower())
    return found


def email_identities(names: list[str]) -> list[str]:
    """The email addresses among policy identities (``ops@x``, ``email:ops@x``)."""
    found: list[str] = []
    for name in names:
        address = name.removeprefix("email:").strip().lower()
        if "@" in address and ":" not in address and address not in found:
            found.append(address)
    return found


def question_recipients(thread: ThreadState, q: HumanQuestion) -> list[str]:
    """Who gets a question by email: its answerers' addresses, and the thread's starter
    when anyone may answer or she is among the answerers."""
    found = email_identities(q.answerers)
    for address in originators(thread):
        allowed = not q.answerers or address in found or f"email:{address}" in q.answerers
        if allowed and address not in found:
            found.append(address)
    return found


# --- threading -----------------------------------------------------------------------------


def in_origin(
    cfg: EmailConfig,
    thread: ThreadState,
    key: str,
    to: str,
    *,
    template: str,
    context: dict[str, Any],
) -> Draft:
    """A message to someone in the email conversation the thread started from."""
    root = root_of(thread)
    return Draft(
        key=key,
        to=to,
        subject=with_re(origin_subject(thread)),
        message_id=message_id(key, to, cfg.domain),
        template=template,
        context={"agent": thread.agent, **context},
        in_reply_to=root,
        references=(root,) if root else (),
        reply_to=cfg.agent_address(thread.agent),
    )


def follow_up(
    cfg: EmailConfig,
    thread: ThreadState,
    asked: ApprovalRequested | HumanQuestion,
    to: str,
    *,
    key: str,
    title: str,
    text: str,
    after: str | None = None,
) -> Draft:
    """A message in the conversation that the request's email started with ``to``."""
    first = message_id(asked.id, to, cfg.domain)
    root = root_of(thread)
    if isinstance(asked, ApprovalRequested):
        subject = approval_subject(thread.agent, asked)
    elif to in originators(thread):
        subject = origin_subject(thread)
    else:
        subject = f"Question from {thread.agent}"
    refs = tuple(x for x in (root, first, after) if x)
    return Draft(
        key=key,
        to=to,
        subject=with_re(subject),
        message_id=message_id(key, to, cfg.domain),
        template="notice",
        context={"title": title, "text": text},
        in_reply_to=after or first,
        references=refs,
    )


def root_of(thread: ThreadState) -> str | None:
    """The Message-ID that started the thread by email, if it did."""
    origin = thread.origin
    return origin.conversation if origin and origin.channel == "email" else None


def origin_subject(thread: ThreadState) -> str:
    """The subject of the email that started the thread."""
    subject = thread.origin.metadata.get("subject") if thread.origin else None
    return str(subject or f"Your request to {thread.agent}")


def up_for_approval(req: Request) -> tuple[dict[str, Any], str]:
    """The arguments an approval is for now, and their hash: an approver's edit of
    them, else those asked. What an email or page shows, and what a decision names."""
    assert isinstance(req.asked, ApprovalRequested)
    return dict(req.arguments), req.args_hash or req.asked.args_hash


def approval_subject(agent: str, e: ApprovalRequested) -> str:
    """The subject of an approval email (and, with ``Re:``, of what follows it): with the
    arguments first asked, so the conversation keeps one subject after an edit."""
    return cut(f"Approval needed: {agent} wants to run {describe_call(e.tool, e.args)}", 150)


def with_re(subject: str) -> str:
    """``Re: subject``, once."""
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def describe_call(tool: str, args: dict[str, Any]) -> str:
    """``tool(name=value, …)``, short enough for a subject line."""
    return to_call(tool, args, limit=100)


def to_rows(args: dict[str, Any]) -> list[tuple[str, str]]:
    """Tool arguments as (name, value) rows for a table."""
    return [(k, to_shown(v)) for k, v in args.items()]


def to_utc(at: float | None) -> str | None:
    """A Unix time as ``YYYY-MM-DD HH:MM UTC``."""
    if at is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
