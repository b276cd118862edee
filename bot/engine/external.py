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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.domain import ids
from bot.domain.errors import ConflictError, ContentionError
from bot.domain.events import Event
from bot.domain.reducer import Request, ThreadState
from bot.engine.decisions import Decisions
from bot.engine.retention import refuse_archived, was_archived
from bot.engine.writes import ATTEMPTS, write
from bot.storage.archive import Archive
from bot.storage.openkeys import GRACE, UNBOUNDED, OpenKeys
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
    archive: Archive | None = None,
) -> Opened:
    """Create the thread ``make(thread_id)`` describes, in one append, and queue it.

    Args:
        thread_id: derived from the caller's Idempotency-Key, so a retry finds the
            thread its first try made and changes nothing; None: a fresh thread.
        kind: ``approval`` or ``question``, what the thread must hold.
        archive: where retention moves finished threads: a key whose thread is there
            makes no thread again (``refuse_archived``).

    Raises:
        ConflictError: the key made a thread holding another kind of request, or one
            since archived.
    """
    tid = thread_id or ids.new_thread_id()
    # A fresh random id has no log yet: no need to read it.
    fresh = ThreadState(id=tid) if thread_id is None else None

    def build(state: ThreadState) -> Sequence[Event] | Awaitable[Sequence[Event]]:
        if state.exists:
            return []
        if thread_id is None or archive is None:
            return make(tid)
        return _unless_archived(archive, tid, make)

    done = await write(log, tid, build, state=fresh)
    opened = _found(done.state, kind)
    return Opened(opened.request, opened.thread, created=bool(done.events))


async def join_request(
    log: ThreadLog,
    open_keys: OpenKeys,
    call: str,
    make: Callable[[str], Sequence[Event]],
    *,
    kind: str,
    thread_id: str | None,
    now: float,
    archive: Archive | None = None,
) -> Opened:
    """The request still open for ``call`` (the same call asked again), or a new one.

    A call asked again while its request is open joins it: people see one request, and
    a decision on it answers every ask. Once it is decided, expired or cancelled, the
    call asked again is asked anew: an approval is never handed to a later call.

    Args:
        call: the caller's ``open_key``, as it names the call (apart from other callers').
        thread_id: derived from the caller's Idempotency-Key, if any: a retry of that key
            gets the request its first try got, open or closed.
        archive: where retention moves finished threads: a key that still leads to one
            there leads to a closed request, never to a thread of its id made again.

    Raises:
        ConflictError: the key's thread holds another kind of request.
        ContentionError: the call's request kept being closed and replaced under it.
    """
    if thread_id is not None:
        for tid in (thread_id, await open_keys.get(_retry(thread_id))):
            state = await log.load(tid) if tid else None
            if state is not None and state.exists:
                return _found(state, kind)
    fresh = thread_id or ids.new_thread_id()  # a new request's thread: the key's, if any
    held = await open_keys.get(call)
    if held is not None and await _archived(log, archive, held):
        held = await open_keys.swap(call, held, fresh, GRACE)
    for _ in range(ATTEMPTS):
        if held is None:
            held = await open_keys.swap(call, None, fresh, GRACE)
            assert held is not None
        opened = await open_request(log, held, make, kind=kind, archive=archive)
        if opened.request.is_open:
            ttl = _keep(opened.request, now)
            await open_keys.swap(call, held, held, ttl)  # kept while asked again
            if thread_id is not None and held != thread_id:
                await open_keys.swap(_retry(thread_id), None, held, ttl)
            return opened
        fresh = fresh if fresh != held else ids.new_thread_id()
        held = await open_keys.swap(call, held, fresh, GRACE)
    raise ContentionError(f"the {kind} asked for this open_key kept closing under it; ask again")


async def _unless_archived(
    archive: Archive, thread_id: str, make: Callable[[str], Sequence[Event]]
) -> Sequence[Event]:
    await refuse_archived(archive, thread_id, "the request of this key")
    return make(thread_id)


async def _archived(log: ThreadLog, archive: Archive | None, thread_id: str) -> bool:
    """Whether the thread left Redis for the archive (retention forgets a thread a month
    after it finished; a key to a request that never expires lives a day longer)."""
    if archive is None or (await log.load(thread_id)).exists:
        return False
    return await was_archived(archive, thread_id)


def _retry(thread_id: str) -> str:
    """The key an Idempotency-Key's thread leads by when its call joined another's request."""
    return f"retry\x00{thread_id}"


def _keep(request: Request, now: float) -> float:
    """Seconds to keep a key to ``request``: a day past its expiry, while it may be open."""
    left = request.expires_at - now if request.expires_at is not None else UNBOUNDED
    return max(0.0, left) + GRACE


def _found(state: ThreadState, kind: str) -> Opened:
    found = [r for r in state.requests.values() if not state.hosted]
    if not found or found[0].kind != kind:
        raise ConflictError("this Idempotency-Key was used for another kind of request")
    return Opened(found[0], state, created=False)


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
