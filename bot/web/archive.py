"""Archived threads: finished threads that retention moved out of Redis, still readable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from bot.domain.errors import NotFoundError
from bot.storage.archive import Archive, Archived
from bot.web.api import runtime_of
from bot.web.schemas import Page, ThreadOut, error_responses
from bot.web.scopes import Scoped, scope

router = APIRouter(
    route_class=Scoped,
    tags=["archive"],
    responses=error_responses(400, 401, 403, 404, 422, 503),
    dependencies=[scope("admin")],
)


class ArchivedOut(ThreadOut):
    """A thread as it was when archived."""

    archived_at: float


@router.get("/archive", response_model=Page[ArchivedOut])
async def archived(
    request: Request,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[ArchivedOut]:
    """Archived threads, the most recently archived first (without their events)."""
    rt = runtime_of(request)
    found, total = _archive(rt.archive).list(offset=offset, limit=limit)
    items = [to_out(a, with_events=False) for a in found]
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/archive/{thread_id}", response_model=ArchivedOut)
async def archived_thread(request: Request, thread_id: str) -> ArchivedOut:
    """One archived thread with every event."""
    rt = runtime_of(request)
    found = _archive(rt.archive).read(thread_id)
    if found is None:
        raise NotFoundError(f"no archived thread {thread_id!r}", thread_id=thread_id)
    return to_out(found, with_events=True)


def to_out(archived: Archived, *, with_events: bool) -> ArchivedOut:
    state, events = archived.to_state()
    out = ThreadOut.from_state(state, events if with_events else None)
    return ArchivedOut(**out.model_dump(), archived_at=archived.archived_at)


def _archive(archive: Archive | None) -> Archive:
    if archive is None:
        raise NotFoundError("this server keeps no archive")
    return archive
