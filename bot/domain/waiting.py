"""What waits for a person: the one rule and the one order, over open requests' summaries.

Pure. A summary (``Waiting``) is what the indexes keep beside each open request
(``bot.storage.indexes``), so a list of ten thousand open requests loads no
thread. ``waits_for`` is ``bot.domain.refusals.may_decide`` read from a summary,
plus what a list needs: a question that names no answerers is listed for the
person the agent last heard, not for everyone who could reach its conversation.
The web inbox and Slack's App Home both list through here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.domain.events import Actor, ApprovalRequested
from bot.domain.policy import is_named, is_unsure, to_person
from bot.domain.reducer import Request, ThreadState


@dataclass(frozen=True)
class Waiting:
    """One open request as a list shows it, kept beside the ``open`` index."""

    request: str
    thread: str
    agent: str
    kind: str
    """``approval`` or ``question``."""
    title: str
    """The tool an approval is for, or the question asked (shortened)."""
    urgency: str
    """A question's urgency; an approval is ``high`` when its tool is risky, else ``normal``."""
    channel: str
    """Where the thread came from (``slack``, ``email``, ``api``, ...)."""
    approvers: list[str]
    """Who may decide (an approval) or answer (a question; empty: its conversation)."""
    needed: int
    approved: int
    expires_at: float | None
    opened_at: float
    requester: str
    heard: list[str] = field(default_factory=list)
    """For a question that names nobody: the person the agent last heard (``to_person``),
    whose conversation it belongs to."""
    own: list[str] = field(default_factory=list)
    """The requester (``to_person``) when they may not approve their own request."""
    voted: list[str] = field(default_factory=list)
    """Who (``to_person``) already approved the arguments shown: it waits for others."""

    @property
    def tool(self) -> str | None:
        return self.title if self.kind == "approval" else None


def to_waiting(state: ThreadState, req: Request) -> Waiting:
    """The summary of an open request of ``state``."""
    asked = req.asked
    own: list[str] = []
    voted: list[str] = []
    if isinstance(asked, ApprovalRequested):
        title, who, needed = asked.tool, list(req.approvers), asked.min_approvals
        urgency = "high" if asked.risky else "normal"
        requester = asked.requester.label()
        own = [] if asked.allow_self_approval else to_person(asked.requester)
        voted = sorted(
            {n for v in req.votes if v.args_hash == req.args_hash for n in to_person(v.by)}
        )
    else:
        title, urgency, who, needed = asked.question[:200], asked.urgency.value, asked.answerers, 1
        requester = state.last_user.label() if state.last_user else ""
    return Waiting(
        request=req.id,
        thread=state.id,
        agent=state.agent,
        kind=req.kind,
        title=title,
        urgency=urgency,
        channel=state.origin.channel if state.origin else "",
        approvers=list(who),
        needed=needed,
        approved=len(req.approvals()),
        expires_at=req.expires_at,
        opened_at=asked.at,
        requester=requester,
        heard=to_person(state.last_user) if state.last_user and not who else [],
        own=own,
        voted=voted,
    )


def is_open(item: Waiting, now: float) -> bool:
    """Whether ``item`` can still be decided at ``now`` (an expiry no worker swept yet: not)."""
    return item.expires_at is None or item.expires_at > now


def waits_for(item: Waiting, names: set[str], now: float) -> bool:
    """Whether ``item`` waits for the actor of ``names`` (``Actor.names()``) at ``now``.

    As ``refusals.why_refused``: open, named by the policy, not the requester nor someone
    who cannot be told apart from them (unless self-approval is allowed), not already
    approved by them. A question naming no answerers waits for the person the agent last
    heard.
    """
    if not is_open(item, now):
        return False
    if item.kind == "question" and not item.approvers:
        return not names.isdisjoint(item.heard)
    if not is_named(names, item.approvers):
        return False
    if item.own and (not names.isdisjoint(item.own) or is_unsure(item.own, names)):
        return False
    return names.isdisjoint(item.voted)


def to_order(item: Waiting) -> tuple[float, int, float]:
    """A sort key, most urgent first: the soonest expiry, then high urgency, then the oldest."""
    expires = item.expires_at if item.expires_at is not None else math.inf
    return expires, 0 if item.urgency == "high" else 1, item.opened_at


def waiting_for(every: Iterable[Waiting], actor: Actor, now: float) -> list[Waiting]:
    """What of ``every`` waits for ``actor`` at ``now``, most urgent first."""
    names = actor.names()
    return sorted((w for w in every if waits_for(w, names, now)), key=to_order)
