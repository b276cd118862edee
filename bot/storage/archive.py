"""Archived threads: JSON Lines files on disk, one per thread, out of Redis.

``ARCHIVE_DIR/<YYYY-MM>/<thread id>.jsonl`` holds a first line describing the
thread (its meta and when it was archived), then its events exactly as Redis
stored them, so the hash chain still verifies. A file is written whole to a
temporary name and renamed, so a reader never sees half of one; writing the
same thread again replaces it. Web and worker processes must see the same
folder (a shared volume when they run on several machines).

``ARCHIVE_DIR/audit/<YYYY-MM>/<shard>-<first entry>.jsonl`` holds audit records moved
out of Redis, a line each, exactly as their stream stored them (JSON arrays, or objects
stored before): ``bot.storage.audit.from_stored_record`` reads either whole.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain.events import Event, from_log
from bot.domain.reducer import ThreadState, fold
from bot.storage.audit import from_stored_record

_BATCH = re.compile(r"(?P<shard>\d+)-(?P<ms>\d+)-(?P<seq>\d+)")
"""An archived batch of audit records: ``<shard>-<its first record's stream entry id>``."""


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

    def write_audit(self, shard: int, first: str, lines: Sequence[str], at: float) -> None:
        """Write a batch of audit records moved out of Redis (durably; the same batch
        written twice, by two workers or after a crash, is one file)."""
        folder = self.root / "audit" / time.strftime("%Y-%m", time.gmtime(at))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{shard:02d}-{first}.jsonl"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.writelines(f"{line}\n" for line in lines)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)

    def audit_records(self, since: float, until: float) -> list[dict[str, Any]]:
        """Archived audit records stored from ``since`` to ``until``, oldest first: all of
        them at once (``audit_oldest`` reads as they are asked for)."""
        return list(self.audit_oldest(since, until))

    def audit_oldest(self, since: float, until: float) -> Iterator[dict[str, Any]]:
        """Archived audit records stored from ``since`` to ``until``, oldest first (by
        ``at``, then ``event``: ``oldest_key``), read a file at a time as they are asked
        for: a reader that stops early has opened only the oldest files in its range."""
        shards = self._audit_files().values()
        return heapq.merge(*(_oldest(files, since, until) for files in shards), key=oldest_key)

    def has(self, thread_id: str) -> bool:
        """Whether the thread was archived here (a file system look-up per month folder)."""
        return self._paths(thread_id) != []

    def _paths(self, thread_id: str) -> list[Path]:
        if "/" in thread_id or thread_id.startswith("."):
            return []
        return sorted(self.root.glob(f"*/{thread_id}.jsonl"))

    def audit_newest(self, since: float, until: float) -> Iterator[dict[str, Any]]:
        """Archived audit records stored from ``since`` to ``until``, newest first, read a
        file at a time as they are asked for: a reader that stops early has opened only
        the newest files (each shard's newest, to begin with)."""
        shards = self._audit_files().values()
        return heapq.merge(
            *(_newest(files, since, until) for files in shards), key=lambda r: -float(r["at"])
        )

    def _audit_files(self) -> dict[str, list[tuple[int, Path]]]:
        """Each shard's batches, oldest first, with when (Unix ms) each one's first record
        was stored: a batch holds the records from then to the next one's first. A batch
        written again in a later month (a sweep that stopped before trimming it) is read
        from there."""
        batches: dict[tuple[str, int, int], Path] = {}
        for path in sorted(self.root.glob("audit/*/*.jsonl")):  # months in order
            name = _BATCH.fullmatch(path.stem)
            if name is not None:
                batches[(name["shard"], int(name["ms"]), int(name["seq"]))] = path
        shards: dict[str, list[tuple[int, Path]]] = {}
        for (shard, ms, _), path in sorted(batches.items()):
            shards.setdefault(shard, []).append((ms, path))
        return shards

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
    return [from_stored_record(line) for line in path.read_text(encoding="utf-8").splitlines()]


def oldest_key(record: dict[str, Any]) -> tuple[float, str]:
    """The order of ``Archive.audit_oldest``: by time, then by event id (one per record)."""
    return float(record["at"]), str(record["event"])


def _oldest(files: list[tuple[int, Path]], since: float, until: float) -> Iterator[dict[str, Any]]:
    """One shard's archived records from ``since`` to ``until``, oldest first, its batches
    read oldest first (as the stream's entries are chosen: by when Redis stored them)."""
    for i, (first, path) in enumerate(files):
        if first > until * 1000:
            return  # this batch and the later ones were stored after ``until``
        if i + 1 < len(files) and files[i + 1][0] <= since * 1000:
            continue  # stored before ``since``, every one: the next batch begins by then
        records = sorted(_audit_lines(path), key=oldest_key)
        yield from (r for r in records if since <= r["at"] <= until)


def _newest(files: list[tuple[int, Path]], since: float, until: float) -> Iterator[dict[str, Any]]:
    """One shard's archived records from ``since`` to ``until``, newest first, its batches
    read newest first (as the stream's entries are chosen: by when Redis stored them)."""
    for first, path in reversed(files):
        if first > until * 1000:
            continue  # stored after ``until``, every one
        records = sorted(_audit_lines(path), key=lambda r: float(r["at"]), reverse=True)
        yield from (r for r in records if since <= r["at"] <= until)
        if first < since * 1000:
            return  # the batches before hold older records only
