"""What Greenlight posts in Slack: cards, their updates, reminders and the agent's replies.

Delivery is at-least-once, so every post is recorded under its event id in the
thread's Slack state (``ChannelPorts.state``) and skipped when found there. Cards
are remembered per request, so when a request is decided through any channel,
expires or is cancelled, every card for it is updated in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import DeliveryError
from bot.domain.events import (
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Paused,
    Reminded,
    UserMessage,
)
from bot.domain.reducer import Request, RequestStatus, ThreadState
from bot.engine.ports import StateStore, ThreadReader
from channels.slack.blocks import Block, CardInfo, card, to_chunks, when
from channels.slack.opening import NEVER, ROOT, is_command
from channels.slack.people import People, escape
from channels.slack.working import Working

log = logging.getLogger(__name__)

_GONE = frozenset({"message_not_found", "channel_not_found", "is_archived", "cant_update_message"})
"""Answers to chat.update that retrying cannot change: someone deleted the card or channel."""


@dataclass(frozen=True)
class Place:
    """Where in Slack something goes: a channel, and a thread in it if any."""

    channel: str
    thread_ts: str | None = None


def to_place(thread: ThreadState) -> Place | None:
    """The Slack thread a conversation lives in; None when it did not start in Slack, or
    started with ``/greenlight`` (its place is its opening post: ``Outbound.place``)."""
    origin = thread.origin
    if origin is None or origin.channel != "slack":
        return None
    meta = origin.metadata
    if not meta.get("channel") or not meta.get("thread_ts"):
        return None
    return Place(str(meta["channel"]), str(meta["thread_ts"]))


_RENDERED = (
    ApprovalRequested,
    HumanQuestion,
    ApprovalDecision,
    HumanAnswer,
    Expired,
    Escalated,
    Reminded,
    Cancelled,
    AgentReply,
)


_WORKING = (UserMessage, HumanAnswer, ApprovalDecision)
"""Events that set the agent to work (when the thread is running after them)."""


class Outbound:
    """Renders thread events into Slack.

    Args:
        client: the Web API client (with rate-limit retries).
        threads: the requester's words before a request.
        state: Slack's own state: what was posted for each thread, and where.
        people: resolves approvers into mentions.
        approvals_channel: where cards go when a policy names no channel.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        threads: ThreadReader,
        state: StateStore,
        people: People,
        *,
        approvals_channel: str | None = None,
        working: Working | None = None,
    ) -> None:
        self.client = client
        self.threads = threads
        self.state = state
        self.people = people
        self.approvals_channel = approvals_channel
        self.working = working

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        """The events ``deliver`` renders (it may still find nothing to post)."""
        in_slack = to_place(thread) is not None or is_command(thread)
        if isinstance(event, (*_WORKING, Paused)) and self.working and in_slack:
            return True
        return isinstance(event, _RENDERED) or (isinstance(event, ErrorEvent) and event.fatal)

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        """Post or update what ``event`` means for the people in Slack."""
        await self._render(thread, event)
        if self.working is None:
            return
        place = await self.place(thread)
        if place is not None and isinstance(event, _WORKING):
            # Delivered before the step it sets off: the agent is at work now.
            await self.working.start(thread, place.channel, str(place.thread_ts))
        else:
            await self.working.settle(thread)

    async def _render(self, thread: ThreadState, event: Event) -> None:
        match event:
            case ApprovalRequested() | HumanQuestion():
                await self._ask(thread, event)
            case ApprovalDecision() | HumanAnswer() | Expired():
                await self.refresh(thread, event.request_id)
            case Escalated():
                await self.refresh(thread, event.request_id)
                mentions = [await self.people.mention(a) for a in event.approvers]
                await self._under_cards(
                    thread,
                    event.request_id,
                    event.id,
                    f":arrow_up: Escalated to {', '.join(mentions)}.",
                )
            case Reminded():
                req = thread.requests.get(event.request_id)
                if req is not None and req.is_open:
                    mentions = [await self.people.mention(a) for a in req.approvers]
                    due = f"; it expires {when(req.expires_at)}" if req.expires_at else ""
                    await self._under_cards(
                        thread,
                        event.request_id,
                        event.id,
                        f":alarm_clock: Still waiting for {_listed(mentions)}{due}.",
                    )
            case Cancelled():
                for req in thread.requests.values():
                    if req.status is RequestStatus.CANCELLED:
                        await self.refresh(thread, req.id)
            case AgentReply():
                if place := await self.place(thread, posting=True):
                    for i, chunk in enumerate(to_chunks(event.text)):
                        await self._post(thread.id, f"{event.id}:{i}", place, chunk, replace=True)
            case ErrorEvent(fatal=True):
                if place := await self.place(thread, posting=True):
                    text = f":warning: The {thread.agent} agent stopped: {escape(event.message)}"
                    await self._post(thread.id, event.id, place, text, replace=True)
            case _:
                return

    async def place(self, thread: ThreadState, *, posting: bool = False) -> Place | None:
        """The Slack thread a conversation lives in (``to_place``); a ``/greenlight``
        thread's is its opening post (``channels.slack.opening``).

        Raises:
            DeliveryError: ``posting`` in a ``/greenlight`` thread whose opening post is
                not in Slack yet: the outbox retries once it may be.
        """
        if not is_command(thread):
            return to_place(thread)
        found = await self.state.get(thread.id, ROOT)
        if found is None and posting:
            raise DeliveryError(f"thread {thread.id}: its /greenlight post is not in Slack yet")
        if not found or found == NEVER:
            return None
        channel, ts = found.split(" ", 1)
        return Place(channel, ts)

    async def _pending(self, thread: ThreadState) -> str | None:
        """The channel of a ``/greenlight`` whose opening post is still to come (it failed
        for now and is retried); None for any other thread."""
        if not is_command(thread) or thread.origin is None:
            return None
        if await self.state.get(thread.id, ROOT) is not None:
            return None  # posted, or never will be
        return str(thread.origin.metadata.get("channel") or "") or None

    async def refresh(
        self, thread: ThreadState, request_id: str, also: Place | None = None
    ) -> None:
        """Update every card of a request (and ``also`` that message) to its current state."""
        req = thread.requests.get(request_id)
        if req is None:
            return
        cards = await self.cards(thread.id, request_id)
        if also and also.thread_ts and (also.channel, also.thread_ts) not in cards:
            cards.append((also.channel, also.thread_ts))
        for channel, ts in cards:
            text, blocks = await self.render(thread, req, channel)
            try:
                await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            except SlackApiError as exc:
                if exc.response.get("error") not in _GONE:
                    raise  # retried by the outbox
                log.warning(
                    "thread %s: card %s in %s is gone: %s",
                    thread.id,
                    ts,
                    channel,
                    exc.response.get("error"),
                )

    async def whisper(
        self, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
        """An ephemeral notice only ``user`` sees; failing to send it changes nothing."""
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            log.warning("slack: chat.postEphemeral failed: %s", exc.response.get("error"))

    async def cards(self, thread_id: str, request_id: str) -> list[tuple[str, str]]:
        """The (channel, ts) of every card posted for a request."""
        found = await self.state.all(thread_id)
        prefix = f"card:{request_id}:"
        return [
            (str(f).removeprefix(prefix), str(ts))
            for f, ts in found.items()
            if str(f).startswith(prefix)
        ]

    async def render(
        self, thread: ThreadState, req: Request, channel: str
    ) -> tuple[str, list[Block]]:
        """A request's card as shown in ``channel``."""
        place = await self.place(thread)
        if isinstance(req.asked, ApprovalRequested):
            names = req.approvers
            why = req.asked.reason or await self._words_before(thread.id, req.asked.id)
        else:
            names, why = req.asked.answerers, None
        link = None
        if place is not None and place.channel != channel:
            link = await self._link(thread.id, place)
        elif place is None:
            pending = await self._pending(thread)  # its post to come: where it was asked
            link = f"<#{pending}>" if pending else f"thread `{thread.id}`"
        approvers = [await self.people.mention(n) for n in names]
        return card(req, CardInfo(agent=thread.agent, approvers=approvers, why=why, link=link))

    async def _ask(self, thread: ThreadState, event: ApprovalRequested | HumanQuestion) -> None:
        """Post a request's card: in another channel when one is named, else in the
        conversation.

        A card for another channel never waits for a ``/greenlight``'s opening post: the
        approvers get it at once, whatever becomes of that post. Only what goes in the
        conversation (the card, or the note saying where the card is) waits for it.

        Raises:
            DeliveryError: the opening post is still to come; the outbox retries, and
                what was posted already is not posted again.
        """
        req = thread.requests.get(event.request_id)
        if req is None:
            return
        here = await self.place(thread)
        pending = None if here else await self._pending(thread)
        elsewhere = self.approvals_channel
        if isinstance(event, ApprovalRequested):
            elsewhere = event.approvals_channel or elsewhere
        elif here is not None or pending:
            elsewhere = None  # a question is asked where the conversation is
        else:
            elsewhere = event.approvals_channel or elsewhere
        if elsewhere and elsewhere != (here.channel if here else pending):
            posted = await self._card(thread, req, event.id, Place(elsewhere))
            await self.state.link(f"{posted.channel}:{posted.thread_ts}", thread.id)
            if not isinstance(event, ApprovalRequested) or not req.is_open:
                return  # a note that it waits, once decided, would say nothing true
            if pending:
                raise DeliveryError(f"thread {thread.id}: the note waits for its /greenlight post")
            if here is not None:
                permalink = await self._permalink(posted)
                where = f"<{permalink}|the approvals channel>" if permalink else f"<#{elsewhere}>"
                text = (
                    f":hourglass_flowing_sand: Waiting for approval of *{event.tool}* in {where}."
                )
                await self._post(thread.id, f"{event.id}:note", here, text)
        elif pending:
            raise DeliveryError(f"thread {thread.id}: its /greenlight post is not in Slack yet")
        elif here is not None:
            await self._card(thread, req, event.id, here)

    async def _card(self, thread: ThreadState, req: Request, event_id: str, place: Place) -> Place:
        text, blocks = await self.render(thread, req, place.channel)
        posted = await self._post(thread.id, event_id, place, text, blocks)
        await self.state.put(thread.id, f"card:{req.id}:{posted.channel}", str(posted.thread_ts))
        # A change delivered meanwhile (a retry posts outside the thread's lease) found no
        # card to update: read the request again now the card is known, and show what it is.
        fresh = await self.threads.load(thread.id)
        if fresh.requests.get(req.id) != req:
            await self.refresh(fresh, req.id)
        return posted

    async def _under_cards(
        self, thread: ThreadState, request_id: str, event_id: str, text: str
    ) -> None:
        """Post ``text`` under every card of a request.

        Raises:
            DeliveryError: the request's card is not in Slack yet, but its post is being
                retried: the outbox retries this too, so the note comes once the card has.
        """
        cards = await self.cards(thread.id, request_id)
        if not cards and await self._card_to_come(thread, request_id):
            raise DeliveryError(f"thread {thread.id}: request {request_id} has no card yet")
        for channel, ts in cards:
            await self._post(thread.id, f"{event_id}:{channel}", Place(channel, ts), text)

    async def _card_to_come(self, thread: ThreadState, request_id: str) -> bool:
        """Whether a request with no card yet is to have one (``_ask`` posts it somewhere,
        and its delivery was not given up)."""
        req = thread.requests.get(request_id)
        if req is None or any(
            (f.channel, f.event_id) == ("slack", req.asked.id) for f in thread.failed_deliveries
        ):
            return False
        elsewhere = req.asked.approvals_channel or self.approvals_channel
        return bool(elsewhere or await self.place(thread) or await self._pending(thread))

    async def _post(
        self,
        thread_id: str,
        part: str,
        place: Place,
        text: str,
        blocks: list[Block] | None = None,
        *,
        replace: bool = False,
    ) -> Place:
        """Post once per ``part``; returns where the message is (its ts as ``thread_ts``).

        ``replace``: an answer, which takes the place of the thread's "Working…" message.
        Cards and notices are new posts (an update notifies nobody they mention).
        """
        field = f"post:{part}"
        done = await self.state.get(thread_id, field)
        if done:
            channel, ts = str(done).split(" ", 1)
            return Place(channel, ts)
        extra: dict[str, Any] = {"blocks": blocks} if blocks else {}
        posted = await self._replace_working(thread_id, place, text, extra) if replace else None
        if posted is None:
            answer = await self.client.chat_postMessage(
                channel=place.channel,
                thread_ts=place.thread_ts,
                text=text,
                unfurl_links=False,
                unfurl_media=False,
                **extra,
            )
            posted = Place(str(answer["channel"]), str(answer["ts"]))
        # A crash between the post and this write posts again: at-least-once, like the outbox.
        await self.state.put(thread_id, field, f"{posted.channel} {posted.thread_ts}")
        log.info("thread %s: slack posted %s in %s", thread_id, part, posted.channel)
        return posted

    async def _replace_working(
        self, thread_id: str, place: Place, text: str, extra: dict[str, Any]
    ) -> Place | None:
        """Put a post in the place of the thread's "Working…" message; None: there is none."""
        if self.working is None:
            return None
        ts = await self.working.take(thread_id, place.channel, place.thread_ts)
        if ts is None:
            return None
        try:
            await self.client.chat_update(channel=place.channel, ts=ts, text=text, **extra)
        except SlackApiError as exc:
            if exc.response.get("error") not in _GONE:
                raise  # retried by the outbox
            ts = None  # someone deleted it: post as usual
        await self.working.taken(thread_id)
        return Place(place.channel, ts) if ts else None

    async def _link(self, thread_id: str, place: Place) -> str:
        found = await self.state.get(thread_id, "link") or ""
        if not found:
            found = await self._permalink(place) or ""
            if found:
                await self.state.put(thread_id, "link", found)
        return f"<{found}|this conversation>" if found else f"<#{place.channel}>"

    async def _permalink(self, place: Place) -> str | None:
        try:
            answer = await self.client.chat_getPermalink(
                channel=place.channel, message_ts=str(place.thread_ts)
            )
        except SlackApiError as exc:
            log.warning("slack: chat.getPermalink failed: %s", exc.response.get("error"))
            return None
        return str(answer.get("permalink") or "") or None

    async def _words_before(self, thread_id: str, event_id: str) -> str | None:
        """What the requester last said before the request: the "why" on a card."""
        said = None
        for event in await self.threads.events(thread_id):
            if event.id == event_id:
                return said
            if isinstance(event, UserMessage):
                said = event.text
        return said


def _listed(mentions: list[str]) -> str:
    return ", ".join(mentions) or "a decision"
