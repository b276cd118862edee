"""The one compare-and-append loop: read, build the events, append at the version read.

Every writer (inbox, decisions, the loop, the outbox) goes through ``write``:
on a version clash it re-reads the thread and builds again, a bounded number
of times, so of two racing writers exactly one wins and the other sees its
effect before deciding what to write (invariant 2).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.domain.errors import ContentionError, GreenlightError, VersionConflict
from bot.domain.events import Event
from bot.domain.reducer import ThreadState
from bot.engine.tracing import traceparent
from bot.storage.threadlog import ReleaseIf, ThreadLog

ATTEMPTS = 16
"""Clashes one write survives; more means the thread changes faster than it can be read."""

Build = Callable[[ThreadState], Sequence[Event] | Awaitable[Sequence[Event]]]
"""What to append given the thread as read; nothing to append: an empty list. It may
raise a ``GreenlightError`` to refuse: ``write`` lets that through once the refusal
was made on the thread as Redis has it, not on an older copy."""


@dataclass(frozen=True)
class Written:
    """The thread after a write, and what was appended (empty: nothing was)."""

    state: ThreadState
    events: Sequence[Event]


async def write(
    log: ThreadLog,
    thread_id: str,
    build: Build,
    *,
    state: ThreadState | None = None,
    delivery: str | None = None,
    fingerprint: str | None = None,
    enqueue: bool = True,
    release_if: ReleaseIf | None = None,
    holder: str = "",
    attempts: int = ATTEMPTS,
) -> Written:
    """Append what ``build`` makes of the thread, at the version it saw.

    Args:
        state: the thread as the caller has it, perhaps behind (this process's cached
            copy): it skips the first read. A clash brings what was missed, and a
            refusal made on it is checked again on a fresh read.
        delivery: the inbound delivery's key; a replay raises ``DuplicateDelivery``.
        fingerprint: what the delivery asked for; a replay asking for something
            else raises ``ReusedDelivery``.
        enqueue: queue the thread for a worker (False when a worker is stepping it),
            with the current trace, so the worker's step continues it.
        release_if: a worker letting go of its lease with this append, if it may
            (``ThreadLog.append``).
        holder: append only while this worker holds the thread's lease (``NotHolder``).

    Raises:
        ContentionError: every attempt lost a race.
        DuplicateDelivery: ``delivery`` was recorded before.
        NotHolder: ``holder`` no longer holds the thread's lease.
    """
    read = False
    for _ in range(attempts):
        if state is None:
            state, read = await log.load(thread_id), True
        try:
            built = build(state)
            events = await built if inspect.isawaitable(built) else built
        except GreenlightError:
            if read:
                raise
            state = None  # refused on a copy that may be behind: look again
            continue
        if not events:
            return Written(state, ())
        try:
            new = await log.append(
                state,
                events,
                delivery=delivery,
                fingerprint=fingerprint,
                enqueue=enqueue,
                release_if=release_if,
                trace=traceparent() if enqueue else "",
                holder=holder,
            )
        except VersionConflict as clash:
            # The clash brought what we missed, when our copy was the one it extends.
            state = log.cached(thread_id)
            if state is not None and state.version != clash.actual:
                state = None
            read = state is not None
            continue
        return Written(new, events)
    raise ContentionError(
        f"thread {thread_id} changed {attempts} times while writing to it; try again",
        thread_id=thread_id,
    )
