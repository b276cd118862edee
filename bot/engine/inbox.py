"""Where every channel's inbound traffic lands: new threads, messages, controls.

Channels call these instead of writing events themselves, so a Slack mention,
an email and a REST call all produce the same events (factor 11).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.domain.errors import ConflictError, InvalidInputError, VersionConflict
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
from bot.domain.reducer import Status, ThreadState
from bot.storage import keys
from bot.storage.store import DuplicateDelivery, Store

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
        store: the event store.
        agents: names of the agents that exist.
        max_text: the longest message accepted, in characters.
    """

    def __init__(self, store: Store, agents: set[str], *, max_text: int = 20_000) -> None:
        self.store = store
        self.agents = agents
        self.max_text = max_text

    async def message(
        self,
        *,
        agent: str,
        text: str,
        by: Actor,
        origin: Origin,
        thread_id: str | None = None,
        delivery: str | None = None,
    ) -> Received:
        """Start a thread with ``agent`` or, if ``thread_id`` exists, continue it."""
        if agent not in self.agents:
            raise InvalidInputError(
                f"unknown agent {agent!r}; known: {', '.join(sorted(self.agents))}",
                agent=agent,
            )
        self._check_text(text)
        tid = thread_id or keys.new_thread_id()
        # A fresh random id has no log yet: no need to read it.
        state = ThreadState(id=tid) if thread_id is None else await self.store.load(tid)
        while True:
            events: list[Event] = []
            if not state.exists:
                events.append(ThreadCreated(agent=agent, origin=origin, by=by))
            elif state.status is Status.CANCELLED:
                raise ConflictError(f"thread {tid} was cancelled; start a new one")
            events.append(UserMessage(text=text, by=by))
            try:
                new = await self.store.append(state, events, delivery=delivery)
            except VersionConflict:
                state = await self.store.load(tid)
                continue
            except DuplicateDelivery:
                return Received(await self.store.load(tid), created=False, duplicate=True)
            return Received(new, created=not state.exists)

    async def say(
        self, thread_id: str, text: str, by: Actor, *, delivery: str | None = None
    ) -> Received:
        """The user speaks again on an existing thread."""
        state = await self.store.get(thread_id)
        assert state.origin is not None
        return await self.message(
            agent=state.agent,
            text=text,
            by=by,
            origin=state.origin,
            thread_id=thread_id,
            delivery=delivery,
        )

    async def control(
        self, thread_id: str, action: Control, by: Actor, reason: str | None = None
    ) -> ThreadState:
        """Pause, resume or cancel a thread."""
        while True:
            state = await self.store.get(thread_id)
            status = state.status
            event: Event
            if status is Status.CANCELLED:
                raise ConflictError(f"thread {thread_id} is cancelled", status=status.value)
            if action == "pause":
                if state.paused:
                    raise ConflictError(f"thread {thread_id} is already paused")
                event = Paused(by=by, reason=reason)
            elif action == "resume":
                if status not in (Status.PAUSED, Status.FAILED):
                    raise ConflictError(
                        f"thread {thread_id} is {status.value}, not paused", status=status.value
                    )
                event = Resumed(by=by)
            else:
                event = Cancelled(by=by, reason=reason)
            try:
                return await self.store.append(state, [event])
            except VersionConflict:
                continue

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InvalidInputError("the message text is empty")
        if len(text) > self.max_text:
            raise InvalidInputError(f"the message is longer than {self.max_text} characters")
