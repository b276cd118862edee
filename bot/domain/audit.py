"""The audit trail: each thread's events chained by hash, and decisions as audit records.

Every stored event carries ``prev`` (stored as ``p``), the link to the event stored before it
in its thread: the first 96 bits of that event's hash (``to_link``; events stored before kept
all 128, and still verify). A thread's first event links to its thread's ``anchor`` (one
stored before links to nothing). Editing, removing or reordering an event in Redis
afterwards breaks the chain at that point, which ``verify_chain`` finds.
Decisions (approvals, rejections, answers, expiries) also become flat records
for an auditor, each with the hash of the event it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.events import ApprovalDecision, Event, Expired, HumanAnswer, stored_id
from bot.domain.hashing import chain_hash

LINK = 16
"""Characters of a hash an event's ``prev`` keeps: 96 bits, so an edit that keeps the link
takes some 2**96 hashes to find (out of reach), in three quarters of the whole hash's
bytes. An exported record's full hash anchors the chain: an edit before it must keep
every link after it."""


def anchor(thread_id: str) -> str:
    """What a thread's first event links to, in place of an event before it: a hash of the
    thread's id. No two threads' events are then alike, so each event's hash is unique,
    and with it the id an event is stored without (``stored_id``); and a thread's log
    moved under another thread's key no longer verifies."""
    return chain_hash(f"thread:{thread_id}")


def to_link(event_hash: str | None) -> str | None:
    """What an event stores as ``prev``, given the hash of the event before it."""
    return event_hash[:LINK] if event_hash else None


@dataclass(frozen=True)
class Break:
    """Where a thread's chain breaks, and what that means."""

    index: int
    """Position in the log of the first event whose link does not hold."""
    event_id: str | None
    why: str


def verify_chain(raws: Sequence[str | bytes], thread_id: str) -> list[Break]:
    """Every place where ``raws`` (the stored events of thread ``thread_id``, in order)
    break the chain."""
    breaks: list[Break] = []
    prev: str | None = None
    first = to_link(anchor(thread_id))
    for index, raw in enumerate(raws):
        try:
            data = json.loads(raw)
            linked = data.get("prev", data.get("p"))
            event_id = data.get("id") or stored_id(chain_hash(raw))
        except (ValueError, AttributeError):
            breaks.append(Break(index, None, "not a readable event"))
            prev = chain_hash(raw)
            continue
        # The first event links to its thread (or, stored before, to nothing).
        if linked not in (prev, to_link(prev)) and not (index == 0 and linked == first):
            why = (
                "the event before it was edited, removed or moved"
                if index
                else "the first event was removed, or one was put before it"
            )
            breaks.append(Break(index, event_id, f"{why} (expected prev {prev}, found {linked})"))
        prev = chain_hash(raw)
    return breaks


def to_record(thread_id: str, event: Event, event_hash: str) -> dict[str, Any] | None:
    """The audit record of a decision event, or None for other events."""
    if type(event) not in _DECISIONS:  # most events: known before the match's isinstances
        return None
    match event:
        case ApprovalDecision():
            record = {
                "kind": "decision",
                "outcome": event.decision.value,
                "request": event.request_id,
                "by": event.by.label(),
                "by_id": f"{event.by.channel}:{event.by.id}",
                "channel": event.by.channel,
                "reason": event.reason,
                "args_hash": event.args_hash,
            }
        case HumanAnswer():
            record = {
                "kind": "answer",
                "outcome": "answered",
                "request": event.request_id,
                "by": event.by.label(),
                "by_id": f"{event.by.channel}:{event.by.id}",
                "channel": event.by.channel,
                "reason": None,
                "args_hash": None,
            }
        case Expired():
            record = {
                "kind": "expiry",
                "outcome": "expired",
                "request": event.request_id,
                "by": None,
                "by_id": None,
                "channel": "system",
                "reason": None,
                "args_hash": None,
            }
        case _:
            return None
    return {"at": event.at, "thread": thread_id, **record, "event": event.id, "hash": event_hash}


_DECISIONS = frozenset({ApprovalDecision, HumanAnswer, Expired})
"""The events ``to_record`` makes a record of."""


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a cell a spreadsheet would run as a formula begins (OWASP, CSV injection)."""
GIVEN = frozenset({"reason", "by", "by_id", "agent", "tool", "channel"})
"""A record's fields people or agents wrote; ids, times and hashes are Greenlight's own, and
stay exact (a hash may begin with ``-``)."""


def to_cells(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as CSV cells: a field people or agents wrote that begins as a formula does is
    prefixed with ``'``, so a spreadsheet shows it as text instead of running it. For CSV
    only: JSON stays exact."""
    return {
        k: "'" + v if k in GIVEN and isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
        for k, v in record.items()
    }
