"""What a channel is to the engine, and what of the engine a channel may use.

A channel adapter has two sides, each a small protocol: ``Outbound`` (the
outbox hands it each new event) and ``Ingress`` (routes and body limits the
web app mounts, listeners the process starts and stops). In return it gets
``ChannelPorts``: submit inbound traffic, decide and answer through the one
decision path, read threads and the requests open now, and a state store of its
own. It never sees Redis, the loop or the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fastapi import APIRouter

from bot.domain.agents import Agent
from bot.domain.clock import Clock
from bot.domain.events import Actor, Event
from bot.domain.reducer import ThreadState
from bot.domain.waiting import Waiting
from bot.engine.decisions import Decisions
from bot.engine.inbox import Inbox


class Outbound(Protocol):
    """Renders thread events to the humans a channel reaches."""

    name: str
    """``webhook``, ``slack``, ``email``."""

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        """Whether ``deliver`` may have something to do for ``event`` (pure, no I/O).

        False lets a worker skip the delivery and let go of the thread sooner;
        when unsure, say True.
        """
        ...

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        """Render ``event`` to the humans concerned, or do nothing if none are here.

        Raises:
            Exception: any failure; the delivery is retried later.
        """
        ...


class Ingress(Protocol):
    """A channel's inbound side: HTTP routes, and listeners of its own."""

    name: str
    router: APIRouter | None
    """Its inbound HTTP routes, mounted by the app (None: none)."""

    @property
    def body_limits(self) -> Mapping[str, int]:
        """Request body limits of its routes by path, where the app's default does not fit."""
        ...

    async def start(self, *, inbound: bool) -> None:
        """Open outbound clients; with ``inbound``, also listeners (Socket Mode, SMTP).

        Web processes take inbound traffic; worker-only processes never do.
        """
        ...

    async def stop(self) -> None:
        """Close what ``start`` opened."""
        ...


class Channel(Outbound, Ingress, Protocol):
    """A channel adapter: both sides."""


@runtime_checkable
class SignInMail(Protocol):
    """A channel that can send a web sign-in link to an address (the email channel).

    The web app finds it among the runtime's channels; it never imports a channel.
    """

    async def send_sign_in_link(self, to: str, link: str, *, valid_for: float) -> None:
        """Send ``link`` (valid for ``valid_for`` seconds) to ``to``.

        Raises:
            DeliveryError: it could not be sent.
        """
        ...


@runtime_checkable
class Directory(Protocol):
    """A channel that can say who is who within it: who an email address is (Slack by
    email), and the address of one of its people who acted without one."""

    async def identities_of(self, email: str) -> tuple[str, ...]:
        """The address's identities in this channel as ``channel:id`` (``slack:U123``);
        empty when nobody has it or the look-up failed (never raises)."""
        ...

    async def identify(self, actor: Actor) -> Actor:
        """``actor`` with the email address this channel knows them by now, when they are
        its person and were known without one (``policy.is_unaddressed``); as given when
        not, or when the channel still cannot say (never raises)."""
        ...


class ThreadReader(Protocol):
    """Reading threads: their state and events."""

    async def load(self, thread_id: str) -> ThreadState: ...

    async def get(self, thread_id: str) -> ThreadState: ...

    async def events(self, thread_id: str, *, version: int | None = None) -> list[Event]: ...

    async def seen(self, thread_id: str, delivery: str) -> bool: ...


class StateStore(Protocol):
    """A channel's own small state: its ids per thread, external ids leading to threads,
    sets of people, and rate limits (uses of a key per window)."""

    async def get(self, thread_id: str, field: str) -> str | None: ...

    async def put(self, thread_id: str, field: str, value: str) -> None: ...

    async def all(self, thread_id: str) -> dict[str, str]: ...

    async def link(self, external: str, thread_id: str) -> None:
        """Remember that an external id (a Message-ID, a Slack thread) belongs to a thread."""
        ...

    async def resolve(self, external: str) -> str | None:
        """The thread an external id belongs to, if any."""
        ...

    async def remember(self, name: str, member: str) -> None:
        """Add ``member`` to the set ``name`` (people who opened something, say)."""
        ...

    async def remembered(self, name: str) -> set[str]:
        """Everyone remembered under ``name``."""
        ...

    async def take(self, key: str, *, limit: int, per: float, now: float) -> bool:
        """Use one of ``limit`` uses of ``key`` per ``per`` seconds (``now`` from the clock);
        False, and nothing used, when none is left."""
        ...


class OpenRequests(Protocol):
    """What waits for people (``bot.engine.waiting.Summaries``)."""

    async def waiting(self) -> list[Waiting]:
        """Every open request's summary, in no particular order: list them through
        ``bot.domain.waiting.waiting_for``."""
        ...


@dataclass(frozen=True)
class ChannelPorts:
    """What of the engine one channel may use.

    Attributes:
        inbox: inbound messages and controls become events here.
        decisions: the one path to approve, reject and answer.
        threads: read a thread's state and events.
        state: this channel's own ids per thread, and external ids that lead to threads.
        agents: the agents people may address.
        clock: the one clock.
        waiting: the open requests' summaries, to list what waits for a person.
    """

    inbox: Inbox
    decisions: Decisions
    threads: ThreadReader
    state: StateStore
    agents: Mapping[str, Agent]
    clock: Clock
    waiting: OpenRequests
