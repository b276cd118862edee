"""The composition root: builds every collaborator once, in order, and nothing after.

Storage first (thread logs, indexes, retries), then the engine (inbox,
decisions, loop), then the channels, each given only its ``ChannelPorts``,
then the outbox that delivers to them. ``Runtime.worker`` makes the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.domain.agents import Agent
from bot.domain.clock import Clock, SystemClock
from bot.domain.errors import ConfigError
from bot.domain.model import Model
from bot.domain.policy import ApprovalPolicy, Groups, check_policies, check_policy
from bot.domain.reducer import ThreadState
from bot.domain.triage import TRIAGE
from bot.engine.decisions import Decisions
from bot.engine.inbox import Inbox
from bot.engine.loop import Loop
from bot.engine.outbox import Outbox
from bot.engine.ports import Channel, ChannelPorts, Directory
from bot.engine.retention import Retention
from bot.engine.waiting import Summaries
from bot.engine.worker import Worker, consumer_name
from bot.storage.archive import Archive
from bot.storage.audit import AuditLog
from bot.storage.channelstate import ChannelState
from bot.storage.connection import Client
from bot.storage.indexes import Indexes
from bot.storage.openkeys import OpenKeys
from bot.storage.queue import Queue
from bot.storage.retries import Retries
from bot.storage.threadlog import ThreadLog
from bot.storage.timers import Timers

log = logging.getLogger(__name__)

PortsFor = Callable[[str], ChannelPorts]
"""The ports of the channel with this name."""

MakeChannels = Callable[[PortsFor], Sequence[Channel]]


@dataclass(frozen=True)
class Runtime:
    """Everything a web or worker process needs, built once by ``build_runtime``."""

    redis: Client
    clock: Clock
    log: ThreadLog
    indexes: Indexes
    waiting: Summaries
    """What waits for people: the open requests' summaries (the inbox, a channel's lists)."""
    audit: AuditLog
    open_keys: OpenKeys
    """Which open request a call asked again joins (``POST /approvals`` with ``open_key``)."""
    agents: Mapping[str, Agent]
    groups: Groups
    policies: Mapping[str, ApprovalPolicy]
    """Approval policies agents elsewhere name (APPROVAL_POLICIES), checked at start-up."""
    model: Model
    loop: Loop
    decisions: Decisions
    inbox: Inbox
    outbox: Outbox
    channels: tuple[Channel, ...]
    archive: Archive | None
    retention: Retention | None

    @property
    def directories(self) -> list[Directory]:
        """The channels that say who their people are (``Directory``)."""
        return [c for c in self.channels if isinstance(c, Directory)]

    def worker(
        self,
        *,
        name: str | None = None,
        concurrency: int = 32,
        lease_ms: int = 30_000,
        claim_idle_ms: int = 60_000,
        block_ms: int = 1000,
        on_step: Callable[[ThreadState], None] | None = None,
        step_attempts: int = 5,
    ) -> Worker:
        return Worker(
            self.log,
            self.loop,
            Queue(self.redis, name or consumer_name(), self.clock),
            Timers(self.redis, self.clock),
            self.outbox,
            retention=self.retention,
            concurrency=concurrency,
            lease_ms=lease_ms,
            claim_idle_ms=claim_idle_ms,
            block_ms=block_ms,
            on_step=on_step,
            step_attempts=step_attempts,
        )


def build_runtime(
    redis: Client,
    agents: dict[str, Agent],
    model: Model,
    *,
    channels: MakeChannels | None = None,
    clock: Clock | None = None,
    groups: Groups | None = None,
    policies: Mapping[str, ApprovalPolicy] | None = None,
    max_errors: int = 3,
    delivery_base_delay: float = 2.0,
    delivery_give_up_after: float = 3600.0,
    archive: Archive | None = None,
    retain_for: float | None = None,
    default_agent: str | None = None,
    cache_events: int = 50_000,
) -> Runtime:
    """Build a runtime around a Redis client (``decode_responses=True``).

    Args:
        channels: makes the channels from their ports; None: no channel.
        archive: where finished threads go; with ``retain_for`` (seconds), the
            workers move finished threads older than that out of Redis.
        clock: the one clock every part reads (the system clock when None).
        default_agent: where a message naming no agent goes; None: the worker triages it.
        cache_events: how many events of recent threads the process keeps in memory.

    Raises:
        ConfigError: a gated tool's or a named policy's approvers resolve to nobody
            (fail closed); ``default_agent`` is no agent; an agent is named ``triage``.
    """
    if TRIAGE in agents:
        raise ConfigError(f"no agent may be named {TRIAGE!r}: it stands for 'not chosen yet'")
    if default_agent is not None and default_agent not in agents:
        known = ", ".join(sorted(agents))
        raise ConfigError(f"DEFAULT_AGENT {default_agent!r} is no agent; known: {known}")
    groups = groups or Groups()
    policies = dict(policies or {})
    warnings = check_policies(agents, groups)
    for name, policy in policies.items():
        warnings += check_policy(policy, groups, f"APPROVAL_POLICIES {name!r}")
    for warning in warnings:
        log.warning("%s", warning)
    clock = SystemClock() if clock is None else clock
    thread_log = ThreadLog(redis, clock, cache_events=cache_events)
    inbox = Inbox(thread_log, set(agents), default_agent=default_agent, archive=archive)
    decisions = Decisions(thread_log, agents, clock=clock)
    indexes = Indexes(redis)
    waiting = Summaries(thread_log, indexes)

    def ports(name: str) -> ChannelPorts:
        state = ChannelState(redis, name)
        return ChannelPorts(inbox, decisions, thread_log, state, agents, clock, waiting)

    made = tuple(channels(ports)) if channels else ()
    outbox = Outbox(
        thread_log,
        Retries(redis),
        made,
        clock,
        base_delay=delivery_base_delay,
        give_up_after=delivery_give_up_after,
    )
    audit = AuditLog(redis)
    retention = None
    if archive is not None and retain_for is not None:
        names = [c.name for c in made]
        retention = Retention(
            thread_log, indexes, audit, archive, clock, age=retain_for, channels=names
        )
    return Runtime(
        redis=redis,
        clock=clock,
        log=thread_log,
        indexes=indexes,
        waiting=waiting,
        audit=audit,
        open_keys=OpenKeys(redis),
        agents=agents,
        groups=groups,
        policies=policies,
        model=model,
        loop=Loop(
            thread_log,
            agents,
            model,
            groups=groups,
            max_errors=max_errors,
            clock=clock,
            directories=[c for c in made if isinstance(c, Directory)],
        ),
        decisions=decisions,
        inbox=inbox,
        outbox=outbox,
        channels=made,
        archive=archive,
        retention=retention,
    )
