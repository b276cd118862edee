"""Audit routes: check a thread's hash chain, and read the decisions for an auditor."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from bot.domain import ids
from bot.domain.audit import verify_chain
from bot.domain.errors import NotFoundError
from bot.runtime import Runtime
from bot.web.api import runtime_of
from bot.web.schemas import error_responses
from bot.web.scopes import Scoped, scope

router = APIRouter(
    route_class=Scoped,
    tags=["audit"],
    responses=error_responses(400, 401, 403, 422, 503),
    dependencies=[scope("admin")],
)

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


@router.get("/threads/{thread_id}/audit", response_model=ChainOut, responses=error_responses(404))
async def verify(request: Request, thread_id: str) -> ChainOut:
    """Check the thread's hash chain: any event edited, removed or reordered in Redis shows."""
    rt = runtime_of(request)
    # As stored, never parsed: a log edited in Redis may no longer read as events.
    stored = await rt.log.stored(thread_id) if ids.is_thread_id(thread_id) else []
    if not stored:
        raise NotFoundError(f"no thread {thread_id!r}", thread_id=thread_id)
    breaks = [
        BreakOut(index=b.index, event_id=b.event_id, why=b.why)
        for b in verify_chain(stored, thread_id)
    ]
    return ChainOut(thread=thread_id, events=len(stored), intact=not breaks, breaks=breaks)


@router.get("/audit", response_model=RecordsOut)
async def records(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RECORDS)] = MAX_RECORDS,
) -> RecordsOut:
    """Decisions, answers and expiries recorded between ``since`` and ``until``, oldest first."""
    rt = runtime_of(request)
    start = since.timestamp() if since else 0.0
    end = until.timestamp() if until else rt.clock.now()
    found = await read_records(rt, start, end, limit)
    return RecordsOut(items=[RecordOut(**r) for r in found])


async def read_records(rt: Runtime, start: float, end: float, limit: int) -> list[dict[str, Any]]:
    """The audit records from ``start`` to ``end`` (Unix seconds), oldest first: those
    retention archived, then those still in Redis."""
    found: list[dict[str, Any]] = await rt.audit.records(start, end, limit=limit)
    if rt.archive is not None:  # what retention moved out of Redis, first
        archived = await asyncio.to_thread(rt.archive.audit_records, start, end)
        live = {r["event"] for r in found}
        found = [*(r for r in archived if r["event"] not in live), *found][:limit]
    return found


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


def _take(records: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return list(itertools.islice(records, n))
