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

from bot.domain.errors import ContentionError, VersionConflict
from bot.domain.events import Event
from bot.domain.reducer import ThreadState
from bot.storage.threadlog import ThreadLog

ATTEMPTS = 16
"""Clashes one write survives; more means the thread changes faster than it can be read."""

Build = Callable[[ThreadState], Sequence[Event] | Awaitable[Sequence[Event]]]
"""What to append given the thread as read; nothing to append: an empty list. It may
raise a ``GreenlightError`` to refuse, which ``write`` lets through."""


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
    enqueue: bool = True,
    attempts: int = ATTEMPTS,
) -> Written:
    """Append what ``build`` makes of the thread, at the version it saw.

    Args:
        state: the thread as the caller already read it (skips the first read).
        delivery: the inbound delivery's key; a replay raises ``DuplicateDelivery``.
        enqueue: queue the thread for a worker (False when a worker is stepping it).

    Raises:
        ContentionError: every attempt lost a race.
        DuplicateDelivery: ``delivery`` was recorded before.
    """
    for _ in range(attempts):
        if state is None:
            state = await log.load(thread_id)
        built = build(state)
        events = await built if inspect.isawaitable(built) else built
        if not events:
            return Written(state, ())
        try:
            new = await log.append(state, events, delivery=delivery, enqueue=enqueue)
        except VersionConflict:
            state = None
            continue
        return Written(new, events)
    raise ContentionError(
        f"thread {thread_id} changed {attempts} times while writing to it; try again",
        thread_id=thread_id,
    )
