"""The REST API (factor 6): launch, talk, decide, answer, pause, resume, cancel, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from bot.domain import ids
from bot.domain.errors import InvalidInputError, NotFoundError
from bot.domain.events import Actor, Decision, Origin
from bot.domain.reducer import Status
from bot.engine.inbox import Control
from bot.runtime import Runtime
from bot.storage.indexes import Page as Page_
from bot.storage.queue import last_heartbeat
from bot.web import callbacks
from bot.web.bodies import StrictJSONRoute
from bot.web.schemas import (
    AnswerIn,
    ControlIn,
    CreateThread,
    DecisionIn,
    Page,
    PostMessage,
    RequestOut,
    ThreadOut,
    ThreadSummary,
)


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


def api_actor(name: str) -> Actor:
    if not name.strip():
        raise InvalidInputError("`by`/`user` must name a person")
    return Actor(channel="api", id=name.strip())


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retrying a request with the same key changes nothing the second time.",
    ),
]


def _delivery(key: str | None) -> str | None:
    """The delivery key of an API call, apart from other channels' keys."""
    return f"api:{key}" if key else None


MAX_SCAN = 10_000
"""Threads of one agent read to filter them by status."""
MAX_OFFSET = 100_000
"""The deepest page: listings merge every shard's first offset + limit entries."""

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/threads", status_code=201, response_model=ThreadOut, tags=["threads"])
async def create_thread(
    body: CreateThread,
    rt: Rt,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ThreadOut:
    """Start a thread with an agent (200 with the same thread on a retried key)."""
    if body.callback_url is not None:
        private = request.app.state.refuse_private_callbacks
        await callbacks.check(body.callback_url, refuse_private=private)
    got = await rt.inbox.message(
        agent=body.agent,
        text=body.text,
        by=api_actor(body.user),
        origin=Origin(channel="api", callback_url=body.callback_url, metadata=body.metadata),
        # A key names its thread, so a retry finds the thread it created.
        thread_id=ids.thread_id_for("api", idempotency_key) if idempotency_key else None,
        delivery=_delivery(idempotency_key),
    )
    if got.duplicate:
        response.status_code = 200
    return ThreadOut.from_state(got.thread)


@router.get("/threads", response_model=Page[ThreadSummary], tags=["threads"])
async def list_threads(
    rt: Rt,
    status: Status | None = None,
    agent: str | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[ThreadSummary]:
    """Threads, newest first; filter by status and agent."""
    if status and agent:
        tids, total = await _with_status(rt, agent, status.value, offset, limit)
    else:
        tids, total = await rt.indexes.threads(
            status=status.value if status else None, agent=agent, offset=offset, limit=limit
        )
    rows = zip(tids, await rt.log.metas(tids), strict=True)
    items = [
        ThreadSummary(
            id=tid,
            agent=m.get("agent", ""),
            status=m.get("status", ""),
            version=int(m.get("version", 0)),
            updated_at=float(m.get("updated", 0)),
        )
        for tid, m in rows
    ]
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/threads/{thread_id}", response_model=ThreadOut, tags=["threads"])
async def get_thread(thread_id: str, rt: Rt) -> ThreadOut:
    """A thread: status, open requests and every event."""
    state = await rt.log.get(thread_id)
    return ThreadOut.from_state(state, await rt.log.events(thread_id, version=state.version))


@router.post("/threads/{thread_id}/messages", response_model=ThreadOut, tags=["threads"])
async def post_message(
    thread_id: str, body: PostMessage, rt: Rt, idempotency_key: IdempotencyKey = None
) -> ThreadOut:
    """The user speaks again."""
    got = await rt.inbox.say(
        thread_id, body.text, api_actor(body.user), delivery=_delivery(idempotency_key)
    )
    return ThreadOut.from_state(got.thread)


async def _control(rt: Runtime, thread_id: str, action: Control, body: ControlIn) -> ThreadOut:
    state = await rt.inbox.control(thread_id, action, api_actor(body.by), body.reason)
    return ThreadOut.from_state(state)


@router.post("/threads/{thread_id}/pause", response_model=ThreadOut, tags=["threads"])
async def pause(thread_id: str, rt: Rt, body: ControlIn | None = None) -> ThreadOut:
    """Stop the agent taking further steps; decisions are still recorded."""
    return await _control(rt, thread_id, "pause", body or ControlIn())


@router.post("/threads/{thread_id}/resume", response_model=ThreadOut, tags=["threads"])
async def resume(thread_id: str, rt: Rt, body: ControlIn | None = None) -> ThreadOut:
    """Resume a paused (or failed) thread where it stopped."""
    return await _control(rt, thread_id, "resume", body or ControlIn())


@router.post("/threads/{thread_id}/cancel", response_model=ThreadOut, tags=["threads"])
async def cancel(thread_id: str, rt: Rt, body: ControlIn | None = None) -> ThreadOut:
    """End the thread; its open requests are closed."""
    return await _control(rt, thread_id, "cancel", body or ControlIn())


@router.get("/requests", response_model=Page[RequestOut], tags=["requests"])
async def list_requests(
    rt: Rt,
    status: Annotated[str, Query(pattern="^open$")] = "open",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[RequestOut]:
    """Open approvals and questions across threads, oldest first."""
    rids, total = await rt.indexes.open_requests(offset=offset, limit=limit)
    items = []
    for rid in rids:
        try:
            req, state = await rt.decisions.find(rid)
        except NotFoundError:
            continue
        items.append(RequestOut.from_request(state.id, req))
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/requests/{request_id}", response_model=RequestOut, tags=["requests"])
async def get_request(request_id: str, rt: Rt) -> RequestOut:
    """One approval or question, open or closed, with its votes."""
    req, state = await rt.decisions.find(request_id)
    return RequestOut.from_request(state.id, req)


@router.post("/requests/{request_id}/decision", response_model=RequestOut, tags=["requests"])
async def decide(
    request_id: str, body: DecisionIn, rt: Rt, idempotency_key: IdempotencyKey = None
) -> RequestOut:
    """Approve or reject; 409 if no longer open, 403 if `by` may not decide."""
    done = await rt.decisions.decide(
        request_id,
        Decision(body.decision),
        api_actor(body.by),
        reason=body.reason,
        edited_args=body.edited_args,
        seen_hash=body.args_hash,
        delivery=_delivery(idempotency_key),
    )
    return RequestOut.from_request(done.thread.id, done.request)


@router.post("/requests/{request_id}/answer", response_model=RequestOut, tags=["requests"])
async def answer(
    request_id: str, body: AnswerIn, rt: Rt, idempotency_key: IdempotencyKey = None
) -> RequestOut:
    """Answer a question with text, or one of its choices."""
    text = body.choice if body.choice is not None else body.text
    if text is None:
        raise InvalidInputError("give `text` or `choice`")
    done = await rt.decisions.answer(
        request_id, text, api_actor(body.by), delivery=_delivery(idempotency_key)
    )
    return RequestOut.from_request(done.thread.id, done.request)


health = APIRouter()


@health.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@health.get("/readyz", tags=["health"])
async def readyz(rt: Rt) -> JSONResponse:
    """Redis answers and a worker was seen in the last 15 seconds."""
    try:
        seen = await last_heartbeat(rt.redis)
    except RedisError as exc:
        return JSONResponse({"error": "not_ready", "detail": f"redis: {exc}"}, status_code=503)
    if seen is None or rt.clock.now() - seen[1] > 15:
        return JSONResponse(
            {"error": "not_ready", "detail": "no worker seen recently"}, status_code=503
        )
    return JSONResponse({"status": "ready", "worker": seen[0]})


async def _with_status(rt: Runtime, agent: str, status: str, offset: int, limit: int) -> Page_:
    """An agent's threads in one status: its whole index, filtered by each thread's meta."""
    tids, _ = await rt.indexes.threads(agent=agent, offset=0, limit=MAX_SCAN)
    metas = await rt.log.metas(tids)
    found = [t for t, m in zip(tids, metas, strict=True) if m.get("status") == status]
    return found[offset : offset + limit], len(found)
