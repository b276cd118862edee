"""The FastAPI app: routes, authentication, body limit and the one error mapping.

The web process never runs the agent (invariant 5): it verifies, records,
enqueues and answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Route, compile_path
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.domain.errors import ConfigError, GreenlightError
from bot.engine.ports import SignInMail
from bot.runtime import Runtime
from bot.storage.tokens import Tokens
from bot.web import (
    approvals,
    archive,
    audit,
    history,
    inbox,
    mcp,
    signin_email,
    signin_oidc,
    tokens,
)
from bot.web.api import health, router
from bot.web.errors import error_body, status_of
from bot.web.live import Live
from bot.web.pages import STATIC, is_page, refused_page
from bot.web.scopes import BEARER, BEARER_SCHEME, scopes_of
from bot.web.session import COOKIE, signed_in
from bot.web.signin import SignInConfig
from bot.web.signin import router as signin_router
from bot.web.telemetry import NO_NATIVE_TELEMETRY, Traced, metrics_router, route_of

log = logging.getLogger(__name__)


def create_app(
    runtime: Runtime,
    *,
    api_token: str | None,
    max_body_bytes: int = 1_000_000,
    refuse_private_callbacks: bool = False,
    sign_callbacks: bool = False,
    mcp_wait: float = mcp.MCP_WAIT,
    signin: SignInConfig | None = None,
) -> FastAPI:
    """Build the app around a ready runtime.

    The runtime's channels add their own routes (authenticated by their own
    signatures rather than the API token) and their own body limits.

    Args:
        runtime: the wired collaborators.
        api_token: the configured admin token (``API_TOKEN``); tokens made with
            ``greenlight tokens create`` are found in Redis.
        max_body_bytes: larger request bodies get a 413, unless a channel's
            route says otherwise.
        refuse_private_callbacks: refuse a ``callback_url`` whose host is not public.
        sign_callbacks: callbacks are signed (``WEBHOOK_SECRET`` is set); if not, every
            ``callback_url`` is refused.
        mcp_wait: the longest an MCP tool waits for people before answering that the
            request is still open (``bot.web.mcp``).
        signin: how people sign in to the pages (``SignInConfig.from_settings``); None
            (no ``SESSION_SECRET``): no sign-in and no page is mounted.
    """
    # /docs and /redoc from files the app serves: they work with no internet access.
    app = FastAPIOffline(
        title="Greenlight",
        summary="Human-in-the-loop approvals for LLM agents.",
        version="0.1.0",
        telemetry=NO_NATIVE_TELEMETRY,
    )
    docs = list(app.router.routes)  # /openapi.json, /docs, /redoc and the files they load
    app.state.runtime = runtime
    app.state.refuse_private_callbacks = refuse_private_callbacks
    app.state.sign_callbacks = sign_callbacks
    app.state.mcp_wait = mcp_wait

    app.state.api_token = api_token
    app.state.tokens = Tokens(runtime.redis)

    # Each API route declares the token scopes it takes (``bot.web.scopes``); health
    # checks take none, and channels sign their own traffic.
    protected = [router, audit.router, archive.router, approvals.router, tokens.router, mcp.router]
    protected.append(metrics_router())
    _check_scoped(protected)  # fail closed: an API route without scopes would be public
    _describe_bearer(app)
    channels = [c.router for c in runtime.channels if c.router is not None]
    public = [*channels, health]
    pages = _pages(app, runtime, signin)
    # Channels first, health checks last: FastAPI tries routes in order, and trying the
    # API's before POST /slack/events cost 57-90 µs of CPU per Slack event (13 first);
    # each API request tries the channels' 1-3 routes first, about 10 k instructions each.
    # A health check, a few a minute, tries every route before its own.
    for routes in [*channels, *protected, health, *pages]:
        app.include_router(routes)
    # The docs' routes were added first, with the app: every API request tried those five
    # (about 5 k instructions each) before its own. Moved last: no other path matches theirs.
    del app.router.routes[: len(docs)]
    app.router.routes.extend(docs)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.methods_by_path = _methods_by_path([*protected, *public, *pages])
    _add_error_handlers(app)
    app.add_middleware(Unexpected)  # innermost: what no handler answered
    per_path = {p: n for c in runtime.channels for p, n in c.body_limits.items()}
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, per_path=per_path)
    if signin is not None:
        s = signin.sessions
        app.add_middleware(
            SessionsOnPages,
            pages=[pattern for pattern, _ in _methods_by_path(pages)],
            secret_key=s.secret,
            session_cookie=COOKIE,
            max_age=int(s.max_age),
            same_site="lax",
            https_only=s.https,
        )
    app.add_middleware(Traced)  # outermost: refused bodies are traced too
    return app


def _pages(app: FastAPI, runtime: Runtime, signin: SignInConfig | None) -> list[APIRouter]:
    """The page routers (sign-in, the inbox), or none without ``SESSION_SECRET``."""
    app.state.signin = signin
    app.state.sessions = signin.sessions if signin else None
    if signin is None:
        log.warning("SESSION_SECRET is not set: web sign-in and the pages are off")
        return []
    app.state.live = Live(runtime.audit, runtime.indexes)  # /inbox/events
    mails = [c for c in runtime.channels if isinstance(c, SignInMail)]
    app.state.signin_mail = mails[0] if mails else None
    app.state.oidc_client = signin_oidc.to_client(signin.oidc) if signin.oidc else None
    # Page routers (the inbox's too) go here: each route depends on signed_in.
    pages = [signin_router, signin_email.router, signin_oidc.router, inbox.router, history.router]
    _check_signed_in(pages)  # fail closed: a page without sign-in would be public
    return pages


RETRY_AFTER = 2
"""Seconds a client should wait when Redis is unreachable (restarting, loading its AOF)."""


def _where(request: Request) -> str:
    """The request's route as logged: its template, never the raw path, which may be a
    credential (an email decision link's path is its token)."""
    return route_of(request.scope) or "(no route)"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GreenlightError)
    async def greenlight(request: Request, exc: GreenlightError) -> Response:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, _where(request), exc.message)
        elif is_page(request):
            return await refused_page(request, status, exc.message)
        return JSONResponse(
            error_body(exc.code, exc.message, **_jsonable(exc.detail)), status_code=status
        )

    def redis_failed(
        what: str, level: int, detail: str
    ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        """A handler of a Redis failure: one line at ``level`` (no traceback), and a JSON
        503 with ``Retry-After``, which clients retry."""

        async def handler(request: Request, exc: Exception) -> JSONResponse:
            log.log(level, "%s %s: Redis %s: %s", request.method, _where(request), what, exc)
            return JSONResponse(
                error_body("unavailable", detail),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )

        return handler

    # Not shortly over: at ERROR, for whoever runs it.
    full = redis_failed(
        "is out of memory", logging.ERROR, "Redis is out of memory; try again later"
    )
    app.add_exception_handler(OutOfMemoryError, full)
    # Expected while Redis restarts.
    unavailable = redis_failed(
        "unavailable", logging.WARNING, "Redis is unavailable; try again shortly"
    )

    # BusyLoadingError (Redis is loading its AOF) is a ConnectionError. A failover answers
    # too, for the seconds it takes: READONLY (the server is a replica now), CLUSTERDOWN
    # and MASTERDOWN (a ClusterDownError), TRYAGAIN (a slot moving).
    for unreachable in (
        RedisConnectionError,
        RedisTimeoutError,
        ReadOnlyError,
        ClusterDownError,
        TryAgainError,
    ):
        app.add_exception_handler(unreachable, unavailable)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("bad_request", "the body is not valid JSON"), 400)
        fields = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "error": e["msg"]}
            for e in errors
        ]
        detail = "; ".join(f"{f['field']}: {f['error']}" for f in fields)
        if is_page(request):
            return await refused_page(request, 422, detail)
        return JSONResponse(error_body("invalid_input", detail, errors=fields), 422)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's vague "error parsing"
            detail = f"the body is not valid UTF-8 (bad byte at offset {exc.__cause__.start})"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only.
            headers["Allow"] = ", ".join(_allowed(request))
        if 400 <= exc.status_code < 500 and is_page(request):
            page = await refused_page(request, exc.status_code, detail)
            page.headers.update(headers)
            return page
        return JSONResponse(error_body(code, detail), exc.status_code, headers=headers)


_HTTP_CODES = {
    303: "see_other",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def _check_scoped(routers: list[APIRouter]) -> None:
    """Refuse to build an app with an API route that declares no scope (``bot.web.scopes``)."""
    for r in routers:
        for route in r.routes:
            if not isinstance(route, APIRoute):
                continue
            if not scopes_of(route):
                raise ConfigError(
                    f"route {sorted(route.methods or ())} {route.path} declares no token scope:"
                    ' give it dependencies=[scope("admin", ...)] on a router whose'
                    " route_class is Scoped"
                )


def _describe_bearer(app: FastAPI) -> None:
    """List the bearer scheme in the OpenAPI document's components.

    Each ``Scoped`` route names it in its operation's ``security``; FastAPI lists only
    the schemes of dependencies it solves, and the scope check is not one
    (``bot.web.scopes.Scoped``).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        doc.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = BEARER_SCHEME
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


PUBLIC_PAGES = "/signin"
"""The page path, and those under it, anyone may open: the ways to sign in."""


def _check_signed_in(routers: list[APIRouter]) -> None:
    """Refuse to build an app with a page route that does not depend on ``signed_in``."""
    for r in routers:
        for route in r.routes:
            if not isinstance(route, APIRoute):
                continue
            if route.path == PUBLIC_PAGES or route.path.startswith(f"{PUBLIC_PAGES}/"):
                continue
            if not any(_depends_on(d, signed_in) for d in route.dependant.dependencies):
                raise ConfigError(
                    f"page {sorted(route.methods or ())} {route.path} does not depend on"
                    " signed_in: give it a Viewer = Depends(signed_in) parameter"
                )


def _depends_on(dependant: Any, call: Any) -> bool:
    return dependant.call is call or any(_depends_on(d, call) for d in dependant.dependencies)


def _methods_by_path(routers: list[APIRouter]) -> list[tuple[re.Pattern[str], set[str]]]:
    """Each route's path pattern and methods, for the Allow header of a 405."""
    return [
        (compile_path(route.path)[0], set(route.methods or ()))
        for r in routers
        for route in r.routes
        if isinstance(route, Route | APIRoute)
    ]


def _allowed(request: Request) -> list[str]:
    """Every method some route answers on this request's path."""
    methods: set[str] = set()
    for pattern, allowed in request.app.state.methods_by_path:
        if pattern.match(request.url.path):
            methods |= allowed
    return sorted(methods)


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if isinstance(v, str | int | float | bool | list)}


class SessionsOnPages:
    """Starlette's ``SessionMiddleware`` on the pages' paths only.

    Only pages read the session cookie; API routes (bearer tokens) and channels
    (their own signatures) skip its cookie parsing and never answer with a cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        pages: list[re.Pattern[str]],
        *,
        secret_key: str,
        session_cookie: str,
        max_age: int,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
    ) -> None:
        self.app = app
        self.sessions = SessionMiddleware(
            app,
            secret_key=secret_key,
            session_cookie=session_cookie,
            max_age=max_age,
            same_site=same_site,
            https_only=https_only,
        )
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(p.match(scope["path"]) for p in self.pages):
            await self.sessions(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class BodyLimit:
    """Answers 413 for bodies over ``max_bytes``, declared or streamed."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        body = JSONResponse(error_body("payload_too_large", f"the body is over {limit} bytes"), 413)
        await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
        await send({"type": "http.response.body", "body": body.body})


class Unexpected:
    """Answers an exception no handler answered as every other error, in JSON (a 500),
    and logs it once, with its traceback: Starlette's answer is a plain-text page, and it
    raises the exception on to the server, which logs its traceback a second time. One
    raised after the answer began is left to the server (the client sees it cut)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started:
                raise
            log.exception("%s %s failed", scope["method"], route_of(scope) or "(no route)")
            body = error_body("internal_error", "something failed here; it was logged")
            await JSONResponse(body, status_code=500)(scope, receive, send)


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI lets it through while reading a body instead of a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the body is over {max_bytes} bytes")
