"""Approval policy, declared with each tool: when approval is needed and who may give it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bot.domain.errors import ConfigError
from bot.domain.events import Actor, ApprovalRequested, OnExpiry, ToolCall

Predicate = Callable[[Any], bool]

ANYONE = "*"
"""The explicit approver "anyone who can reach the request": never what an empty list means."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """When a tool call needs a human's approval, and whose.

    Attributes:
        required: ``True`` (always), ``False`` (never) or a predicate on the
            validated arguments, e.g. ``lambda a: a.amount > 500``.
        approvers: identities (``U123``, ``slack:U123``, ``ops@example.com``)
            or ``group:<name>`` resolved through the settings' approver groups,
            or ``ANYONE``. They must resolve to somebody: start-up fails otherwise.
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

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""An approver as a policy names it."""
_MAX_TTL = 90 * 86400.0


class PolicySpec(BaseModel):
    """An approval policy written as data: in a request from an agent that runs elsewhere
    (``POST /approvals``), or by name in the ``APPROVAL_POLICIES`` setting."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    approvers: list[Name] = Field(min_length=1, max_length=100)
    """Identities (``U123``, ``slack:U123``, ``ops@example.com``, ``api:dave``),
    ``group:<name>`` from APPROVER_GROUPS, or ``*`` for anyone who can reach the request."""
    min_approvals: int = Field(1, ge=1, le=20)
    """How many distinct approvers must approve (N of M)."""
    allow_self_approval: bool = False
    """Whether the requester may approve its own request."""
    expires_in: float | None = Field(3600.0, gt=0, le=_MAX_TTL)
    """Seconds until the request expires; null: never."""
    on_expiry: OnExpiry = OnExpiry.REJECT
    """``reject``, or ``escalate`` to ``escalate_to`` with a fresh expiry."""
    escalate_to: list[Name] = Field(default_factory=list, max_length=100)
    remind_before: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list, max_length=10)
    """Seconds before expiry at which to remind the approvers."""
    risky: bool = False
    """Ask for a confirmation step before approving (Slack)."""

    def to_policy(self, *, approvals_channel: str | None = None) -> ApprovalPolicy:
        """The policy as the loop's tools declare theirs."""
        return ApprovalPolicy(
            approvers=tuple(self.approvers),
            min_approvals=self.min_approvals,
            allow_self_approval=self.allow_self_approval,
            expires_in=self.expires_in,
            on_expiry=self.on_expiry,
            escalate_to=tuple(self.escalate_to),
            remind_before=tuple(self.remind_before),
            approvals_channel=approvals_channel,
            risky=self.risky,
        )


@dataclass(frozen=True)
class Groups:
    """Named groups of identities (``group:oncall``), from settings.

    Attributes:
        members: each group's identities.
        allow_empty: groups that may be empty on purpose; an empty one then
            stands for ``admins``, so only they can decide.
        admins: who decides for a group allowed to be empty.
    """

    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow_empty: frozenset[str] = frozenset()
    admins: tuple[str, ...] = ()

    def expand(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """The identities ``names`` stand for; a group allowed empty stands for the admins."""
        if not names:  # most policies escalate to nobody
            return []
        out: list[str] = []
        for name in names:
            if name.startswith("group:"):
                out.extend(
                    self.members.get(name.removeprefix("group:"), ()) or self._stand_in(name)
                )
            else:
                out.append(name)
        return sorted({n.lower() if "@" in n else n for n in out})

    def empty_in(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """The groups among ``names`` that are allowed empty and are (only admins decide)."""
        return [n for n in names if n.startswith("group:") and self._stand_in(n)]

    def check(self, names: tuple[str, ...], where: str) -> None:
        """Fail when ``names`` resolve to nobody: a missing or empty group is never "anyone".

        Raises:
            ConfigError: naming ``where`` (agent and tool) and each group at fault.
        """
        for name in names:
            group = name.removeprefix("group:")
            if not name.startswith("group:") or self.members.get(group):
                continue
            if group not in self.members:
                known = ", ".join(sorted(self.members)) or "none"
                raise ConfigError(
                    f"{where}: approver group {group!r} is not in APPROVER_GROUPS "
                    f"(groups: {known}); name its members, or the policy names the wrong group"
                )
            if group not in self.allow_empty:
                raise ConfigError(
                    f"{where}: approver group {group!r} is empty, so nobody could decide; "
                    f"name its members in APPROVER_GROUPS, or list it in "
                    f"APPROVER_GROUPS_ALLOW_EMPTY to let only ADMINS decide"
                )
            if not self.admins:
                raise ConfigError(
                    f"{where}: approver group {group!r} may be empty, but ADMINS names nobody"
                )
        if not self.expand(names):
            raise ConfigError(f"{where}: the policy names no approver (ANYONE must be explicit)")

    def _stand_in(self, name: str) -> tuple[str, ...]:
        group = name.removeprefix("group:")
        if self.members.get(group) or group not in self.allow_empty:
            return ()
        return self.admins


def is_allowed(actor: Actor, allowed: list[str]) -> bool:
    """True when ``actor`` is one of ``allowed``, or ``allowed`` names ``ANYONE``.

    An empty list allows nobody (fail closed).
    """
    return is_named(actor.names(), allowed)


def is_named(names: set[str], allowed: list[str]) -> bool:
    """``is_allowed`` for an actor's ``names()`` computed once, to check many lists."""
    return ANYONE in allowed or not names.isdisjoint(allowed)


def who_may_approve(approvers: list[str], requester: Actor, *, self_approval: bool) -> list[str]:
    """Those of ``approvers`` (expanded) who may approve a request of ``requester``: all of
    them, or, unless the policy allows ``self_approval``, all but those naming the
    requester themselves (a group of theirs names others too)."""
    if self_approval:
        return approvers
    groups = {n for g in requester.groups for n in (g, f"{requester.channel}:{g}")}
    own = requester.names() - groups
    return [a for a in approvers if a not in own]


def may_answer(actor: Actor, answerers: list[str]) -> bool:
    """Whether ``actor`` may answer a question.

    A question that names no answerers belongs to its conversation: whoever
    can reach it there answers (the person who asked the agent, an approver
    escalated to). Approvals never work this way: see ``is_allowed``.
    """
    return not answerers or is_allowed(actor, answerers)


def check_policies(agents: Mapping[str, Any], groups: Groups) -> list[str]:
    """Check every gated tool's approvers at start-up; returns warnings to log.

    Raises:
        ConfigError: a policy's approvers (or escalation) resolve to nobody.
    """
    warnings: list[str] = []
    for agent in agents.values():
        for tool in agent.tools:
            policy: ApprovalPolicy = tool.approval
            if policy.required is not False:
                where = f"agent {agent.name!r}, tool {tool.name!r}"
                warnings += check_policy(policy, groups, where)
    return warnings


def check_policy(policy: ApprovalPolicy, groups: Groups, where: str) -> list[str]:
    """Check one policy's approvers (and escalation); returns warnings to log.

    Raises:
        ConfigError: they resolve to nobody; the message names ``where``.
    """
    groups.check(policy.approvers, where)
    if policy.on_expiry == OnExpiry.ESCALATE:
        groups.check(policy.escalate_to, f"{where} (escalate_to)")
    return [
        f"{where}: {name} is empty (APPROVER_GROUPS_ALLOW_EMPTY): only ADMINS "
        f"({', '.join(groups.admins)}) can decide its requests"
        for name in groups.empty_in([*policy.approvers, *policy.escalate_to])
    ]


def to_approval(
    policy: ApprovalPolicy,
    call: ToolCall,
    *,
    groups: Groups,
    request_id: str,
    requester: Actor,
    now: float,
    reason: str | None = None,
    args_schema: dict[str, Any] | None = None,
) -> ApprovalRequested:
    """The request for approval of ``call`` under ``policy``, asked at ``now``: groups
    expanded into people, expiry and reminders timed from ``now``.

    The one construction: the loop's gated tools and agents that run elsewhere both use it.
    """
    expires = now + policy.expires_in if policy.expires_in else None
    return ApprovalRequested(
        at=now,  # the clock its expiry and reminders are read from
        request_id=request_id,
        call_id=call.call_id,
        tool=call.tool,
        args=call.args,
        requester=requester,
        reason=reason,
        approvers=groups.expand(policy.approvers),
        min_approvals=policy.min_approvals,
        allow_self_approval=policy.allow_self_approval,
        expires_at=expires,
        on_expiry=policy.on_expiry,
        escalate_to=groups.expand(policy.escalate_to),
        remind_at=[expires - b for b in policy.remind_before if expires and expires - b > now],
        approvals_channel=policy.approvals_channel,
        risky=policy.risky,
        args_schema=args_schema,
    )


LINKED_BY_EMAIL = frozenset({"slack", "email", "web"})
"""Channels whose people are one person across channels by their email address. A person
of one of them known without an address (a Slack user ``users.info`` did not describe in
time, or an app without ``users:read.email``) may be anyone of the others."""


def to_person(actor: Actor) -> list[str]:
    """The names that make another actor the same person (``is_same_person``): their id in
    their channel (first), their email, and who they are in other channels (``elsewhere``)."""
    names = [f"{actor.channel}:{actor.id}"]
    if actor.email:
        names.append(f"email:{actor.email.lower()}")
    return names + [e for e in actor.elsewhere if e not in names]


def is_same_person(a: Actor, b: Actor) -> bool:
    """True when two actors are the same human: one of their ids, in any channel, or their
    email is the same (``to_person``)."""
    return not set(to_person(a)).isdisjoint(to_person(b))


def may_be_same_person(a: Actor, b: Actor) -> bool:
    """True unless ``a`` and ``b`` are known to be two people: the same person, or two that
    cannot be told apart (``is_unsure``). Fail closed: the self-approval rule asks this."""
    return is_same_person(a, b) or is_unsure(to_person(a), to_person(b))


def is_unsure(person: Collection[str], names: Collection[str]) -> bool:
    """Whether the person of ``person`` (``to_person``) and the actor of ``names`` (their
    ``to_person``, or ``Actor.names()``), sharing no name, may still be one human.

    They may when one of them is known without an address in a channel linked by email
    (``is_unaddressed``), and the other, a person of such a channel too, is known by no id
    in that channel: then nothing tells them apart. People of other channels (``api``,
    ``webhook``) are known by their names alone, as always.
    """
    if not set(person).isdisjoint(names):
        return False
    return _is_unsure(person, names) or _is_unsure(names, person)


def is_unaddressed(person: Collection[str]) -> bool:
    """Whether a person (``to_person``) is of a channel linked by email (``LINKED_BY_EMAIL``)
    but known without an email address: a Slack user ``users.info`` did not describe."""
    return bool(_unaddressed_in(person))


def _unaddressed_in(person: Collection[str]) -> set[str]:
    """The channels linked by email where ``person`` is known, if known there without an
    address; empty otherwise."""
    if any(n.startswith("email:") for n in person):
        return set()
    return {_channel(n) for n in person} & LINKED_BY_EMAIL


def _is_unsure(unknown: Collection[str], other: Collection[str]) -> bool:
    """``is_unsure`` one way: ``unknown`` has no address, ``other`` no id where it is."""
    where = _unaddressed_in(unknown)
    theirs = {_channel(n) for n in other}
    return bool(where) and not theirs.isdisjoint(LINKED_BY_EMAIL) and theirs.isdisjoint(where)


def _channel(name: str) -> str:
    """The channel of a name written ``channel:id``; "" for a bare id or address."""
    channel, colon, _ = name.partition(":")
    return channel if colon else ""
