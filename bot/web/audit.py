"""Audit routes: check a thread's hash chain, and read the decisions for an auditor."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from bot.domain import ids
from bot.domain.audit import verify_chain
from bot.domain.errors import InvalidInputError, NotFoundError
from bot.runtime import Runtime
from bot.storage import keys
from bot.storage.archive import Archive, oldest_key
from bot.storage.audit import Position
from bot.web.api import runtime_of
from bot.web.schemas import error_responses
from bot.web.scopes import Scoped, scope

router = APIRouter(
    route_class=Scoped,
    tags=["audit"],
    responses=error_responses(400, 401, 403, 422, 503),
    dependencies=[scope("admin")],
)

T = TypeVar("T")

MAX_RECORDS = 10_000
ARCHIVE_PAGE = 500
"""Archived records read at once (in a thread: the archive is files)."""


class BreakOut(BaseModel):
    index: int
    event_id: str | None
    why: str


class ChainOut(BaseModel):
    """Whether a thread's log is as it was recorded."""

    thread: str
    events: int
    intact: bool
    breaks: list[BreakOut]
    archived: bool = False
    """Checked in the archive (retention moved the thread out of Redis)."""


class RecordOut(BaseModel):
    """One decision, answer or expiry, with the hash of the event it was recorded as."""

    at: float
    thread: str
    kind: str
    outcome: str
    request: str
    by: str | None
    by_id: str | None
    channel: str
    reason: str | None
    args_hash: str | None
    event: str
    hash: str


class RecordsOut(BaseModel):
    items: list[RecordOut]
    next: str | None = None
    """Where the records after these are (path and query: the same ``since``, ``until``
    and ``limit``, and ``after``), when ``limit`` cut the range short; null when
    ``items`` holds the last record in the range."""


@router.get("/threads/{thread_id}/audit", response_model=ChainOut, responses=error_responses(404))
async def verify(request: Request, thread_id: str) -> ChainOut:
    """Check the thread's hash chain: any event edited, removed or reordered in Redis, or
    in the archive once retention moved it there, shows."""
    rt = runtime_of(request)
    # As stored, never parsed: a log edited in Redis may no longer read as events.
    stored = await rt.log.stored(thread_id) if ids.is_thread_id(thread_id) else []
    archived = None
    if not stored and rt.archive is not None and ids.is_thread_id(thread_id):
        archived = await asyncio.to_thread(rt.archive.read, thread_id)
        stored = archived.events if archived is not None else []
    if not stored:
        raise NotFoundError(f"no thread {thread_id!r}", thread_id=thread_id)
    breaks = [
        BreakOut(index=b.index, event_id=b.event_id, why=b.why)
        for b in verify_chain(stored, thread_id)
    ]
    return ChainOut(
        thread=thread_id,
        events=len(stored),
        intact=not breaks,
        breaks=breaks,
        archived=archived is not None,
    )


@router.get("/audit", response_model=RecordsOut)
async def records(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RECORDS)] = MAX_RECORDS,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> RecordsOut:
    """Decisions, answers and expiries recorded between ``since`` and ``until``, oldest
    first: at most ``limit``, and ``next`` links to the rest. Those retention archived
    come first; a page reads only as many records as it returns (and one more)."""
    rt = runtime_of(request)
    start = since.timestamp() if since else 0.0
    end = until.timestamp() if until else rt.clock.now()
    found, more = await read_page(rt, start, end, limit, Cursor.read(after))
    items = [RecordOut(**r) for r in found]
    if more is None:
        return RecordsOut(items=items)
    query = {
        **({"since": since.isoformat()} if since else {}),
        "until": (until or datetime.fromtimestamp(end, UTC)).isoformat(),
        "limit": str(limit),
        "after": more.write(),
    }
    return RecordsOut(items=items, next=f"{request.url.path}?{urlencode(query)}")


@dataclass(frozen=True)
class Cursor:
    """Where a page of ``GET /audit`` stopped: the last archived record it returned, and
    the last one still in Redis (once the archived ones in the range are all returned)."""

    archived: tuple[float, str] | None = None
    """``oldest_key`` of the last archived record returned."""
    live: Position | None = None
    """The position in the streams of the last record returned from Redis."""

    def write(self) -> str:
        data = {"a": self.archived, "l": self.live}
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()

    @classmethod
    def read(cls, text: str | None) -> Cursor:
        """The cursor ``write`` wrote; nothing is the start.

        Raises:
            InvalidInputError: not a cursor ``write`` wrote.
        """
        if text is None:
            return cls()
        refused = InvalidInputError("`after` is not a cursor this API gave (`next`)")
        try:
            data = json.loads(base64.urlsafe_b64decode(text.encode()))
            archived, live = data["a"], data["l"]
            cursor = cls(
                archived=None if archived is None else (float(archived[0]), str(archived[1])),
                live=None if live is None else (int(live[0]), int(live[1]), int(live[2])),
            )
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise refused from exc
        if not cursor._is_sound():
            raise refused
        return cursor

    def _is_sound(self) -> bool:
        """Whether it could be one ``write`` wrote: a time, and a stream entry id (two
        64-bit numbers) and a shard. Redis refuses other ids (a 500, else)."""
        if self.archived is not None and not math.isfinite(self.archived[0]):
            return False
        if self.live is None:
            return True
        ms, seq, shard = self.live
        return 0 <= ms < 2**64 and 0 <= seq < 2**64 and 0 <= shard < keys.SHARDS


async def read_page(
    rt: Runtime, start: float, end: float, limit: int, after: Cursor
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Up to ``limit`` audit records from ``start`` to ``end`` (Unix seconds) that come
    after ``after``, oldest first: those retention archived (oldest, by ``oldest_key``),
    then those still in Redis (by their place in the streams). And where the next page
    starts, None when these are the last. A record archived but not yet trimmed from
    Redis comes once; one retention moves out of Redis between two pages comes still, in
    its place (``_with_moved``). Reads ``limit`` + 1 records, and the archived ones as old as the
    newest Redis records that may be in the archive too."""
    found: list[dict[str, Any]] = []
    last = after.archived
    if after.live is None and rt.archive is not None:
        # From the cursor's time: the batches whose records are all older stay unopened.
        archived = rt.archive.audit_oldest(start if last is None else max(start, last[0]), end)
        while page := await asyncio.to_thread(_after, archived, last, limit + 1 - len(found)):
            found += page
            if len(found) > limit:
                return found[:limit], Cursor(archived=oldest_key(found[limit - 1]))
        last = oldest_key(found[-1]) if found else last
    both: set[str] = set()  # archived records that may still be in Redis too
    both_since = None  # from when ``both`` holds them
    position = after.live
    batch = min(ARCHIVE_PAGE, limit + 1)
    live = rt.audit.oldest(start, end, after=after.live, batch=batch)
    if after.live is not None and rt.archive is not None:
        live = _with_moved(live, rt.archive, after.live, end)
    async with aclosing(live) as records:
        async for at, record in records:
            if last is not None and oldest_key(record) <= last:
                if both_since is None or record["at"] < both_since:
                    both_since = float(record["at"])
                    both = await _archived(rt, both_since, last)
                if record["event"] in both:
                    continue
            if len(found) == limit:
                return found, Cursor(archived=last, live=position)
            found.append(record)
            position = at
    return found, None


async def _with_moved(
    live: AsyncGenerator[tuple[Position, dict[str, Any]]],
    archive: Archive,
    after: Position,
    end: float,
) -> AsyncGenerator[tuple[Position, dict[str, Any]]]:
    """``live`` (the streams' records after ``after``, by their place there), with those
    retention moved to the archive since a page stopped at ``after``: in that order, each
    once (one archived but not yet trimmed is in both). Without them, a sweep between two
    pages would lose every record it moved from after ``after``."""
    moved = _paged(archive.audit_after(after, int(end * 1000)))
    async with aclosing(live), aclosing(moved):
        next_moved = await anext(moved, None)
        async for position, record in live:
            while next_moved is not None and next_moved[0] <= position:
                if next_moved[0] < position:
                    yield next_moved
                next_moved = await anext(moved, None)
            yield position, record
        while next_moved is not None:
            yield next_moved
            next_moved = await anext(moved, None)


async def _paged(records: Iterator[T]) -> AsyncGenerator[T]:
    """``records``, read ``ARCHIVE_PAGE`` at a time in a thread (the archive is files)."""
    while page := await asyncio.to_thread(_take, records, ARCHIVE_PAGE):
        for record in page:
            yield record


def _after(
    records: Iterator[dict[str, Any]], last: tuple[float, str] | None, n: int
) -> list[dict[str, Any]]:
    """The next ``n`` of ``records`` (oldest first) that come after ``last``; at most
    ``ARCHIVE_PAGE`` at once."""
    later = (r for r in records if last is None or oldest_key(r) > last)
    return list(itertools.islice(later, min(n, ARCHIVE_PAGE)))


async def _archived(rt: Runtime, since: float, last: tuple[float, str]) -> set[str]:
    """The events of the archived records from ``since`` up to ``last``: read newest
    first, so only the batches that may hold them are opened."""
    assert rt.archive is not None  # ``last`` is an archived record's
    newest = rt.archive.audit_newest(0.0, last[0])

    def read() -> set[str]:
        kept = itertools.takewhile(lambda r: float(r["at"]) >= since, newest)
        return {r["event"] for r in kept if oldest_key(r) <= last}

    return await asyncio.to_thread(read)


async def newest_records(rt: Runtime, start: float, end: float) -> AsyncGenerator[dict[str, Any]]:
    """The audit records from ``start`` to ``end`` (Unix seconds), newest first: those still
    in Redis, then those retention archived (all older: it moves the oldest out), each read
    a page at a time as the reader asks. A record archived but not yet trimmed from Redis
    comes once."""
    archived: Iterator[dict[str, Any]] = iter(())
    newest_archived = None
    if rt.archive is not None:
        archived = rt.archive.audit_newest(start, end)
        first = await asyncio.to_thread(next, archived, None)
        if first is not None:
            newest_archived, archived = first["at"], itertools.chain([first], archived)
    both: set[str] = set()  # live records as old as the archive's newest: there twice, maybe
    async for record in rt.audit.newest(start, end):
        if newest_archived is not None and record["at"] <= newest_archived:
            both.add(record["event"])
        yield record
    while page := await asyncio.to_thread(_take, archived, ARCHIVE_PAGE):
        for record in page:
            if record["event"] not in both:
                yield record


def _take(records: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(records, n))
