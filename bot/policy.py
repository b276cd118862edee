"""Approval policy, declared with each tool: when approval is needed and who may give it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from bot.events import Actor, OnExpiry

Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class ApprovalPolicy:
    """When a tool call needs a human's approval, and whose.

    Attributes:
        required: ``True`` (always), ``False`` (never) or a predicate on the
            validated arguments, e.g. ``lambda a: a.amount > 500``.
        approvers: identities (``U123``, ``slack:U123``, ``ops@example.com``)
            or ``group:<name>`` resolved through the settings' approver groups.
            Empty: anyone who can reach the request may decide.
        min_approvals: how many distinct approvers must approve (N of M).
        allow_self_approval: whether the person who asked may approve.
        expires_in: seconds until the request expires; None never expires.
        on_expiry: reject, or escalate to ``escalate_to`` with a fresh expiry.
        remind_before: seconds before expiry at which to remind approvers.
        approvals_channel: where a channel should post the card (a Slack
            channel id); None posts in the conversation itself.
        risky: ask for a confirmation step before approving (Slack dialog).
    """

    required: bool | Predicate = True
    approvers: tuple[str, ...] = ()
    min_approvals: int = 1
    allow_self_approval: bool = False
    expires_in: float | None = 3600.0
    on_expiry: OnExpiry = OnExpiry.REJECT
    escalate_to: tuple[str, ...] = ()
    remind_before: tuple[float, ...] = ()
    approvals_channel: str | None = None
    risky: bool = False

    def is_required(self, args: BaseModel) -> bool:
        """Whether this call, with these arguments, needs approval."""
        if callable(self.required):
            return bool(self.required(args))
        return self.required


NEVER = ApprovalPolicy(required=False)


@dataclass(frozen=True)
class Groups:
    """Named groups of identities (``group:oncall``), from settings."""

    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def expand(self, names: tuple[str, ...] | list[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            if name.startswith("group:"):
                out.extend(self.members.get(name.removeprefix("group:"), ()))
            else:
                out.append(name)
        return sorted({n.lower() if "@" in n else n for n in out})


def is_allowed(actor: Actor, allowed: list[str]) -> bool:
    """True when ``actor`` is one of ``allowed``; an empty list allows anyone."""
    if not allowed:
        return True
    return bool(actor.names() & set(allowed))


def is_same_person(a: Actor, b: Actor) -> bool:
    """True when two actors are the same human, even across channels (by email)."""
    if (a.channel, a.id) == (b.channel, b.id):
        return True
    return bool(a.email and b.email and a.email.lower() == b.email.lower())


def args_hash(args: Mapping[str, Any]) -> str:
    """A short stable hash of tool arguments, binding a decision to what was shown."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
