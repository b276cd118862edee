"""The audit streams: per shard, the record of every decision, appended with the decision.

The thread log's append script calls ``record`` in the same round trip as the
decision event, so a decision is never recorded without its audit record.
Reading merges the shards by time.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import AsyncGenerator
from typing import Any

from bot.domain.events import stored_id
from bot.domain.ids import thread_of_request
from bot.storage import keys
from bot.storage.connection import Client, is_cluster
from bot.storage.encoding import to_compact_json

RECORD = """
local function record(stream, lines)
  for line in string.gmatch(lines, '[^\\n]+') do redis.call('XADD', stream, '*', 'r', line) end
end
"""
"""Appends newline-separated JSON records (JSON escapes the newlines inside them)."""


_STORED = (
    "at",
    "outcome",
    "request",
    "by_id",
    "hash",
    "args_hash",
    "reason",
    "by",
    "thread",
    "event",
    "kind",
    "channel",
)
"""A record is stored as a JSON array of its fields in this order, without the nulls at
the end. Never reorder or change one: append new fields (a reader leaves out those it
does not know)."""

_WHOLE = (
    "at",
    "thread",
    "kind",
    "outcome",
    "request",
    "by",
    "by_id",
    "channel",
    "reason",
    "args_hash",
    "event",
    "hash",
)
"""A record's fields in the order readers get them (``GET /audit``, the exports)."""

_KINDS = {"approve": "decision", "reject": "decision", "answered": "answer", "expired": "expiry"}


def _derived(record: dict[str, Any]) -> dict[str, Any]:
    """What a record's other fields say of its ``by``, ``thread``, ``event``, ``kind`` and
    ``channel``: stored as null when that is what they hold. (None of these is ever None
    where the others say otherwise: ``to_record`` gives each a value, and ``by`` is None
    only with ``by_id``.) The fields this reads are never stored as null in their place."""
    by_id = record["by_id"]
    channel, _, person = by_id.partition(":") if by_id is not None else ("system", "", None)
    return {
        "by": person,
        "thread": thread_of_request(record["request"]),
        "event": stored_id(record["hash"]),
        "kind": _KINDS.get(record["outcome"]),
        "channel": channel,
    }


def to_stored_record(record: dict[str, Any]) -> str:
    """An audit record (``bot.domain.audit.to_record``) as its stream keeps it, for
    ``RETAIN_FINISHED_DAYS``: about 40 % of its length whole."""
    derived = _derived(record)
    values = [
        None if name in derived and derived[name] == record[name] else record[name]
        for name in _STORED
    ]
    while values and values[-1] is None:
        values.pop()
    return to_compact_json(values)


def from_stored_record(raw: str | bytes) -> dict[str, Any]:
    """A stored audit record, whole: in this shape, or as a JSON object, as records were
    stored before."""
    stored = json.loads(raw)
    if isinstance(stored, dict):
        return stored
    values = stored[: len(_STORED)] + [None] * (len(_STORED) - len(stored))
    record = dict(zip(_STORED, values, strict=True))
    for name, value in _derived(record).items():
        if record[name] is None:
            record[name] = value
    return {name: record[name] for name in _WHOLE}


Position = tuple[int, int, int]
"""Where a record is in the shards' streams, merged: its entry id's milliseconds and
sequence, then its shard (two shards may hold the same id)."""


class AuditLog:
    """Reads the audit records of every shard."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis

    async def oldest(
        self, since: float, until: float, *, after: Position | None = None, batch: int = 500
    ) -> AsyncGenerator[tuple[Position, dict[str, Any]]]:
        """Records stored from ``since`` to ``until`` (Unix seconds), oldest first, each
        with its ``Position``; with ``after``, only those that come after it. Each shard is
        read ``batch`` records at a time (``XRANGE``), merged by time, so a reader that
        stops early read little more than it used."""
        if until < since or until < 0:
            return
        since_ms = max(0, int(since * 1000))
        low, high = f"{since_ms}-0", f"{int(until * 1000)}-18446744073709551615"

        async def page(s: int, start: str) -> list[tuple[Position, str]]:
            rows: Any = await self.redis.xrange(keys.audit(s), start, high, count=batch)
            return [(_position(str(entry), s), str(fields["r"])) for entry, fields in rows]

        def first(s: int) -> str:
            """Where shard ``s`` is read from: ``since``, or just after ``after``."""
            if after is None or after[:2] < (since_ms, 0):
                return low
            ms, seq, shard = after
            return f"{ms}-{seq}" if s > shard else f"({ms}-{seq}"  # one id in two shards

        pages = dict(
            enumerate(await asyncio.gather(*(page(s, first(s)) for s in range(keys.SHARDS))))
        )
        at = dict.fromkeys(pages, 0)
        heap = [(rows[0][0], s) for s, rows in pages.items() if rows]
        heapq.heapify(heap)
        while heap:
            _, s = heapq.heappop(heap)
            position, raw = pages[s][at[s]]
            yield position, from_stored_record(raw)
            at[s] += 1
            if at[s] == len(pages[s]) == batch:  # the shard may hold more: its next page
                pages[s], at[s] = await page(s, f"({position[0]}-{position[1]}"), 0
            if at[s] < len(pages[s]):
                heapq.heappush(heap, (pages[s][at[s]][0], s))

    async def newest(
        self, since: float, until: float, *, batch: int = 500
    ) -> AsyncGenerator[dict[str, Any]]:
        """Records stored from ``since`` to ``until`` (Unix seconds), newest first: each
        shard read ``batch`` records at a time (``XREVRANGE``), merged by time, so a reader
        that stops early read little more than it used."""
        if until < since or until < 0:
            return
        low, high = f"{max(0, int(since * 1000))}-0", f"{int(until * 1000)}-18446744073709551615"

        async def page(s: int, before: str) -> list[tuple[str, str]]:
            rows: Any = await self.redis.xrevrange(keys.audit(s), before, low, count=batch)
            return [(str(entry), str(fields["r"])) for entry, fields in rows]

        pages = dict(enumerate(await asyncio.gather(*(page(s, high) for s in range(keys.SHARDS)))))
        at = dict.fromkeys(pages, 0)
        heap = [(_newest_first(rows[0][0]), s) for s, rows in pages.items() if rows]
        heapq.heapify(heap)
        while heap:
            _, s = heapq.heappop(heap)
            entry, raw = pages[s][at[s]]
            yield from_stored_record(raw)
            at[s] += 1
            if at[s] == len(pages[s]) == batch:  # the shard may hold more: its next page
                pages[s], at[s] = await page(s, f"({entry}"), 0
            if at[s] < len(pages[s]):
                heapq.heappush(heap, (_newest_first(pages[s][at[s]][0]), s))

    async def latest(self) -> dict[str, str]:
        """Where each shard's stream ends now: where ``follow`` starts from."""
        pipe = self.redis.pipeline(transaction=False)
        for s in range(keys.SHARDS):
            pipe.xrevrange(keys.audit(s), count=1)
        rows: Any = await pipe.execute()
        return {keys.audit(s): (r[0][0] if r else "0-0") for s, r in enumerate(rows)}

    async def follow(
        self, after: dict[str, str], block_ms: int
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Records appended after ``after`` (from ``latest`` or a previous call), waiting up
        to ``block_ms`` for one; and where to follow on from.

        One blocking read over every shard on one server; on a cluster one read per shard.
        """
        if is_cluster(self.redis):
            each: Any = await asyncio.gather(
                *(self.redis.xread({k: v}, count=100, block=block_ms) for k, v in after.items())
            )
            got: Any = [stream for found in each for stream in found or []]
        else:
            streams: Any = dict(after)
            got = await self.redis.xread(streams, count=100, block=block_ms)
        moved = dict(after)
        found: list[dict[str, Any]] = []
        for stream, entries in got or []:
            for entry, fields in entries:
                moved[str(stream)] = str(entry)
                found.append(from_stored_record(fields["r"]))
        found.sort(key=lambda r: float(r.get("at", 0)))
        return found, moved

    async def older(self, shard: int, before: float, limit: int) -> list[tuple[str, str]]:
        """The shard's records stored before ``before`` (Unix seconds): (entry id, the
        record as stored, which ``from_stored_record`` reads)."""
        high = f"{max(0, int(before * 1000))}-0"
        rows: Any = await self.redis.xrange(keys.audit(shard), "-", f"({high}", count=limit)
        return [(str(entry), str(fields["r"])) for entry, fields in rows]

    async def trim(self, shard: int, entries: list[str]) -> None:
        """Remove records from the shard's stream (once they are archived)."""
        if entries:
            await self.redis.xdel(keys.audit(shard), *entries)


def _newest_first(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a key that sorts the newest first."""
    ms, _, seq = entry_id.partition("-")
    return -int(ms), -int(seq)


def _position(entry_id: str, shard: int) -> Position:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0), shard
