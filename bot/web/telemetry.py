"""Ingress telemetry: a span per HTTP request, and the bearer-protected ``/metrics``.

``Traced`` starts each request's trace (continuing a caller's ``traceparent``
if it sends one) and names the thread or request its path is about, so log
lines and spans carry the ids from the first line on. No header, path, query
string or body is recorded, only the route's template: tokens and signatures
travel there (an email decision link's path is its token).
"""

from __future__ import annotations

import contextlib
import re
import time

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.domain.errors import ForbiddenError, RefusedError
from bot.engine import metrics, tracing
from bot.runtime import Runtime
from bot.storage.tokens import Tokens
from bot.web.scopes import Scoped, scope

NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own spans are off: they record the raw path, and an email decision link's
path is its token. ``Traced`` records the route template instead."""

_IDS = re.compile(r"/(th_[0-9a-f]{20})(\.r[0-9a-f]{8})?(?:/|$)")


class Traced:
    """ASGI middleware: one server span per HTTP request, the ids bound while it runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        carrier = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATED}
        # Without a caller's trace the span's parent is this task's (empty) context, and
        # without an SDK there is no span to make (``tracing.span`` skips it).
        parent = propagate.extract(carrier) if carrier else None
        thread, request = _ids_in(path)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with (
            tracing.span(
                method,  # named for its route once routing has found it
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method},
            ) as span,
            # A path naming no thread leaves the ids as this request's task found them: unset.
            tracing.bound(thread=thread, request=request) if thread else _UNBOUND,
        ):
            try:
                await self.app(scope, receive, sending)
            finally:
                route = route_of(scope)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                label = route or "unmatched"  # never the raw path: unbounded, and may be a token
                metrics.of(metrics.HTTP_REQUESTS, method, label, str(status)).inc()
                metrics.of(metrics.HTTP_LATENCY, method, label).observe(
                    time.perf_counter() - started
                )


_UNBOUND = contextlib.nullcontext()


def route_of(scope: Scope) -> str | None:
    """The template of the route that answered (``/threads/{thread_id}``); None if none did.

    Routing has run: FastAPI names its own routes in ``route``; a plain route (Slack's)
    left its ``endpoint`` and ``path_params``, from which the template is rebuilt; a
    mount (``/static``) left its prefix in ``root_path``.
    """
    path: str | None = getattr(scope.get("route"), "path", None)
    if path:
        return path
    if "endpoint" not in scope:
        return None
    root: str = scope.get("root_path", "")
    mount = root[len(scope.get("app_root_path", "")) :]
    if mount:  # a mount (the static files) answered: its prefix, never the file asked for
        return mount + "/{path}"
    path = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


_PROPAGATED = (b"traceparent", b"tracestate")
"""The only headers read: a caller's trace (ASGI gives header names in lower case)."""


def _ids_in(path: str) -> tuple[str | None, str | None]:
    """The thread and the request a path names (``/threads/th_…``, ``/requests/th_….r…``)."""
    found = _IDS.search(path)
    if found is None:
        return None, None
    thread, suffix = found.group(1), found.group(2)
    return thread, thread + suffix if suffix else None


def metrics_router() -> APIRouter:
    """``GET /metrics`` in Prometheus' text format, for an admin token.

    The shared gauges (open requests, queue) are read from Redis on each scrape.
    """
    router = APIRouter(route_class=Scoped, dependencies=[scope("admin")])

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        await metrics.read_shared(rt.waiting, rt.redis, rt.agents)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_metrics_app(runtime: Runtime, *, api_token: str | None) -> FastAPI:
    """An app with only ``/metrics``, for ``METRICS_PORT`` (workers have no other server)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_NATIVE_TELEMETRY)
    app.state.runtime = runtime
    app.state.api_token = api_token
    app.state.tokens = Tokens(runtime.redis)
    app.include_router(metrics_router())

    @app.exception_handler(RefusedError)
    async def refused(request: Request, exc: RefusedError) -> JSONResponse:
        status = 403 if isinstance(exc, ForbiddenError) else 401
        return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=status)

    return app
