"""The inbox's record of what happened: threads and their timelines, and the audit trail
of decisions with its search and its exports (CSV, JSON Lines)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bot.domain.errors import InvalidInputError
from bot.domain.events import ApprovalRequested
from bot.runtime import Runtime
from bot.web import display
from bot.web.api import runtime_of
from bot.web.audit import read_records
from bot.web.inbox import Signed
from bot.web.pages import render

router = APIRouter(include_in_schema=False)

THREADS_PAGE = 50
AUDIT_LIMIT = 5000
"""The most records one search reads (the API's ``/audit`` reads up to 10,000)."""
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
    try:
        rows, error = await search(rt, query), None
    except InvalidInputError as exc:
        rows, error = [], exc.message
    return await render(
        request,
        "inbox/audit.html.j2",
        status_code=422 if error else 200,
        rows=rows,
        error=error,
        query=query,
        export=request.url.query,
        display=display,
    )


@router.get("/inbox/audit.csv")
async def audit_csv(request: Request, viewer: Signed) -> Response:
    """The search's records as CSV, one row a record, with a header row."""
    rt = runtime_of(request)
    rows = await search(rt, dict(request.query_params))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return _download(out.getvalue(), "text/csv", "audit.csv")


@router.get("/inbox/audit.jsonl")
async def audit_jsonl(request: Request, viewer: Signed) -> Response:
    """The search's records as JSON Lines, one object a record."""
    rt = runtime_of(request)
    rows = await search(rt, dict(request.query_params))
    body = "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in rows)
    return _download(body, "application/jsonl", "audit.jsonl")


async def search(rt: Runtime, query: dict[str, str]) -> list[dict[str, Any]]:
    """The audit records matching ``query`` (``person``, ``agent``, ``tool``, ``outcome``,
    ``since`` and ``until`` as dates), newest first, with each request's agent and tool."""
    start = _date(query.get("since"), "since")
    end = _date(query.get("until"), "until")
    # Through the whole "until" day; without one, everything (streams are stamped by Redis).
    end = UNTIL_EVER if end is None else end + 86400
    found = await read_records(rt, start or 0.0, end, AUDIT_LIMIT)
    rows = [{**r, **await _request_of(rt, r), "at": _iso(r["at"])} for r in found]
    person = query.get("person", "").strip().lower()
    wanted = {k: query.get(k, "").strip() for k in ("agent", "tool", "outcome")}
    matching = [
        r
        for r in rows
        if (not person or person in f"{r.get('by') or ''} {r.get('by_id') or ''}".lower())
        and all(not v or r.get(k) == v for k, v in wanted.items())
    ]
    return matching[::-1]


async def _request_of(rt: Runtime, record: dict[str, Any]) -> dict[str, str]:
    state = await rt.log.load(record["thread"])
    req = state.requests.get(record["request"])
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


def _download(body: str, media_type: str, name: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(body, media_type=media_type, headers=headers)
