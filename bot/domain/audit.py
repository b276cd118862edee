"""The audit trail: each thread's events chained by hash, and decisions as audit records.

Every stored event carries ``prev`` (stored as ``p``), the link to the event stored before it in
its thread (None for the first): the first 96 bits of that event's hash
(``to_link``; events stored before kept all 128, and still verify). Editing,
removing or reordering an event in Redis afterwards breaks the chain at that
point, which ``verify_chain`` finds.
Decisions (approvals, rejections, answers, expiries) also become flat records
for an auditor, each with the hash of the event it came from.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.events import ApprovalDecision, Event, Expired, HumanAnswer
from bot.domain.hashing import sha256


def chain_hash(raw: str | bytes) -> str:
    """The hash of one event as stored: SHA-256, its first 128 bits in base64url."""
    data = raw.encode() if isinstance(raw, str) else raw
    # ``base64.urlsafe_b64encode`` without its two Python frames: 16 bytes are 22
    # characters and "==".
    encoded = binascii.b2a_base64(sha256(data)[:16], newline=False)[:22]
    return encoded.translate(_URLSAFE).decode()


_URLSAFE = bytes.maketrans(b"+/", b"-_")
"""Base64 to base64url."""


LINK = 16
"""Characters of a hash an event's ``prev`` keeps: 96 bits, so an edit that keeps the link
takes some 2**96 hashes to find (out of reach), in three quarters of the whole hash's
bytes. An exported record's full hash anchors the chain: an edit before it must keep
every link after it."""


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


def verify_chain(raws: Sequence[str | bytes]) -> list[Break]:
    """Every place where ``raws`` (a thread's stored events, in order) break the chain."""
    breaks: list[Break] = []
    prev: str | None = None
    for index, raw in enumerate(raws):
        try:
            data = json.loads(raw)
            linked, event_id = data.get("prev", data.get("p")), data.get("id")
        except (ValueError, AttributeError):
            breaks.append(Break(index, None, "not a readable event"))
            prev = chain_hash(raw)
            continue
        if linked != prev and linked != to_link(prev):
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
