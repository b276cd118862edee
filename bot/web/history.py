"""The inbox's record of what happened: threads and their timelines, and the audit trail
of decisions with its search and its exports (CSV, JSON Lines)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from bot.domain.errors import InvalidInputError
from bot.domain.events import ApprovalRequested
from bot.domain.reducer import ThreadState
from bot.runtime import Runtime
from bot.storage.archive import Archive
from bot.web import display
from bot.web.api import runtime_of
from bot.web.audit import newest_records
from bot.web.inbox import Signed
from bot.web.pages import render

router = APIRouter(include_in_schema=False)

THREADS_PAGE = 50
AUDIT_LIMIT = 5000
"""The most records the audit page shows: the newest that match (the exports hold all)."""
CHUNK = 250
"""Records whose threads are read together (one write on one server), and streamed."""
UNTIL_EVER = 4102444800.0
"""2100-01-01: the end of a search with no end date."""
COLUMNS = (
    "at",
    "request",
    "thread",
    "agent",
    "tool",
    "kind",
    "outcome",
    "by",
    "by_id",
    "channel",
    "reason",
    "args_hash",
    "event",
    "hash",
)
"""The columns of an export, in order: the audit record and the request's agent and tool."""


@router.get("/inbox/threads")
async def threads(
    request: Request,
    viewer: Signed,
    *,
    status: str = "",
    agent: str = "",
    page: int = 1,
) -> Response:
    """Threads, newest first, by status or agent."""
    rt = runtime_of(request)
    page = max(page, 1)
    tids, total = await rt.indexes.threads(
        status=status or None,
        agent=agent or None,
        offset=min((page - 1) * THREADS_PAGE, 10_000),
        limit=THREADS_PAGE,
    )
    metas = await rt.log.metas(tids)
    rows = [{"id": tid, **meta} for tid, meta in zip(tids, metas, strict=True) if meta]
    return await render(
        request,
        "inbox/threads.html.j2",
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // THREADS_PAGE)),
        status=status,
        agent=agent,
        agents=sorted(rt.agents),
        display=display,
    )


@router.get("/inbox/threads/{thread_id}")
async def thread(request: Request, thread_id: str, viewer: Signed) -> Response:
    """A thread's timeline: messages, tool calls and results, requests, decisions, errors,
    deliveries."""
    rt = runtime_of(request)
    state = await rt.log.get(thread_id)
    events = await rt.log.events(thread_id, version=state.version)
    return await render(
        request,
        "inbox/thread.html.j2",
        state=state,
        rows=display.to_rows(events),
        display=display,
    )


@router.get("/inbox/audit")
async def audit(request: Request, viewer: Signed) -> Response:
    """Every decision, answer and expiry, searched by person, agent, tool, outcome, date."""
    rt = runtime_of(request)
    query = dict(request.query_params)
    rows: list[dict[str, Any]] = []
    note = error = None
    try:
        rows, note = await search(rt, Search.from_query(query))
    except InvalidInputError as exc:
        error = exc.message
    return await render(
        request,
        "inbox/audit.html.j2",
        status_code=422 if error else 200,
        rows=rows,
        note=note,
        error=error,
        query=query,
        export=request.url.query,
        display=display,
    )


@router.get("/inbox/audit.csv")
async def audit_csv(request: Request, viewer: Signed) -> Response:
    """Every record the search matches as CSV, newest first, one row a record, with a
    header row; streamed, so however many there are, all of them."""
    rt, wanted = runtime_of(request), Search.from_query(dict(request.query_params))

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        async for chunk in _matches(rt, wanted):
            writer.writerows(chunk)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()  # the header, when nothing matched

    return _download(lines(), "text/csv", "audit.csv")


@router.get("/inbox/audit.jsonl")
async def audit_jsonl(request: Request, viewer: Signed) -> Response:
    """Every record the search matches as JSON Lines, newest first, one object a record;
    streamed, so however many there are, all of them."""
    rt, wanted = runtime_of(request), Search.from_query(dict(request.query_params))

    async def lines() -> AsyncIterator[str]:
        async for chunk in _matches(rt, wanted):
            yield "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in chunk)

    return _download(lines(), "application/jsonl", "audit.jsonl")


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


async def search(rt: Runtime, wanted: Search) -> tuple[list[dict[str, Any]], str | None]:
    """The newest ``AUDIT_LIMIT`` records ``wanted`` matches, newest first, each with its
    request's agent and tool; and, when that is not every match, what the page says."""
    rows: list[dict[str, Any]] = []
    async with aclosing(_matches(rt, wanted)) as chunks:
        async for chunk in chunks:
            rows.extend(chunk)
            if len(rows) > AUDIT_LIMIT:
                break
    if len(rows) > AUDIT_LIMIT:
        return rows[:AUDIT_LIMIT], (
            f"These are the newest {AUDIT_LIMIT:,} matching records; there are more. To see"
            " older ones, narrow the search (a person, an agent, a tool, an outcome, or"
            " dates). The exports hold every match."
        )
    return rows, None


async def _matches(rt: Runtime, wanted: Search) -> AsyncGenerator[list[dict[str, Any]]]:
    """The records ``wanted`` matches, newest first, a chunk at a time, each with its
    request's agent and tool (each thread read once a chunk, the reads together)."""
    records: list[dict[str, Any]] = []
    async with aclosing(newest_records(rt, wanted.start, wanted.end)) as every:
        async for record in every:
            if wanted.is_record(record):
                records.append(record)
            if len(records) == CHUNK:
                yield await _rows(rt, wanted, records)
                records = []
    if records:
        yield await _rows(rt, wanted, records)


async def _rows(rt: Runtime, wanted: Search, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tids = list(dict.fromkeys(r["thread"] for r in records))
    states = dict(zip(tids, await asyncio.gather(*map(rt.log.load, tids)), strict=True))
    gone = [tid for tid, state in states.items() if not state.exists]
    if gone and rt.archive is not None:
        states |= await asyncio.to_thread(_archived, rt.archive, gone)
    rows = [
        {**r, **_request_of(states[r["thread"]], r["request"]), "at": _iso(r["at"])}
        for r in records
    ]
    return [row for row in rows if wanted.is_row(row)]


def _archived(archive: Archive, thread_ids: list[str]) -> dict[str, ThreadState]:
    """The threads retention archived, as they were when archived."""
    found = {tid: archive.read(tid) for tid in thread_ids}
    return {tid: a.to_state()[0] for tid, a in found.items() if a is not None}


def _request_of(state: ThreadState, request_id: str) -> dict[str, str]:
    req = state.requests.get(request_id)
    tool = req.asked.tool if req is not None and isinstance(req.asked, ApprovalRequested) else ""
    return {"agent": state.agent, "tool": tool}


def _date(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInputError(f"{name} must be a date, YYYY-MM-DD, not {value!r}") from exc
    return day.timestamp()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _download(body: AsyncIterator[str], media_type: str, name: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(body, media_type=media_type, headers=headers)
