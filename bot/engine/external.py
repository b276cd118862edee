"""Requests from agents that run elsewhere: an approval or a question in a thread of its own.

The thread is created in one append (``ThreadCreated`` with ``hosted=False``, then the
request), so it reaches people through the same cards, emails, CLI and decision path as
a hosted agent's request, with the same expiry, escalation, reminders, audit trail and
callbacks. The loop fires only its timers; the agent reads the decision (``wait``) and
acts on it itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.domain import ids
from bot.domain.errors import ConflictError
from bot.domain.events import Event
from bot.domain.reducer import Request, ThreadState
from bot.engine.decisions import Decisions
from bot.engine.writes import write
from bot.storage.threadlog import ThreadLog

POLL = 0.025
"""Seconds between two looks at a request while waiting: each reads only new events."""


@dataclass(frozen=True)
class Opened:
    """The request as it stands, and whether this call created it (False: a retried key)."""

    request: Request
    thread: ThreadState
    created: bool


async def open_request(
    log: ThreadLog,
    thread_id: str | None,
    make: Callable[[str], Sequence[Event]],
    *,
    kind: str,
) -> Opened:
    """Create the thread ``make(thread_id)`` describes, in one append, and queue it.

    Args:
        thread_id: derived from the caller's Idempotency-Key, so a retry finds the
            thread its first try made and changes nothing; None: a fresh thread.
        kind: ``approval`` or ``question``, what the thread must hold.

    Raises:
        ConflictError: the key made a thread holding another kind of request.
    """
    tid = thread_id or ids.new_thread_id()
    # A fresh random id has no log yet: no need to read it.
    fresh = ThreadState(id=tid) if thread_id is None else None
    done = await write(log, tid, lambda s: [] if s.exists else make(tid), state=fresh)
    found = [r for r in done.state.requests.values() if not done.state.hosted]
    if not found or found[0].kind != kind:
        raise ConflictError("this Idempotency-Key was used for another kind of request")
    return Opened(found[0], done.state, created=bool(done.events))


async def wait(
    decisions: Decisions, request_id: str, seconds: float, *, poll: float = POLL
) -> tuple[Request, ThreadState]:
    """The request once it is closed (decided, answered, expired, cancelled), or as it
    stands after ``seconds``.

    How long to wait is the caller's patience, not a time that decides anything, so it is
    measured on this process's monotonic clock rather than the runtime's ``Clock``.
    """
    deadline = time.monotonic() + seconds
    while True:
        req, state = await decisions.find(request_id)
        left = deadline - time.monotonic()
        if not req.is_open or left <= 0:
            return req, state
        await asyncio.sleep(min(poll, left))
