"""The REST API (factor 6): launch, talk, decide, answer, pause, resume, cancel, read."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError

from bot.domain import ids
from bot.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from bot.domain.events import Actor, Decision, Origin
from bot.domain.reducer import Status
from bot.engine.inbox import Control
from bot.runtime import Runtime
from bot.storage.indexes import Page as Page_
from bot.storage.queue import last_heartbeat
from bot.storage.threadlog import ReusedDelivery
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
    error_responses,
)
from bot.web.scopes import Caller, Scoped, caller_of, scope

T = TypeVar("T")
DecisionOrAnswer = TypeVar("DecisionOrAnswer", DecisionIn, AnswerIn)


def runtime_of(request: Request) -> Runtime:
    """The runtime the app was built around.

    Read by each endpoint rather than given by a dependency: FastAPI spends about
    100 k instructions solving each dependency of every request (see ``scopes.caller_of``).
    """
    rt: Runtime = request.app.state.runtime
    return rt


def api_actor(name: str) -> Actor:
    if not name.strip():
        raise InvalidInputError("`by`/`user` must name a person")
    return Actor(channel="api", id=name.strip())


MAX_KEY = 200
"""The longest Idempotency-Key, in characters."""
_KEY_DOC = "Retrying a request with the same key changes nothing the second time."
IDEMPOTENCY_KEY: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
                    {"type": "null"},
                ],
                "description": _KEY_DOC,
                "title": "Idempotency-Key",
            },
            "description": _KEY_DOC,
        }
    ]
}
"""The header in the OpenAPI document: ``openapi_extra`` of each route that reads it."""


def idempotency_key_of(request: Request) -> str | None:
    """The request's Idempotency-Key header, if it has one: 1 to ``MAX_KEY`` characters.

    Read here rather than declared as a header parameter, which FastAPI validated with
    pydantic on every request, with or without the header (about 4 % of the web
    process's CPU). A bad key gets the 422 a parameter would, with the same body.
    """
    key = request.headers.get("idempotency-key")
    if key is None or 1 <= len(key) <= MAX_KEY:
        return key
    short = not key
    raise RequestValidationError(
        [
            {
                "type": "string_too_short" if short else "string_too_long",
                "loc": ("header", "Idempotency-Key"),
                "msg": "String should have at least 1 character"
                if short
                else f"String should have at most {MAX_KEY} characters",
                "input": key,
            }
        ]
    )


def _delivery(key: str | None) -> str | None:
    """The delivery key of an API call, apart from other channels' keys."""
    return f"api:{key}" if key else None


def _vote_delivery(who: Caller, key: str | None) -> str | None:
    """The delivery key of a decision or an answer: the caller's own (``owned_key``).

    Several callers decide on one thread: with the key as sent, a second approver's
    vote under the same key was taken for a replay (200, never recorded), and a token
    replaying another's key and body got the request back instead of its 403.
    """
    return _delivery(owned_key(who, key)) if key else None


def fingerprint_of(
    request: Request, body: BaseModel | None, key: str | None, include: set[str] | None = None
) -> str | None:
    """What an API call asks for: its route and its body as parsed (key order ignored),
    or only the fields ``include`` names.

    Stored beside the Idempotency-Key, so the same key sent with another body is
    refused instead of silently answering with the first call's result. None
    without a key: nothing would keep it.
    """
    if not key:
        return None
    data = body.model_dump(mode="json", include=include) if body is not None else None
    shown = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n{shown}".encode())
    return digest.hexdigest()[:32]


def key_reused(key: str | None) -> InvalidInputError:
    """The 422 for an Idempotency-Key sent again with another body than its first call's."""
    return InvalidInputError(
        f"Idempotency-Key {key!r} was already used with a different request body;"
        " use a new key for a new request",
        idempotency_key=key,
    )


async def _once(key: str | None, call: Awaitable[T]) -> T:
    """Await ``call``, naming the Idempotency-Key when it was used for another request."""
    try:
        return await call
    except ReusedDelivery as exc:
        raise key_reused(key) from exc


async def _refused_as_read(
    rt: Runtime, who: Caller, request_id: str, key: str | None, call: Awaitable[T]
) -> T:
    """Await a decision or an answer (``_once``). Refused for what the request is (closed,
    not theirs to decide, a question), a caller that may not read it (``GET
    /requests/{id}``: an approver it does not ask) gets the 404 that GET gives instead:
    open or closed, nothing of it is told. Bad input (a reused Idempotency-Key, a reason
    too long) is said as it is: it tells nothing of the request."""
    try:
        return await _once(key, call)
    except (ConflictError, ForbiddenError):
        if who.scope == "admin":
            raise
        req, state = await rt.decisions.find(request_id)
        who.check_reads(state, req)
        raise


MAX_SCAN = 10_000
"""Threads of one agent read to filter them by status."""
MAX_OFFSET = 100_000
"""The deepest page: listings merge every shard's first offset + limit entries."""


class ApiRoute(Scoped, StrictJSONRoute):
    """An API route: its token's scope checked first (``Scoped``), its JSON body read
    strictly (``StrictJSONRoute``)."""


router = APIRouter(route_class=ApiRoute, responses=error_responses(400, 401, 403, 413, 422, 503))
# The writes of every cycle come first (start, decide, answer, say): FastAPI tries routes in
# order, twice per request (to find this router, then the route), at about 5 k
# instructions each; the decision was the tenth.


@router.post(
    "/threads",
    dependencies=[scope("agent", "admin")],
    status_code=201,
    openapi_extra=IDEMPOTENCY_KEY,
    response_model=ThreadOut,
    tags=["threads"],
    responses={
        200: {"description": "the thread a retried Idempotency-Key made"},
        **error_responses(409),
    },
)
async def create_thread(
    body: CreateThread,
    request: Request,
    response: Response,
) -> ThreadOut:
    """Start a thread with an agent (200 with the same thread on a retried key)."""
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    await callbacks.check_for(request, body.callback_url)
    got = await _once(
        idempotency_key,
        rt.inbox.message(
            agent=body.agent,
            text=body.text,
            by=_speaker(who, body.user, "user" in body.model_fields_set),
            origin=Origin(channel="api", callback_url=body.callback_url, metadata=body.metadata),
            # A key names its thread, so a retry finds the thread it created.
            thread_id=ids.thread_id_for("api", owned_key(who, idempotency_key))
            if idempotency_key
            else None,
            delivery=_delivery(idempotency_key),
            fingerprint=fingerprint_of(request, body, idempotency_key),
        ),
    )
    if got.duplicate:
        response.status_code = 200
    return ThreadOut.from_state(got.thread)


@router.post(
    "/requests/{request_id}/decision",
    dependencies=[scope("approver", "admin")],
    openapi_extra=IDEMPOTENCY_KEY,
    response_model=RequestOut,
    tags=["requests"],
    responses=error_responses(403, 404, 409),
)
async def decide(
    request_id: str,
    body: DecisionIn,
    request: Request,
) -> RequestOut:
    """Approve or reject; 409 if no longer open, 403 if `by` may not decide."""
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    by = who.decider(body.by)
    done = await _refused_as_read(
        rt,
        who,
        request_id,
        idempotency_key,
        rt.decisions.decide(
            request_id,
            Decision(body.decision),
            api_actor(by),
            reason=body.reason,
            edited_args=body.edited_args,
            seen_hash=body.args_hash,
            delivery=_vote_delivery(who, idempotency_key),
            fingerprint=fingerprint_of(request, _as(body, by), idempotency_key),
        ),
    )
    return RequestOut.from_request(done.thread.id, done.request)


@router.post(
    "/requests/{request_id}/answer",
    dependencies=[scope("approver", "admin")],
    openapi_extra=IDEMPOTENCY_KEY,
    response_model=RequestOut,
    tags=["requests"],
    responses=error_responses(403, 404, 409),
)
async def answer(
    request_id: str,
    body: AnswerIn,
    request: Request,
) -> RequestOut:
    """Answer a question with text, or one of its choices."""
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    text = body.choice if body.choice is not None else body.text
    if text is None:
        raise InvalidInputError("give `text` or `choice`")
    by = who.decider(body.by)
    done = await _refused_as_read(
        rt,
        who,
        request_id,
        idempotency_key,
        rt.decisions.answer(
            request_id,
            text,
            api_actor(by),
            delivery=_vote_delivery(who, idempotency_key),
            fingerprint=fingerprint_of(request, _as(body, by), idempotency_key),
        ),
    )
    return RequestOut.from_request(done.thread.id, done.request)


@router.post(
    "/threads/{thread_id}/messages",
    dependencies=[scope("agent", "admin")],
    openapi_extra=IDEMPOTENCY_KEY,
    response_model=ThreadOut,
    tags=["threads"],
    responses=error_responses(404, 409),
)
async def post_message(
    thread_id: str,
    body: PostMessage,
    request: Request,
) -> ThreadOut:
    """The user speaks again (an agent: in a thread it created)."""
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    if who.scope != "admin":
        who.check_reads(await rt.log.get(thread_id))
    got = await _once(
        idempotency_key,
        rt.inbox.say(
            thread_id,
            body.text,
            _speaker(who, body.user, "user" in body.model_fields_set),
            delivery=_delivery(idempotency_key),
            fingerprint=fingerprint_of(request, body, idempotency_key),
        ),
    )
    return ThreadOut.from_state(got.thread)


@router.get(
    "/threads",
    response_model=Page[ThreadSummary],
    tags=["threads"],
    dependencies=[scope("admin")],
)
async def list_threads(
    request: Request,
    status: Status | None = None,
    agent: str | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[ThreadSummary]:
    """Threads, newest first; filter by status and agent."""
    rt = runtime_of(request)
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


@router.get(
    "/threads/{thread_id}",
    dependencies=[scope("agent", "admin")],
    response_model=ThreadOut,
    tags=["threads"],
    responses=error_responses(404),
)
async def get_thread(request: Request, thread_id: str) -> ThreadOut:
    """A thread: status, open requests and every event (an agent: one it created)."""
    rt, who = runtime_of(request), caller_of(request)
    state = await rt.log.get(thread_id)
    who.check_reads(state)
    return ThreadOut.from_state(state, await rt.log.events(thread_id, version=state.version))


async def _control(rt: Runtime, thread_id: str, action: Control, body: ControlIn) -> ThreadOut:
    state = await rt.inbox.control(thread_id, action, api_actor(body.by), body.reason)
    return ThreadOut.from_state(state)


@router.post(
    "/threads/{thread_id}/pause",
    dependencies=[scope("admin")],
    response_model=ThreadOut,
    tags=["threads"],
    responses=error_responses(404, 409),
)
async def pause(request: Request, thread_id: str, body: ControlIn | None = None) -> ThreadOut:
    """Stop the agent taking further steps; decisions are still recorded."""
    rt = runtime_of(request)
    return await _control(rt, thread_id, "pause", body or ControlIn())


@router.post(
    "/threads/{thread_id}/resume",
    dependencies=[scope("admin")],
    response_model=ThreadOut,
    tags=["threads"],
    responses=error_responses(404, 409),
)
async def resume(request: Request, thread_id: str, body: ControlIn | None = None) -> ThreadOut:
    """Resume a paused (or failed) thread where it stopped."""
    rt = runtime_of(request)
    return await _control(rt, thread_id, "resume", body or ControlIn())


@router.post(
    "/threads/{thread_id}/cancel",
    dependencies=[scope("admin")],
    response_model=ThreadOut,
    tags=["threads"],
    responses=error_responses(404, 409),
)
async def cancel(request: Request, thread_id: str, body: ControlIn | None = None) -> ThreadOut:
    """End the thread; its open requests are closed."""
    rt = runtime_of(request)
    return await _control(rt, thread_id, "cancel", body or ControlIn())


@router.get(
    "/requests",
    response_model=Page[RequestOut],
    tags=["requests"],
    dependencies=[scope("approver", "admin")],
)
async def list_requests(
    request: Request,
    status: Annotated[str, Query(pattern="^open$")] = "open",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[RequestOut]:
    """Open approvals and questions across threads, oldest first.

    An approver token sees those its identity may decide or answer: the page holds
    fewer items, and ``total`` counts every open request.
    """
    rt, who = runtime_of(request), caller_of(request)
    rids, total = await rt.indexes.open_requests(offset=offset, limit=limit)
    items = []
    for rid in rids:
        try:
            req, state = await rt.decisions.find(rid)
        except NotFoundError:
            continue
        if who.may_read(state, req):
            items.append(RequestOut.from_request(state.id, req))
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/requests/{request_id}",
    dependencies=[scope("agent", "approver", "admin")],
    response_model=RequestOut,
    tags=["requests"],
    responses=error_responses(404),
)
async def get_request(request: Request, request_id: str) -> RequestOut:
    """One approval or question, open or closed, with its votes (an agent: one it asked;
    an approver: one it may decide)."""
    rt, who = runtime_of(request), caller_of(request)
    req, state = await rt.decisions.find(request_id)
    who.check_reads(state, req)
    return RequestOut.from_request(state.id, req)


health = APIRouter()


@health.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@health.get("/readyz", tags=["health"], responses=error_responses(503))
async def readyz(request: Request) -> JSONResponse:
    """Redis answers and a worker was seen in the last 15 seconds."""
    rt = runtime_of(request)
    try:
        seen = await last_heartbeat(rt.redis)
    except RedisError as exc:
        return JSONResponse({"error": "not_ready", "detail": f"redis: {exc}"}, status_code=503)
    if seen is None or rt.clock.now() - seen[1] > 15:
        return JSONResponse(
            {"error": "not_ready", "detail": "no worker seen recently"}, status_code=503
        )
    return JSONResponse({"status": "ready", "worker": seen[0]})


def owned_key(who: Caller, key: str) -> str:
    """An Idempotency-Key as the caller's own: an agent's or an approver's keys apart from
    every other caller's (token names hold no ``:``), so its retry never finds what another
    caller made, nor another caller what it made. An admin's are as sent: it acts for
    anyone and reads everything.

    It names the thread a creation makes, and the delivery of a decision or an answer.
    """
    return key if who.scope == "admin" else f"{who.scope}:{who.name}:{key}"


def _as(body: DecisionOrAnswer, by: str) -> DecisionOrAnswer:
    """``body`` naming who it is recorded as, so its fingerprint says so: an approver
    token's call that leaves ``by`` out is the same call as one that names its identity,
    and another identity's call under the same key is another call."""
    return body.model_copy(update={"by": by})


def _speaker(who: Caller, user: str, given: bool) -> Actor:
    """Who speaks in a thread: the named user, or for an agent token the agent itself."""
    if who.scope != "agent":
        return api_actor(user)
    if given and user.strip() != who.name:
        raise ForbiddenError(
            f"token {who.name!r} (scope agent) speaks only as itself; leave out `user`"
        )
    return who.as_agent()


async def _with_status(rt: Runtime, agent: str, status: str, offset: int, limit: int) -> Page_:
    """An agent's threads in one status: its whole index, filtered by each thread's meta."""
    tids, _ = await rt.indexes.threads(agent=agent, offset=0, limit=MAX_SCAN)
    metas = await rt.log.metas(tids)
    found = [t for t, m in zip(tids, metas, strict=True) if m.get("status") == status]
    return found[offset : offset + limit], len(found)
