"""Wires the collaborators once (store, loop, decisions, inbox, outbox, queue)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError

from bot.domain.agents import Agent
from bot.domain.model import Model
from bot.domain.policy import Groups, check_policies
from bot.domain.reducer import ThreadState
from bot.engine.decisions import Decisions
from bot.engine.inbox import Inbox
from bot.engine.loop import Loop
from bot.engine.outbox import Channel, Outbox
from bot.engine.worker import Worker, consumer_name
from bot.storage.queue import Queue
from bot.storage.store import Store

log = logging.getLogger(__name__)


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis (C): redis-py 5.2's asyncio client packs in Python,
    which measured ~10% of a worker's CPU (bench/cycles.py)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # 'SCRIPT LOAD' is two words on the wire
            args = (*args[0].encode().split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


class _Tcp(_HiredisPacking, Connection):
    pass


class _Tls(_HiredisPacking, SSLConnection):
    pass


class _Unix(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Tcp,
    SSLConnection: _Tls,
    UnixDomainSocketConnection: _Unix,
}


def connect(url: str) -> Redis:
    """A Redis client for ``url`` (``decode_responses=True``), as Greenlight uses it."""
    redis: Redis = Redis.from_url(url, decode_responses=True)
    pool = redis.connection_pool
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    return redis


@dataclass
class Runtime:
    """Everything a web or worker process needs, built once."""

    redis: Redis
    store: Store
    agents: dict[str, Agent]
    model: Model
    loop: Loop
    decisions: Decisions
    inbox: Inbox
    outbox: Outbox
    channels: list[Channel] = field(default_factory=list)

    def worker(
        self,
        *,
        name: str | None = None,
        concurrency: int = 32,
        lease_ms: int = 30_000,
        claim_idle_ms: int = 60_000,
        block_ms: int = 1000,
        on_step: Callable[[ThreadState], None] | None = None,
    ) -> Worker:
        queue = Queue(self.redis, name or consumer_name(), lease_ms=lease_ms)
        return Worker(
            self.loop,
            queue,
            self.outbox,
            concurrency=concurrency,
            claim_idle_ms=claim_idle_ms,
            block_ms=block_ms,
            on_step=on_step,
        )


def build_runtime(
    redis: Redis,
    agents: dict[str, Agent],
    model: Model,
    *,
    channels: Sequence[Channel] = (),
    groups: Groups | None = None,
    max_errors: int = 3,
    delivery_base_delay: float = 2.0,
    delivery_give_up_after: float = 3600.0,
) -> Runtime:
    """Build a runtime around a Redis client (``decode_responses=True``).

    Raises:
        ConfigError: a gated tool's approvers resolve to nobody (fail closed).
    """
    groups = groups or Groups()
    for warning in check_policies(agents, groups):
        log.warning("%s", warning)
    store = Store(redis)
    outbox = Outbox(
        store, channels, base_delay=delivery_base_delay, give_up_after=delivery_give_up_after
    )
    return Runtime(
        redis=redis,
        store=store,
        agents=agents,
        model=model,
        loop=Loop(store, agents, model, groups=groups, max_errors=max_errors),
        decisions=Decisions(store, agents),
        inbox=Inbox(store, set(agents)),
        outbox=outbox,
        channels=list(channels),
    )
