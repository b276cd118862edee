"""Archived threads: JSON Lines files on disk, one per thread, out of Redis.

``ARCHIVE_DIR/<YYYY-MM>/<thread id>.jsonl`` holds a first line describing the
thread (its meta and when it was archived), then its events exactly as Redis
stored them, so the hash chain still verifies. A file is written whole to a
temporary name and renamed, so a reader never sees half of one; writing the
same thread again replaces it. Web and worker processes must see the same
folder (a shared volume when they run on several machines).

``ARCHIVE_DIR/audit/<YYYY-MM>/<shard>-<first entry>.<lines>.<from>-<to>.<last entry>.jsonl``
holds audit records moved out of Redis, a line each: its stream entry id, a space, and the
record exactly as its stream stored it (JSON arrays, or objects stored before):
``bot.storage.audit.from_stored_record`` reads either whole. ``<from>`` and ``<to>`` bound
the records' ``at`` (Unix ms), so a reader opens only the batches that may hold the records
it wants: a record's ``at`` is its writer's clock, which need not agree with the Redis clock
that chose the batch. The entry ids keep each record's place in its stream (``Position``),
where ``GET /audit`` reads on from a page that stopped in Redis. Batches written before
(``<shard>-<first entry>.jsonl``) hold the records alone, and every reader opens them.
"""

from __future__ import annotations

import glob
import heapq
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain.events import Event, from_log
from bot.domain.reducer import ThreadState, fold
from bot.storage.audit import Position, from_stored_record

_BATCH = re.compile(
    r"(?P<shard>\d+)-(?P<ms>\d+)-(?P<seq>\d+)"
    r"(?:\.(?P<lines>\d+)\.(?P<low>\d+)-(?P<high>\d+)\.(?P<last>\d+-\d+))?"
)
"""An archived batch of audit records: ``<shard>-<its first record's stream entry id>``,
then (in batches written since their lines held entry ids) how many records it holds, the
bounds of their ``at`` in Unix ms, and its last record's entry id."""


@dataclass(frozen=True)
class _Batch:
    """An archived batch of audit records, as its name describes it."""

    path: Path
    shard: int
    first: Position
    """Its first record's place in the streams."""
    last: Position | None
    """Its last record's; None in a batch written before lines held entry ids."""
    low: float
    """No record in it is older (Unix seconds); minus infinity in a batch written before."""
    high: float
    """No record in it is newer; infinity in a batch written before."""


@dataclass(frozen=True)
class Archived:
    """One archived thread: what was known of it, and its stored events."""

    thread_id: str
    meta: dict[str, str]
    archived_at: float
    events: list[str]

    def to_state(self) -> tuple[ThreadState, list[Event]]:
        """The thread as it was when archived, and its events, read as the thread log reads
        them from Redis.

        Raises:
            ValueError: an event that does not read (``events.from_log``).
        """
        events = from_log(self.events, thread_id=self.thread_id)
        return fold(self.thread_id, events), events


class Archive:
    """The archive folder.

    Args:
        root: where archived threads are written.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, thread_id: str, meta: dict[str, str], events: Sequence[str], at: float) -> Path:
        """Write (or rewrite) one thread's file and make it durable before returning."""
        folder = self.root / time.strftime("%Y-%m", time.gmtime(at))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{thread_id}.jsonl"
        head = {"thread": thread_id, "archived_at": at, "meta": meta}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.write(json.dumps(head, separators=(",", ":")) + "\n")
            out.writelines(f"{raw}\n" for raw in events)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
        return path

    def write_audit(self, shard: int, batch: Sequence[tuple[str, str]], at: float) -> None:
        """Write a batch of the shard's audit records moved out of Redis, each its stream
        entry id and the record as stored (``AuditLog.older``), durably. The same batch
        written twice (by two workers, or after a crash) is read once: the copy with the
        most records (``_audit_batches``)."""
        folder = self.root / "audit" / time.strftime("%Y-%m", time.gmtime(at))
        folder.mkdir(parents=True, exist_ok=True)
        times = [float(from_stored_record(line)["at"]) for _, line in batch]
        # A millisecond either side: whatever float rounding does to ``at * 1000``.
        low, high = math.floor(min(times) * 1000) - 1, math.ceil(max(times) * 1000) + 1
        (first, _), (last, _) = batch[0], batch[-1]
        name = f"{shard:02d}-{first}.{len(batch)}.{max(0, low)}-{max(0, high)}.{last}.jsonl"
        path = folder / name
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.writelines(f"{entry} {line}\n" for entry, line in batch)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)

    def audit_records(self, since: float, until: float) -> list[dict[str, Any]]:
        """Archived audit records from ``since`` to ``until`` (by ``at``), oldest first: all of
        them at once (``audit_oldest`` reads as they are asked for)."""
        return list(self.audit_oldest(since, until))

    def audit_oldest(self, since: float, until: float) -> Iterator[dict[str, Any]]:
        """Archived audit records from ``since`` to ``until`` (by ``at``), oldest first
        (by ``at``, then ``event``: ``oldest_key``), read a file at a time as they are asked
        for: a reader that stops early has opened only the files that may hold the oldest
        records in its range."""
        return _in_order(self._audit_batches(), since, until, newest=False)

    def audit_newest(self, since: float, until: float) -> Iterator[dict[str, Any]]:
        """Archived audit records from ``since`` to ``until`` (by ``at``), newest first,
        read a file at a time as they are asked for: a reader that stops early
        has opened only the files that may hold the newest records in its range."""
        return _in_order(self._audit_batches(), since, until, newest=True)

    def audit_after(
        self, after: Position, until_ms: int
    ) -> Iterator[tuple[Position, dict[str, Any]]]:
        """Archived audit records whose place in the streams (``Position``) comes after
        ``after``, stored (by Redis's clock) by ``until_ms``, each with its place and in
        that order, each once: where a reader of the streams that stopped at ``after`` reads
        on when retention moved records out since. Read a file at a time as they are asked
        for, from the batches that hold such places only (those written with their entry
        ids: the others were written before this reader began)."""
        batches = [
            b
            for b in self._audit_batches()
            if b.last is not None and b.last > after and b.first[0] <= until_ms
        ]
        last = None
        for position, record in _by_place(batches):
            if after < position != last and position[0] <= until_ms:
                yield position, record
                last = position

    def _audit_batches(self) -> list[_Batch]:
        """Every archived batch of every shard, once. A batch written again (a sweep that
        stopped before trimming it from Redis writes it again, with as many records or
        more) is read from its latest month, and the copy with the most records."""
        latest: dict[tuple[str, int, int], tuple[str, int, _Batch]] = {}
        for path in self.root.glob("audit/*/*.jsonl"):
            name = _BATCH.fullmatch(path.stem)
            if name is None:
                continue
            placed = name["last"] is not None
            shard = int(name["shard"])
            batch = _Batch(
                path,
                shard,
                first=(int(name["ms"]), int(name["seq"]), shard),
                last=_position(name["last"], shard) if placed else None,
                low=int(name["low"]) / 1000 if placed else -math.inf,
                high=int(name["high"]) / 1000 if placed else math.inf,
            )
            key = (name["shard"], int(name["ms"]), int(name["seq"]))
            rank = (path.parent.name, int(name["lines"]) if placed else -1, batch)
            if key not in latest or rank[:2] > latest[key][:2]:
                latest[key] = rank
        return [batch for _, _, batch in latest.values()]

    def has(self, thread_id: str) -> bool:
        """Whether the thread was archived here (a file system look-up per month folder)."""
        return self._paths(thread_id) != []

    def _paths(self, thread_id: str) -> list[Path]:
        """The files of that thread id, each month's: the id is a name, never a pattern
        (``*`` would find other threads' files)."""
        if "/" in thread_id or thread_id.startswith("."):
            return []
        return sorted(self.root.glob(f"*/{glob.escape(thread_id)}.jsonl"))

    def read(self, thread_id: str) -> Archived | None:
        """The archived thread, or None when it was never archived here."""
        found = self._paths(thread_id)
        if not found:
            return None
        head, *events = found[-1].read_text(encoding="utf-8").splitlines()
        meta: dict[str, Any] = json.loads(head)
        return Archived(thread_id, dict(meta["meta"]), float(meta["archived_at"]), events)

    def list(self, *, offset: int, limit: int) -> tuple[list[Archived], int]:
        """Archived threads, the most recently archived first, and how many there are."""
        files = sorted(self.root.glob("*/*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        page = [self.read(p.stem) for p in files[offset : offset + limit]]
        return [a for a in page if a is not None], len(files)


def _audit_lines(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in _placed_lines(path)]


def _placed_lines(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """A batch's records, each with its stream entry id (None in batches written before
    lines held them: a stored record begins with ``[`` or ``{``, an id with a digit)."""
    placed: list[tuple[str | None, dict[str, Any]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry, _, stored = line.partition(" ") if line[:1].isdigit() else (None, "", line)
        placed.append((entry, from_stored_record(stored)))
    return placed


def _position(entry_id: str, shard: int) -> Position:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq), shard


def oldest_key(record: dict[str, Any]) -> tuple[float, str]:
    """The order of ``Archive.audit_oldest``: by time, then by event id (one per record)."""
    return float(record["at"]), str(record["event"])


def _by_place(batches: list[_Batch]) -> Iterator[tuple[Position, dict[str, Any]]]:
    """The records of ``batches`` (each with entry ids) in the order of their place in the
    streams, a batch opened only once the places still to come may be its (a batch copied
    twice, or two that overlap, give a place twice: one after the other)."""
    wanted = sorted(batches, key=lambda b: b.first)
    tie = itertools.count()
    ready: list[tuple[Position, int, dict[str, Any]]] = []
    opened = 0
    while opened < len(wanted) or ready:
        while opened < len(wanted) and (not ready or wanted[opened].first <= ready[0][0]):
            shard = wanted[opened].shard
            for entry, record in _placed_lines(wanted[opened].path):
                assert entry is not None  # a batch whose name holds its last entry
                heapq.heappush(ready, (_position(entry, shard), next(tie), record))
            opened += 1
        if ready:
            position, _, record = heapq.heappop(ready)
            yield position, record


def _in_order(
    batches: list[_Batch], since: float, until: float, *, newest: bool
) -> Iterator[dict[str, Any]]:
    """The records of ``batches`` from ``since`` to ``until``, oldest first (``oldest_key``)
    or newest first. A batch is opened only once the records still to come may be its:
    when its bound is reached, so a reader that stops early leaves the rest unopened. The
    batches' times may overlap, in any order, as their writers' clocks did."""
    sign = -1 if newest else 1

    def start(batch: _Batch) -> float:
        """The soonest a record of ``batch`` may come, in the order of ``order``."""
        return sign * (batch.high if newest else batch.low)

    def order(record: dict[str, Any]) -> tuple[float, str]:
        at, event = oldest_key(record)
        return sign * at, event

    wanted = sorted(
        (b for b in batches if b.high >= since and b.low <= until and since <= until), key=start
    )
    tie = itertools.count()
    ready: list[tuple[tuple[float, str], int, dict[str, Any]]] = []
    opened = 0
    while opened < len(wanted) or ready:
        while opened < len(wanted) and (not ready or start(wanted[opened]) <= ready[0][0][0]):
            for record in _audit_lines(wanted[opened].path):
                if since <= record["at"] <= until:
                    heapq.heappush(ready, (order(record), next(tie), record))
            opened += 1
        if ready:
            yield heapq.heappop(ready)[2]
