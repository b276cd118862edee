"""The OpenAPI document describes what the API does: statuses, error bodies, the bearer scheme."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import pytest
from pydantic import TypeAdapter
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from bot.web.schemas import ErrorOut
from tests.harness import Harness
from tests.scenarios.test_rest import DEPLOY

ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url) as harness:
        yield harness


async def document(h: Harness) -> dict[str, Any]:
    r = await h.http.get("/openapi.json")
    assert r.status_code == 200
    found: dict[str, Any] = r.json()
    return found


async def test_every_api_route_declares_the_scopes_its_bearer_token_needs(h: Harness) -> None:
    doc = await document(h)
    schemes = doc["components"]["securitySchemes"]
    assert schemes == {"HTTPBearer": {"type": "http", "scheme": "bearer", "description": ANY}}
    assert "scope" in schemes["HTTPBearer"]["description"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            # Everything but health checks and channels' own signed routes needs a token.
            api = not path.startswith(("/healthz", "/readyz", "/slack", "/webhooks", "/email"))
            if not api:
                assert "security" not in op, (method, path)
                continue
            [requirement] = op["security"]
            scopes = requirement["HTTPBearer"]
            assert "admin" in scopes, (method, path)
            assert set(scopes) <= {"admin", "agent", "approver"}, (method, path)
    decide = doc["paths"]["/requests/{request_id}/decision"]["post"]["security"]
    assert decide == [{"HTTPBearer": ["approver", "admin"]}]
    create = doc["paths"]["/approvals"]["post"]["security"]
    assert create == [{"HTTPBearer": ["agent", "admin"]}]


async def test_every_api_route_declares_its_error_statuses_with_the_error_body(
    h: Harness,
) -> None:
    doc = await document(h)
    expected = {
        ("post", "/threads"): {400, 401, 403, 409, 413, 422, 503},
        ("get", "/threads"): {400, 401, 403, 413, 422, 503},
        ("get", "/threads/{thread_id}"): {400, 401, 403, 404, 413, 422, 503},
        ("post", "/threads/{thread_id}/messages"): {400, 401, 403, 404, 409, 413, 422, 503},
        ("post", "/threads/{thread_id}/cancel"): {400, 401, 403, 404, 409, 413, 422, 503},
        ("post", "/requests/{request_id}/decision"): {400, 401, 403, 404, 409, 413, 422, 503},
        ("post", "/requests/{request_id}/answer"): {400, 401, 403, 404, 409, 413, 422, 503},
        ("post", "/webhooks/{agent}"): {400, 401, 409, 413, 422, 503},
    }
    for (method, path), statuses in expected.items():
        responses = doc["paths"][path][method]["responses"]
        errors = {int(s) for s in responses if int(s) >= 400}
        assert errors == statuses, (method, path, errors)
        for status in statuses:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_error_answers_match_the_declared_body(h: Harness) -> None:
    check = TypeAdapter(ErrorOut)
    answers = [
        await h.http.post("/threads", json=DEPLOY),  # 401
        await h.api.post("/threads", json={**DEPLOY, "colour": "red"}),  # 422
        await h.api.post("/threads", content=b"{", headers={"Content-Type": "application/json"}),
        await h.api.get("/threads/th_nope"),  # 404
        await h.api.get("/requests", params={"offset": 2**63}),  # 422
    ]
    assert [a.status_code for a in answers] == [401, 422, 400, 404, 422]
    for answer in answers:
        body = check.validate_python(answer.json())
        assert body.error and body.detail
    fields = answers[1].json()["errors"]
    assert fields == [{"field": "colour", "error": "Extra inputs are not permitted"}]


async def test_405_keeps_the_allow_header(h: Harness) -> None:
    r = await h.api.delete("/threads")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "GET, POST"
    assert r.json()["error"] == "method_not_allowed"
