"""The inbox's waiting list: open requests filtered, sorted by expiry, paged and counted.

Pure over the summaries the indexes keep (``bot.domain.waiting.Waiting``): the page
never loads a thread, so ten thousand open requests cost one read per shard. What
waits for the viewer, and in which order, is the one rule of ``bot.domain.waiting``
(Slack's App Home lists by it too).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.domain.events import Actor
from bot.domain.waiting import Waiting, is_open, to_order, waiting_for

PAGE_SIZE = 25


@dataclass(frozen=True)
class Filters:
    """What the viewer asked to see (the query string of ``/inbox``)."""

    mine: bool = True
    """Only what the viewer may decide or answer; False: everything open."""
    agent: str = ""
    tool: str = ""
    channel: str = ""
    urgency: str = ""
    page: int = 1


@dataclass
class WaitingPage:
    items: list[Waiting]
    total: int
    """How many match the filters, on every page."""
    page: int
    pages: int
    per_agent: dict[str, int] = field(default_factory=dict)
    """How many match each agent, with every filter but the agent's."""
    tools: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)


def select(
    every: Sequence[Waiting],
    filters: Filters,
    viewer: Actor,
    now: float,
    *,
    size: int = PAGE_SIZE,
) -> WaitingPage:
    """The page of ``every`` open at ``now`` that ``filters`` asks for, most urgent first."""
    if filters.mine:
        seen = waiting_for(every, viewer, now)
    else:
        seen = sorted((w for w in every if is_open(w, now)), key=to_order)
    rest = [
        w
        for w in seen
        if (not filters.tool or w.tool == filters.tool)
        and (not filters.channel or w.channel == filters.channel)
        and (not filters.urgency or w.urgency == filters.urgency)
    ]
    per_agent = Counter(w.agent for w in rest)
    matching = [w for w in rest if not filters.agent or w.agent == filters.agent]
    pages = max(1, math.ceil(len(matching) / size))
    page = min(max(filters.page, 1), pages)
    return WaitingPage(
        items=matching[(page - 1) * size : page * size],
        total=len(matching),
        page=page,
        pages=pages,
        per_agent=dict(sorted(per_agent.items())),
        tools=sorted({w.tool for w in seen if w.tool}),
        channels=sorted({w.channel for w in seen if w.channel}),
    )
