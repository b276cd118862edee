"""No route waits on a thread pool: FastAPI runs a plain ``def`` endpoint or dependency in
one, which cost the web process about 0.25 ms of CPU per request (``bench.web_cpu``)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url) as harness:
        yield harness


def _blocking(dependant: Dependant, where: str) -> list[str]:
    found = []
    call: Any = dependant.call
    if call is not None and not inspect.isclass(call):
        fn = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
        if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            found.append(f"{where}: {getattr(call, '__qualname__', call)!r}")
    for sub in dependant.dependencies:
        found.extend(_blocking(sub, where))
    return found


def _api_routes(routes: list[Any]) -> tuple[list[APIRoute], list[Any]]:
    """Every API route, and every router-wide dependency, through included routers."""
    found: list[APIRoute] = []
    shared: list[Any] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            shared.extend(router.dependencies)
            more, deeper = _api_routes(router.routes)
            found.extend(more)
            shared.extend(deeper)
    return found, shared


async def test_no_endpoint_or_dependency_runs_in_a_thread_pool(h: Harness) -> None:
    routes, shared = _api_routes(h.app.routes)
    assert len(routes) > 30  # the API's, the MCP server's and the channels' routes
    blocking = [b for r in routes for b in _blocking(r.dependant, f"{sorted(r.methods)} {r.path}")]
    blocking += [b for d in shared for b in _blocking(Dependant(call=d.dependency), "a router's")]
    assert blocking == []
