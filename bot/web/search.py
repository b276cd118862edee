"""The audit trail's search: what a search asks for, and each record with its request's
agent and tool, read from the record's thread (in Redis, else the archive), once a search.

One view of the audit page reads a bounded part of the history, the newest; the exports
read every record in their dates.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.domain.errors import InvalidInputError
from bot.domain.events import ApprovalRequested
from bot.domain.reducer import ThreadState
from bot.runtime import Runtime
from bot.storage.archive import Archive
from bot.web.audit import newest_records

AUDIT_LIMIT = 5000
"""The most records the audit page shows: the newest that match (the exports hold all)."""
AUDIT_SCAN = 50_000
"""The most records one view of the audit page examines: the newest in its dates. A search
for something rare stops there and says so, rather than read the whole history on one page
view. The exports, which an operator asks for deliberately, examine every record in their
dates."""
AUDIT_THREADS = 10_000
"""The most threads one view of the audit page reads (an agent or a tool is known only from
the record's thread): past it, the search stops as at ``AUDIT_SCAN``. A thread read costs
some twenty times a record examined (about 0.25 ms and 0.01 ms on two cores), so a search
whose records are each of another thread stops here first: after some 3 s, not 12."""
CHUNK = 250
"""Records whose threads are read together (one write on one server), and streamed."""
THREADS_KEPT = 10_000
"""The most threads one search keeps what it read of (the agent, the tools asked about), the
most recently used: a thread's records come close together, so each is read about once."""
UNTIL_EVER = 4102444800.0
"""2100-01-01: the end of a search with no end date."""


@dataclass(frozen=True)
class Search:
    """What the audit page and its exports look for: all of it must hold."""

    start: float
    end: float
    person: str = ""
    """Part of who decided: their name or id, any case."""
    agent: str = ""
    tool: str = ""
    outcome: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Search:
        """The search a page's query asks for (``since`` and ``until`` as dates, the whole
        ``until`` day included).

        Raises:
            InvalidInputError: a date that is not YYYY-MM-DD.
        """
        start = _date(query.get("since"), "since")
        end = _date(query.get("until"), "until")
        return cls(
            start=start or 0.0,
            # Through the whole "until" day; without one, everything (streams are stamped
            # by Redis).
            end=UNTIL_EVER if end is None else end + 86400,
            person=query.get("person", "").strip().lower(),
            **{k: query.get(k, "").strip() for k in ("agent", "tool", "outcome")},
        )

    def is_record(self, record: dict[str, Any]) -> bool:
        """Whether a record matches what it holds itself: who, and the outcome."""
        who = f"{record.get('by') or ''} {record.get('by_id') or ''}".lower()
        return (not self.person or self.person in who) and (
            not self.outcome or record.get("outcome") == self.outcome
        )

    def is_row(self, row: dict[str, Any]) -> bool:
        """Whether a record, with its request's agent and tool, matches those."""
        return (not self.agent or row["agent"] == self.agent) and (
            not self.tool or row["tool"] == self.tool
        )


@dataclass(frozen=True)
class Found:
    """What the audit page shows: the records, and when they are not every match, why
    (``note``) and the ``until`` date that searches on from where it stopped (``older``)."""

    rows: list[dict[str, Any]]
    note: str | None = None
    older: str | None = None


@dataclass
class _Scan:
    """How far a search may read (None: every record in its dates), and how far it read."""

    records: int | None = None
    threads: int | None = None
    examined: int = 0
    read: int = 0
    """Threads read."""
    newest: float | None = None
    oldest: float | None = None
    stopped: bool = False
    """It reached a bound with records left to examine."""

    def is_spent(self) -> bool:
        return (self.records is not None and self.examined >= self.records) or (
            self.threads is not None and self.read >= self.threads
        )


async def search(rt: Runtime, wanted: Search) -> Found:
    """The newest ``AUDIT_LIMIT`` records ``wanted`` matches among the newest in its dates
    (``AUDIT_SCAN`` at most, and those of ``AUDIT_THREADS`` threads), newest first, each
    with its request's agent and tool; and, when that is not every match, what the page
    says."""
    rows: list[dict[str, Any]] = []
    scan = _Scan(records=AUDIT_SCAN, threads=AUDIT_THREADS)
    async with aclosing(matches(rt, wanted, scan)) as chunks:
        async for chunk in chunks:
            rows.extend(chunk)
            if len(rows) > AUDIT_LIMIT:
                break
    if len(rows) > AUDIT_LIMIT:
        return Found(
            rows[:AUDIT_LIMIT],
            f"These are the newest {AUDIT_LIMIT:,} matching records; there are more. To see"
            " older ones, narrow the search (a person, an agent, a tool, an outcome, or"
            " dates). The exports hold every match.",
        )
    if scan.stopped and scan.oldest is not None and scan.newest is not None:
        return _stopped(
            rows, scan.examined, _day(scan.oldest), _day(scan.newest), _iso(scan.oldest)
        )
    return Found(rows)


def _stopped(rows: list[dict[str, Any]], examined: int, oldest: str, newest: str, at: str) -> Found:
    said = (
        f"The search stopped after examining the newest {examined:,} records in its dates"
        f" (back to {at}) and found {len(rows):,} matches among them; older records were not"
        " read."
    )
    exports = " The exports search every record in the dates."
    if oldest == newest:  # an earlier "To" would leave out none of those examined
        return Found(rows, f"{said} All of those are from {oldest}.{exports}")
    return Found(
        rows,
        f"{said} To search older ones, narrow the dates: To {oldest} or earlier.{exports}",
        older=oldest,
    )


async def matches(
    rt: Runtime, wanted: Search, scan: _Scan | None = None
) -> AsyncGenerator[list[dict[str, Any]]]:
    """The records ``wanted`` matches, newest first, a chunk at a time, each with its
    request's agent and tool (each thread read once, the reads of a chunk together): every
    one in its dates, or as far as ``scan`` may read."""
    scan = _Scan() if scan is None else scan
    threads = _Threads(rt)
    records: list[dict[str, Any]] = []
    async with aclosing(newest_records(rt, wanted.start, wanted.end)) as every:
        async for record in every:
            if scan.is_spent():
                scan.stopped = True
                break
            scan.examined += 1
            scan.oldest = record["at"]
            scan.newest = record["at"] if scan.newest is None else scan.newest
            if wanted.is_record(record):
                records.append(record)
            if len(records) == CHUNK:
                yield await _rows(threads, wanted, records)
                records, scan.read = [], threads.read_count
    if records:
        yield await _rows(threads, wanted, records)


async def _rows(
    threads: _Threads, wanted: Search, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    known = await threads.read(r["thread"] for r in records)
    rows = [{**r, **known[r["thread"]].of(r["request"]), "at": _iso(r["at"])} for r in records]
    return [row for row in rows if wanted.is_row(row)]


@dataclass(frozen=True)
class _Asked:
    """What the audit shows of a thread: its agent and each approval request's tool."""

    agent: str = ""
    tools: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: ThreadState) -> _Asked:
        tools = {
            rid: req.asked.tool
            for rid, req in state.requests.items()
            if isinstance(req.asked, ApprovalRequested)
        }
        return cls(state.agent, tools)

    def of(self, request_id: str) -> dict[str, str]:
        return {"agent": self.agent, "tool": self.tools.get(request_id, "")}


class _Threads:
    """The threads one search reads: each once (from Redis, else the archive), what it
    needs of the last ``THREADS_KEPT`` kept."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.kept: OrderedDict[str, _Asked] = OrderedDict()
        self.read_count = 0

    async def read(self, thread_ids: Iterable[str]) -> dict[str, _Asked]:
        wanted = list(dict.fromkeys(thread_ids))
        new = [tid for tid in wanted if tid not in self.kept]
        self.read_count += len(new)
        states = await asyncio.gather(*map(self.rt.log.load, new))
        found = {tid: _Asked.from_state(s) for tid, s in zip(new, states, strict=True) if s.exists}
        gone = [tid for tid in new if tid not in found]
        if gone and self.rt.archive is not None:
            found |= await asyncio.to_thread(_archived, self.rt.archive, gone)
        self.kept.update((tid, found.get(tid, _Asked())) for tid in new)
        for tid in wanted:
            self.kept.move_to_end(tid)
        known = {tid: self.kept[tid] for tid in wanted}
        while len(self.kept) > THREADS_KEPT:
            self.kept.popitem(last=False)
        return known


def _archived(archive: Archive, thread_ids: list[str]) -> dict[str, _Asked]:
    """The threads retention archived, as they were when archived."""
    found = ((tid, archive.read(tid)) for tid in thread_ids)
    return {tid: _Asked.from_state(a.to_state()[0]) for tid, a in found if a is not None}


def _date(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInputError(f"{name} must be a date, YYYY-MM-DD, not {value!r}") from exc
    return day.timestamp()


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
