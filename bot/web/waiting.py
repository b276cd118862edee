"""The inbox's waiting list: open requests filtered, sorted by expiry, paged and counted.

Pure over the summaries the indexes keep (``bot.storage.indexes.Waiting``): the page
never loads a thread, so ten thousand open requests cost one read per shard.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.domain.events import Actor
from bot.domain.policy import is_named
from bot.storage.indexes import Waiting

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


def is_for(item: Waiting, names: set[str]) -> bool:
    """Whether the actor of ``names`` (``Actor.names()``) may decide or answer ``item``: a
    question that names nobody waits for the person the agent last heard."""
    if item.kind == "question" and not item.approvers:
        return not names.isdisjoint(item.heard)
    return is_named(names, item.approvers)


def select(
    every: Sequence[Waiting], filters: Filters, viewer: Actor, *, size: int = PAGE_SIZE
) -> WaitingPage:
    """The page of ``every`` that ``filters`` asks for, soonest to expire first."""
    names = viewer.names()
    seen = [w for w in every if is_for(w, names)] if filters.mine else list(every)
    rest = [
        w
        for w in seen
        if (not filters.tool or w.tool == filters.tool)
        and (not filters.channel or w.channel == filters.channel)
        and (not filters.urgency or w.urgency == filters.urgency)
    ]
    per_agent = Counter(w.agent for w in rest)
    matching = [w for w in rest if not filters.agent or w.agent == filters.agent]
    matching.sort(key=lambda w: (w.expires_at is None, w.expires_at or 0.0, w.opened_at))
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
