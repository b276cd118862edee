"""The App Home tab: what waits for the person looking at it, with the cards' own buttons.

Opening the tab (``app_home_opened``, from ``channels.slack.events``) publishes
it (``views.publish``) and remembers the person in the channel's state; when a
request opens, is decided, expires, is escalated or cancelled, the worker
republishes the Home of the remembered people it concerns, at most ``PUBLISHES``
times per ``PER`` seconds each. A request is listed by the one rule
(``bot.domain.waiting``) from the open requests' summaries
(``ChannelPorts.waiting``), most urgent first, as the same card a channel shows
(only the threads of the cards shown are read), so its buttons go through the
same click handlers and the one decision path. A view holds at most 100 blocks:
the rest is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.events import (
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
)
from bot.domain.policy import ANYONE
from bot.domain.reducer import Request, RequestStatus, ThreadState
from bot.domain.waiting import Waiting, waiting_for
from bot.engine.ports import ChannelPorts
from channels.slack.background import Background
from channels.slack.blocks import Block
from channels.slack.outbound import Outbound
from channels.slack.people import to_user_id

log = logging.getLogger(__name__)

OPENED = "home"
"""The state set of people who opened their Home: theirs is kept up to date."""
PUBLISHES = 10
PER = 60.0
"""A person's Home is republished at most ``PUBLISHES`` times per ``PER`` seconds."""
MAX_BLOCKS = 100
"""Slack's limit for one view."""
MAX_CARDS = 20


def home_view(cards: list[list[Block]], *, more: int, notice: str | None = None) -> Block:
    """The Home tab: a notice if any, the cards, and how many more wait beyond them.

    ``notice`` is mrkdwn of our own (a private note's words, mentions in it).
    """
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Waiting for you"}}
    ]
    if notice:
        blocks.append(_context(f":information_source: {notice}"))
    if not cards:
        blocks.append(_context("Nothing waits for you. Requests you may decide show up here."))
    for i, card in enumerate(cards):
        if i:
            blocks.append({"type": "divider"})
        blocks.extend(_unique(card, i))
    if more:
        blocks.append(_context(f"…and {more} more waiting for you, less urgent."))
    return {"type": "home", "blocks": blocks}


def _unique(card: list[Block], n: int) -> list[Block]:
    """A card's blocks with block ids unique in the view (every card has a ``gl_decide``)."""
    return [{**b, "block_id": f"{b['block_id']}.{n}"} if "block_id" in b else b for b in card]


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _reserved(notice: str | None) -> int:
    """Blocks of a view that are not cards: header, notice or "nothing", "more"."""
    return 3 if notice else 2


class Home:
    """Publishes people's Home tabs.

    Args:
        runtime: the wired core (open requests, the clock, this channel's state).
        outbound: renders cards (and names approvers) as the channel does.
        client: the Web API client that publishes.
        background: where the web process publishes, after Slack has its answer.
    """

    def __init__(
        self,
        runtime: ChannelPorts,
        outbound: Outbound,
        client: AsyncWebClient,
        background: Background | None = None,
    ) -> None:
        self.rt = runtime
        self.outbound = outbound
        self.client = client
        self.background = background

    def opened_tab(self, event: Mapping[str, Any]) -> None:
        """An ``app_home_opened`` event (``channels.slack.events``): publish that person's
        Home after Slack has its answer."""
        user = str(event.get("user") or "")
        if event.get("tab") != "home" or not to_user_id(user):
            return
        assert self.background is not None
        self.background.start("publishing a Home", partial(self.opened, user))

    async def opened(self, user: str) -> None:
        """``user`` looks at their Home: remember them, and show it as it stands."""
        await self.rt.state.remember(OPENED, user)
        await self.publish(user)

    async def publish(
        self, user: str, notice: str | None = None, every: list[Waiting] | None = None
    ) -> None:
        """Publish ``user``'s Home: what waits for them, most urgent first.

        ``every``: the open requests' summaries, when the caller read them already.
        """
        every = await self.rt.waiting.waiting() if every is None else every
        names = sorted({n for w in every for n in w.approvers} - {ANYONE})
        actor = await self.outbound.people.actor(user, names, strict=False)
        mine = waiting_for(every, actor, self.rt.clock.now())
        cards: list[list[Block]] = []
        used = _reserved(notice)
        for w in mine[:MAX_CARDS]:  # one thread at a time: a worker refreshes many Homes
            thread = await self.rt.threads.load(w.thread)
            if (req := thread.requests.get(w.request)) is None:
                continue
            _text, blocks = await self.outbound.render(thread, req, "")
            if used + len(blocks) + 1 > MAX_BLOCKS:
                break
            used += len(blocks) + 1
            cards.append(blocks)
        view = home_view(cards, more=len(mine) - len(cards), notice=notice)
        await self.client.views_publish(user_id=user, view=view)
        log.info("slack: published the Home of %s (%d of %d waiting)", user, len(cards), len(mine))

    async def changed(self, thread: ThreadState, event: Event) -> None:
        """Republish the Home of the people who opened theirs and whom ``event`` concerns."""
        match event:
            case (
                ApprovalRequested()
                | HumanQuestion()
                | ApprovalDecision()
                | HumanAnswer()
                | Expired()
                | Escalated()
            ):
                reqs = [thread.requests.get(event.request_id)]
            case Cancelled():
                reqs = [r for r in thread.requests.values() if r.status is RequestStatus.CANCELLED]
            case _:
                return
        opened = await self.rt.state.remembered(OPENED)
        if not opened:
            return
        concerned: set[str] = set()
        for req in reqs:
            if req is not None:
                concerned |= await self._concerned(thread, req, opened)
        every = None
        for user in sorted(concerned & opened):
            allowed = await self.rt.state.take(
                f"home:{user}", limit=PUBLISHES, per=PER, now=self.rt.clock.now()
            )
            if allowed:
                every = await self.rt.waiting.waiting() if every is None else every
                await self.publish(user, every=every)
            else:
                log.info(
                    "slack: the Home of %s was published %d times in %ss", user, PUBLISHES, PER
                )

    async def _concerned(self, thread: ThreadState, req: Request, opened: set[str]) -> set[str]:
        """The Slack users ``req`` is (or was) for: its approvers or answerers."""
        names = _names(req)
        if ANYONE in names:
            return opened
        if not names:  # a question for its conversation: the person the agent talks to
            heard = thread.last_user
            return {heard.id} if heard is not None and heard.channel == "slack" else set()
        return await self.outbound.people.user_ids(names)


def _names(req: Request) -> set[str]:
    """Who a request names: approvers (as asked and as now, after an escalation), or answerers."""
    asked = req.asked
    if isinstance(asked, HumanQuestion):
        return set(asked.answerers)
    return set(_flat([asked.approvers, req.approvers]))


def _flat(lists: Iterable[list[str]]) -> list[str]:
    return [name for names in lists for name in names]
