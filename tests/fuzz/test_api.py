"""Schemathesis against the app's own OpenAPI document, over real HTTP to the Harness.

Every generated call (valid and invalid by the document) must answer without a
5xx, with a status, content type and body the document declares; a refused call
changes nothing in Redis, and a thread an accepted call created reads back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet

from bot.storage.embedded import EmbeddedRedis
from tests.fuzz import examples
from tests.harness import TOKEN, Harness
from tests.scenarios.test_rest import snapshot

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_SCHEMAS: dict[str, Any] = {}
STATUSES: dict[str, dict[int, int]] = {}


@pytest.fixture(scope="module")
async def h(redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url) as harness:
        await harness.redis.flushall()
        yield harness


def strategy(h: Harness, mode: GenerationMode) -> Any:
    """Calls of every operation in the document the app serves (parsed once)."""
    if mode.value not in _SCHEMAS:
        schema = schemathesis.openapi.from_dict(h.app.openapi())
        _SCHEMAS[mode.value] = schema.as_strategy(generation_mode=mode)
    return _SCHEMAS[mode.value]


def to_request(case: Any) -> dict[str, Any]:
    """The httpx arguments for a case; JSON is ASCII-escaped, so lone surrogates reach the app."""
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    headers["Authorization"] = f"Bearer {TOKEN}"
    kwargs: dict[str, Any] = {
        "method": case.method,
        "url": case.formatted_path,
        "params": case.query or None,
        "headers": headers,
    }
    if not isinstance(case.body, NotSet):
        headers.setdefault("Content-Type", case.media_type or "application/json")
        kwargs["content"] = json.dumps(case.body).encode()
    return kwargs


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@examples(150)
@given(data=st.data())
async def test_generated_calls_never_5xx_and_refusals_change_nothing(
    h: Harness, mode: GenerationMode, data: st.DataObject
) -> None:
    case = data.draw(strategy(h, mode))
    if isinstance(case.body, dict) and "agent" in case.body and data.draw(st.booleans()):
        case.body["agent"] = "deploy"  # a real agent, so creations get past the name check
    try:
        request = to_request(case)
    except (TypeError, ValueError):
        return  # not expressible as an HTTP request
    before = await snapshot(h.redis)
    try:
        r = await h.http.request(**request)
    except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
        return  # httpx will not send it (a header not latin-1, a broken URL)
    seen = STATUSES.setdefault(mode.value, {})
    seen[r.status_code] = seen.get(r.status_code, 0) + 1
    where = (case.method, case.formatted_path, case.query, r.status_code, r.text[:300])
    # /readyz answers 503 by design here: no worker runs (it would change Redis under us).
    not_ready = (case.formatted_path, r.status_code) == ("/readyz", 503)
    assert r.status_code < 500 or not_ready, where
    if r.status_code >= 400:
        assert await snapshot(h.redis) == before, where
    elif case.method == "POST" and "id" in r.json():
        # What was accepted reads back: a thread by its id, a request at its own route.
        made = r.json()["id"]
        route = case.path if case.path in ("/approvals", "/questions") else "/threads"
        got = await h.api.get(f"{route}/{made}")
        assert got.status_code == 200, got.text
    case.validate_response(r, checks=CHECKS[1:] if not_ready else CHECKS)


def test_the_run_reached_the_api() -> None:
    """The counts of the run above: generated calls and the statuses they got."""
    for mode, seen in STATUSES.items():
        print(f"schemathesis {mode}: {sum(seen.values())} calls, statuses {sorted(seen.items())}")
    assert all(sum(seen.values()) > 50 for seen in STATUSES.values()), STATUSES
