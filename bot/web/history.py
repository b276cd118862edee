"""The inbox's record of what happened: threads and their timelines, and the audit trail
of decisions, searched (``bot.web.search``) and exported (CSV, JSON Lines)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from bot.domain.audit import to_cells
from bot.domain.errors import InvalidInputError
from bot.web import display
from bot.web.api import runtime_of
from bot.web.inbox import Signed
from bot.web.pages import render
from bot.web.search import Found, Search, matches, search

router = APIRouter(include_in_schema=False)

THREADS_PAGE = 50
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
    found, error = Found(rows=[]), None
    try:
        found = await search(rt, Search.from_query(query))
    except InvalidInputError as exc:
        error = exc.message
    older = urlencode({**query, "until": found.older}) if found.older else None
    return await render(
        request,
        "inbox/audit.html.j2",
        status_code=422 if error else 200,
        rows=found.rows,
        note=found.note,
        older=older,
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
        async for chunk in matches(rt, wanted):
            writer.writerows(to_cells(r) for r in chunk)
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
        async for chunk in matches(rt, wanted):
            yield "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in chunk)

    return _download(lines(), "application/jsonl", "audit.jsonl")


def _download(body: AsyncIterator[str], media_type: str, name: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(body, media_type=media_type, headers=headers)
