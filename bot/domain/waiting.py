"""What waits for a person: the open requests they may decide or answer, most urgent first.

Pure. Who may decide is the one rule of ``bot.domain.refusals``; this module adds
only what a list needs: a question that names no answerers is listed for the
person the agent talks to, not for everyone who could reach its conversation,
and the order.
"""

from __future__ import annotations

import math

from bot.domain.events import Actor, HumanQuestion, Urgency
from bot.domain.policy import is_same_person
from bot.domain.reducer import Request, ThreadState
from bot.domain.refusals import may_decide


def waits_for(req: Request, thread: ThreadState, actor: Actor, now: float) -> bool:
    """Whether ``req`` (of ``thread``) waits for ``actor`` at ``now``.

    They may decide (or answer) it under ``may_decide``; a question naming no
    answerers belongs to its conversation, so it waits for the person the agent
    last heard there, not for everyone.
    """
    if isinstance(req.asked, HumanQuestion) and not req.asked.answerers:
        heard = thread.last_user
        if heard is None or not is_same_person(heard, actor):
            return False
    return may_decide(req, actor, now)


def to_urgency(req: Request) -> tuple[float, int, float]:
    """A sort key, most urgent first: the soonest expiry, then urgent questions, then the oldest."""
    expires = req.expires_at if req.expires_at is not None else math.inf
    asked = req.asked
    urgent = 0 if isinstance(asked, HumanQuestion) and asked.urgency is Urgency.HIGH else 1
    return expires, urgent, asked.at
