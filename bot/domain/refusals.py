"""The two rules every decision path asks: is the request still open, and may this person decide.

Both are pure: the caller passes the request, the actor and ``now``. Each
returns ``None`` (go ahead) or a typed refusal naming why. ``Decisions`` raises
it as an error (``refusal.error()``, the API's wording); channels tell the
person refused with ``to_words``, naming people their own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from bot.domain.errors import ConflictError, ForbiddenError, RefusedError
from bot.domain.events import Actor, ApprovalDecision, ApprovalRequested
from bot.domain.policy import (
    is_allowed,
    is_same_person,
    is_unaddressed,
    may_answer,
    may_be_same_person,
    to_person,
)
from bot.domain.reducer import Request, RequestStatus


@dataclass(frozen=True)
class Closed:
    """The request was already approved, rejected, answered, cancelled or expired."""

    request_id: str
    status: RequestStatus
    by: tuple[Actor, ...] = ()
    """Who closed it; nobody for an expiry or a cancellation."""
    at: float | None = None

    @property
    def message(self) -> str:
        by = f" by {self.who}" if self.who else ""
        return f"request {self.request_id} is already {self.status.value}{by} at {_utc(self.at)}"

    @property
    def who(self) -> str:
        return ", ".join(a.label() for a in self.by)

    def error(self) -> RefusedError:
        return ConflictError(
            self.message,
            refusal=self,
            status=self.status.value,
            decided_by=self.who or None,
            decided_at=_utc(self.at),
        )


@dataclass(frozen=True)
class Expired:
    """The request is past its expiry, though no worker has closed it yet."""

    request_id: str
    at: float

    @property
    def message(self) -> str:
        return f"request {self.request_id} has expired"

    def error(self) -> RefusedError:
        return ConflictError(self.message, refusal=self, status="expired")


@dataclass(frozen=True)
class NotAllowed:
    """The actor is not among those the request names: its approvers, or who answers a question."""

    actor: Actor
    allowed: tuple[str, ...]
    question: bool = False

    @property
    def message(self) -> str:
        if self.question:
            return f"{self.actor.label()} may not answer this question"
        return (
            f"{self.actor.label()} may not decide this request; "
            f"approvers: {', '.join(self.allowed)}"
        )

    def error(self) -> RefusedError:
        return ForbiddenError(self.message, refusal=self)


@dataclass(frozen=True)
class OwnRequest:
    """The actor asked for this and the policy does not allow self-approval."""

    actor: Actor

    @property
    def message(self) -> str:
        return f"{self.actor.label()} asked for this and may not approve it themselves"

    def error(self) -> RefusedError:
        return ForbiddenError(self.message, refusal=self)


@dataclass(frozen=True)
class MaybeOwnRequest:
    """The actor and the requester cannot be told apart (``policy.is_unsure``): one is known
    without an email address, the other by no id in that one's channel. The policy does not
    allow self-approval, so the actor may not approve (fail closed)."""

    actor: Actor
    requester: Actor

    @property
    def where(self) -> str:
        """The channel whose account without an email address leaves it open."""
        unknown = self.requester if is_unaddressed(to_person(self.requester)) else self.actor
        return unknown.channel

    @property
    def message(self) -> str:
        return (
            f"{self.actor.label()} may have asked for this: they and who asked "
            f"({self.requester.label()}) cannot be told apart, as one is known by a {self.where} "
            f"account without an email address and the other by no {self.where} account"
        )

    def error(self) -> RefusedError:
        return ForbiddenError(self.message, refusal=self)


@dataclass(frozen=True)
class AlreadyVoted:
    """The actor already approved these arguments; an N-of-M request waits for others."""

    actor: Actor
    vote: ApprovalDecision
    needed: int
    """How many distinct approvals the request needs."""
    counted: int
    """How many it has."""

    @property
    def missing(self) -> int:
        """How many more approvals, from other people, the request waits for."""
        return max(self.needed - self.counted, 1)

    @property
    def message(self) -> str:
        return f"{self.actor.label()} has already approved this request"

    def error(self) -> RefusedError:
        return ConflictError(self.message, refusal=self)


Refusal = Closed | Expired | NotAllowed | OwnRequest | MaybeOwnRequest | AlreadyVoted
"""Why a human may not decide or answer a request now."""


def why_closed(req: Request, now: float) -> Closed | Expired | None:
    """Why nobody can decide ``req`` any more, or None while it is open at ``now``."""
    if not req.is_open:
        return Closed(req.id, req.status, tuple(req.closed_by), req.closed_at)
    if req.expires_at is not None and req.expires_at <= now:
        return Expired(req.id, req.expires_at)
    return None


def is_open(req: Request, now: float) -> bool:
    """Whether ``req`` can still be decided or answered at ``now``."""
    return why_closed(req, now) is None


def why_refused(req: Request, actor: Actor, now: float) -> Refusal | None:
    """Why ``actor`` may not decide (or, for a question, answer) ``req`` at ``now``; None if
    they may.

    An approval refuses, in this order: someone the policy does not name, a closed
    request, the requester or someone who cannot be told apart from them (unless the
    policy allows self-approval), and someone who already approved the arguments now
    shown. A question: someone it does not ask, then a closed question.

    Someone who may not decide is told so before anything of the request's state: the
    same answer, open or closed, so that who decided a request, and when, is told only to
    those it asks. Those who know its outcome anyway (``_knows``: its requester, and who
    voted on it before an escalation named others) hear that it is closed.
    """
    asked = req.asked
    # Asked as "not an approval": an ``isinstance`` that holds is quick, one that fails on
    # a pydantic class is an ABC check (microseconds), and most requests are approvals.
    if not isinstance(asked, ApprovalRequested):
        if may_answer(actor, asked.answerers):
            return why_closed(req, now)
        return NotAllowed(actor, tuple(asked.answerers), question=True)
    closed = why_closed(req, now)
    if not is_allowed(actor, req.approvers) and (closed is None or not _knows(req, actor)):
        return NotAllowed(actor, tuple(req.approvers))
    if closed:
        return closed
    if not asked.allow_self_approval and may_be_same_person(actor, asked.requester):
        if is_same_person(actor, asked.requester):
            return OwnRequest(actor)
        return MaybeOwnRequest(actor, asked.requester)
    for vote in req.votes:
        if is_same_person(vote.by, actor) and vote.args_hash == req.args_hash:
            return AlreadyVoted(actor, vote, asked.min_approvals, len(req.approvals()))
    return None


def _knows(req: Request, actor: Actor) -> bool:
    """Whether ``actor`` is told a closed approval's outcome anyway: they asked for it, or
    voted on it (named by the policy then, if no longer since an escalation)."""
    asked = req.asked
    if isinstance(asked, ApprovalRequested) and is_same_person(actor, asked.requester):
        return True
    return any(is_same_person(vote.by, actor) for vote in req.votes)


def may_decide(req: Request, actor: Actor, now: float) -> bool:
    """Whether ``actor`` may decide (or answer) ``req`` at ``now``."""
    return why_refused(req, actor, now) is None


def to_words(
    refusal: Refusal,
    *,
    who: Callable[[Actor], str] = Actor.label,
    allowed: str | None = None,
) -> str:
    """``refusal`` as one sentence to the person refused, without its final full stop.

    Args:
        who: how the channel names the people who closed a request (a mention).
        allowed: who may decide instead, as the channel names them; by default
            as the policy does.
    """
    match refusal:
        case Expired() | Closed(status=RequestStatus.EXPIRED):
            return "This request has expired"
        case Closed():
            by = f" by {', '.join(who(a) for a in refusal.by)}" if refusal.by else ""
            return f"This request was already {refusal.status.value}{by}"
        case NotAllowed():
            names = allowed or ", ".join(refusal.allowed)
            what = "answer this question" if refusal.question else "decide this request"
            return f"You can't {what}; it is for {names}"
        case OwnRequest():
            return "You asked for this, so someone else must decide it"
        case MaybeOwnRequest():
            return (
                "Greenlight can't tell you apart from who asked for this (one of you is known "
                f"by a {refusal.where} account without an email address), so someone else "
                "must decide it"
            )
        case AlreadyVoted():
            more = f"{refusal.missing} more approval" + ("s" if refusal.missing > 1 else "")
            return f"You have already approved this request; it waits for {more} from someone else"
    assert_never(refusal)


def _utc(at: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at or 0))
