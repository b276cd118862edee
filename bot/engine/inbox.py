"""Where every channel's inbound traffic lands: new threads, messages, controls.

Channels call these instead of writing events themselves, so a Slack mention,
an email and a REST call all produce the same events (factor 11).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from bot.domain import ids
from bot.domain.errors import ConflictError, InvalidInputError, NotFoundError
from bot.domain.events import (
    Actor,
    Cancelled,
    Event,
    Origin,
    Paused,
    Resumed,
    ThreadCreated,
    UserMessage,
)
from bot.domain.limits import check_text
from bot.domain.reducer import Status, ThreadState
from bot.domain.triage import TRIAGE
from bot.engine import tracing
from bot.engine.retention import refuse_archived
from bot.engine.writes import write
from bot.storage.archive import Archive
from bot.storage.threadlog import DuplicateDelivery, ThreadLog

Control = Literal["pause", "resume", "cancel"]


@dataclass(frozen=True)
class Received:
    """The thread after an inbound message; ``duplicate`` when it was a replay."""

    thread: ThreadState
    created: bool
    duplicate: bool = False


class Inbox:
    """Records inbound messages and controls.

    Args:
        log: the thread logs.
        agents: names of the agents that exist.
        default_agent: where a message that names no agent goes; None: to triage
            (``bot.domain.triage``), in the worker.
        archive: where retention moved finished threads: a conversation whose thread is
            there has ended (``refuse_archived``).
    """

    def __init__(
        self,
        log: ThreadLog,
        agents: set[str],
        *,
        default_agent: str | None = None,
        archive: Archive | None = None,
    ) -> None:
        self.log = log
        self.agents = agents
        self.default_agent = default_agent
        self.archive = archive

    async def message(
        self,
        *,
        agent: str | None,
        text: str,
        by: Actor,
        origin: Origin,
        thread_id: str | None = None,
        delivery: str | None = None,
        fingerprint: str | None = None,
    ) -> Received:
        """Start a thread with ``agent`` or, if ``thread_id`` exists, continue it.

        ``agent`` None (the message names none) is the default agent, or triage: the
        worker chooses the agent. ``fingerprint`` (what the delivery asked for) refuses
        a reused delivery key.

        Raises:
            InvalidInputError: an unknown agent; ``text`` empty, longer than ``MAX_TEXT``
                or not storable (``limits.check_text``).
        """
        agent = agent or self.default_agent or TRIAGE
        if agent not in self.agents and agent != TRIAGE:
            raise InvalidInputError(
                f"unknown agent {agent!r}; known: {', '.join(sorted(self.agents))}",
                agent=agent,
            )
        if not text.strip():
            raise InvalidInputError("the message text is empty")
        check_text(text, "the message")
        tid = thread_id or ids.new_thread_id()
        tracing.bind(thread=tid)
        created = False
        # An id a conversation or a key makes comes again after retention archived its
        # thread: never started again (``refuse_archived``). A fresh random one cannot.
        once_archived = thread_id is not None and (origin.conversation or delivery) is not None

        def build(state: ThreadState) -> list[Event] | Awaitable[list[Event]]:
            nonlocal created
            events: list[Event] = []
            created = not state.exists
            if created:
                events.append(ThreadCreated(agent=agent, origin=origin, by=by))
            elif state.status is Status.CANCELLED:
                raise ConflictError(f"thread {tid} was cancelled; start a new one")
            elif not state.hosted:
                raise ConflictError(f"thread {tid} is a request from an agent elsewhere")
            events.append(UserMessage(text=text, by=by))
            if created and once_archived and self.archive is not None:
                return self._unless_archived(tid, events)
            return events

        # A fresh random id has no log yet; a known one starts from this process's copy,
        # and an id derived from a conversation (a Slack thread, a key) is tried as new:
        # if it is not, the clash brings its events back and the write goes again.
        start = (self.log.cached(tid) if thread_id else None) or ThreadState(id=tid)
        try:
            done = await write(
                self.log, tid, build, state=start, delivery=delivery, fingerprint=fingerprint
            )
        except DuplicateDelivery:
            return Received(await self.log.load(tid), created=False, duplicate=True)
        return Received(done.state, created=created)

    async def _unless_archived(self, thread_id: str, events: list[Event]) -> list[Event]:
        await refuse_archived(self.archive, thread_id, "this conversation")
        return events

    async def say(
        self,
        thread_id: str,
        text: str,
        by: Actor,
        *,
        delivery: str | None = None,
        fingerprint: str | None = None,
    ) -> Received:
        """The user speaks again on an existing thread."""
        state = await self.log.get(thread_id)
        assert state.origin is not None
        if not state.hosted:
            raise ConflictError(
                f"thread {thread_id} is a request from an agent that runs elsewhere; "
                "it takes no messages"
            )
        return await self.message(
            agent=state.agent,
            text=text,
            by=by,
            origin=state.origin,
            thread_id=thread_id,
            delivery=delivery,
            fingerprint=fingerprint,
        )

    async def control(
        self, thread_id: str, action: Control, by: Actor, reason: str | None = None
    ) -> ThreadState:
        """Pause, resume or cancel a thread.

        Raises:
            InvalidInputError: a reason longer than ``MAX_TEXT``.
        """
        if reason is not None:
            check_text(reason, "the reason")

        def build(state: ThreadState) -> list[Event]:
            status = state.status
            if not state.exists:
                raise NotFoundError(f"no thread {thread_id!r}", thread_id=thread_id)
            if status is Status.CANCELLED:
                raise ConflictError(f"thread {thread_id} is cancelled", status=status.value)
            if action == "pause":
                if state.paused:
                    raise ConflictError(f"thread {thread_id} is already paused")
                return [Paused(by=by, reason=reason)]
            if action == "resume":
                if status not in (Status.PAUSED, Status.FAILED):
                    raise ConflictError(
                        f"thread {thread_id} is {status.value}, not paused", status=status.value
                    )
                return [Resumed(by=by)]
            return [Cancelled(by=by, reason=reason)]

        tracing.bind(thread=thread_id)
        state = await self.log.get(thread_id)
        return (await write(self.log, thread_id, build, state=state)).state
