"""Input is bounded at ingress (invariant 11): refused with a 4xx JSON error, or stored and
readable back; never a 5xx, and a refusal changes nothing in Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.events import Actor, HumanAnswer
from bot.domain.limits import MAX_DEPTH, MAX_JSON, MAX_TEXT
from bot.engine.writes import write
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.scenarios.test_rest import DEPLOY, assert_error, launch, snapshot

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = make_settings(approver_groups={"deployers": ["alice", "bob"], "finance": ["fin"]})
    async with Harness(redis_server.url, settings=settings) as harness:
        yield harness


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep: {"a": {"a": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_deep_metadata_is_refused_and_what_is_accepted_reads_back(
    h: Harness, redis: Redis
) -> None:
    before = await snapshot(redis)
    for depth in (MAX_DEPTH, 254, 256, 900):
        # The body is one level above its metadata.
        r = await h.api.post("/threads", json={**DEPLOY, "metadata": nested(depth)})
        assert_error(r, 400, "bad_request", f"deeper than {MAX_DEPTH} levels")
    assert await snapshot(redis) == before

    r = await h.api.post("/threads", json={**DEPLOY, "metadata": nested(MAX_DEPTH - 1)})
    assert r.status_code == 201, r.text
    got = await h.api.get(f"/threads/{r.json()['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["events"][0]["origin"]["metadata"] == nested(MAX_DEPTH - 1)


async def test_deep_edited_args_are_refused(h: Harness, redis: Redis) -> None:
    _, req = await launch(h)
    before = await snapshot(redis)
    body = {"decision": "approve", "by": "bob", "edited_args": nested(300)}
    r = await h.api.post(f"/requests/{req['id']}/decision", json=body)
    assert_error(r, 400, "bad_request", "deeper than")
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        # Python's json reads these; none of them can be stored as UTF-8 JSON and read back.
        (b'{"agent":"deploy","text":"hi \\ud800"}', "not valid JSON"),
        (b'{"agent":"deploy","text":"hi","user":"\\udfff"}', "not valid JSON"),
        (b'{"agent":"deploy","text":"hi","metadata":{"\\ud800":1}}', "not valid JSON"),
        (b'{"agent":"deploy","text":"hi","metadata":{"n":NaN}}', "not valid JSON"),
        (b'{"agent":"deploy","text":"hi","metadata":{"n":1e400}}', "too large"),
        (b'{"agent":"deploy","text":"hi","metadata":{"n":' + b"9" * 5000 + b"}}", "JSON"),
        (b"[" * 100_000, "deeper than"),
    ],
)
async def test_json_that_cannot_be_stored_is_400(
    h: Harness, redis: Redis, raw: bytes, words: str
) -> None:
    before = await snapshot(redis)
    r = await h.api.post("/threads", content=raw, headers=JSON)
    assert_error(r, 400, "bad_request", words)
    assert await snapshot(redis) == before


async def test_a_surrogate_pair_is_one_character_and_reads_back(h: Harness) -> None:
    raw = b'{"agent":"deploy","text":"deploy api 1.5.0 \\ud83d\\ude80","user":"ann"}'
    r = await h.api.post("/threads", content=raw, headers=JSON)
    assert r.status_code == 201, r.text
    got = (await h.api.get(f"/threads/{r.json()['id']}")).json()
    assert got["events"][1]["text"] == "deploy api 1.5.0 \N{ROCKET}"


@pytest.mark.parametrize("path", ["/threads", "/requests"])
@pytest.mark.parametrize("offset", [2**63 - 1, 2**63, 2**64, -1, 100_001])
async def test_paging_is_bounded(h: Harness, redis: Redis, path: str, offset: int) -> None:
    before = await snapshot(redis)
    r = await h.api.get(path, params={"offset": offset})
    assert_error(r, 422, "invalid_input", "offset")
    r = await h.api.get(path, params={"limit": 2**63})
    assert_error(r, 422, "invalid_input", "limit")
    assert await snapshot(redis) == before


def deep_list(depth: int) -> str:
    """JSON text of a list ``depth`` levels deep: [[ ... ]]."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (deep_list(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
        (deep_list(300), f"nested deeper than {MAX_DEPTH} levels"),
        (deep_list(5_000), f"nested deeper than {MAX_DEPTH} levels"),
        ("[NaN]", "not valid JSON"),
        ("[1e400]", "too large"),
        ('["\\ud800"]', "not valid JSON"),
    ],
)
async def test_a_typed_answer_that_could_not_be_read_back_is_refused(
    h: Harness, redis: Redis, text: str, words: str
) -> None:
    asked = await h.api.post("/questions", json={"question": "Which?", "answer_schema": {}})
    rid = asked.json()["id"]
    before = await snapshot(redis)
    r = await h.api.post(f"/requests/{rid}/answer", json={"text": text, "by": "bob"})
    assert_error(r, 422, "invalid_input", words)
    assert await snapshot(redis) == before
    got = await h.api.get(f"/questions/{rid}")
    assert (got.status_code, got.json()["status"]) == (200, "open")

    r = await h.api.post(f"/requests/{rid}/answer", json={"text": deep_list(MAX_DEPTH)})
    assert r.status_code == 422  # an admin token names who answers; the JSON itself is fine
    r = await h.api.post(
        f"/requests/{rid}/answer", json={"text": deep_list(MAX_DEPTH), "by": "bob"}
    )
    assert r.status_code == 200, r.text
    got = await h.api.get(f"/questions/{rid}")
    assert got.status_code == 200 and got.json()["value"] == json.loads(deep_list(MAX_DEPTH))


async def test_edited_args_over_the_size_of_arguments_are_refused(h: Harness, redis: Redis) -> None:
    _, req = await launch(h)
    before = await snapshot(redis)
    edited = {"service": "api", "version": "x" * MAX_JSON, "environment": "staging"}
    body = {"decision": "approve", "by": "bob", "edited_args": edited}
    r = await h.api.post(f"/requests/{req['id']}/decision", json=body)
    assert_error(r, 422, "invalid_input", f"over {MAX_JSON} bytes of JSON")
    assert await snapshot(redis) == before


async def test_reasons_and_answers_are_bounded_and_the_api_says_so(
    h: Harness, redis: Redis
) -> None:
    tid, req = await launch(h)
    asked = await h.api.post("/questions", json={"question": "Why?"})
    before = await snapshot(redis)
    long = "x" * (MAX_TEXT + 1)
    body = {"decision": "reject", "by": "bob", "reason": long}
    r = await h.api.post(f"/requests/{req['id']}/decision", json=body)
    assert_error(r, 422, "invalid_input", "reason", str(MAX_TEXT))
    r = await h.api.post(f"/requests/{asked.json()['id']}/answer", json={"text": long, "by": "bob"})
    assert_error(r, 422, "invalid_input", "text", str(MAX_TEXT))
    r = await h.api.post(f"/threads/{tid}/pause", json={"reason": long})
    assert_error(r, 422, "invalid_input", "reason", str(MAX_TEXT))
    assert await snapshot(redis) == before

    doc = (await h.http.get("/openapi.json")).json()["components"]["schemas"]
    assert doc["DecisionIn"]["properties"]["reason"]["anyOf"][0]["maxLength"] == MAX_TEXT
    assert doc["AnswerIn"]["properties"]["text"]["anyOf"][0]["maxLength"] == MAX_TEXT

    body = {"decision": "reject", "by": "bob", "reason": "x" * MAX_TEXT}
    r = await h.api.post(f"/requests/{req['id']}/decision", json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [100, 300])
async def test_a_typed_answer_stored_before_answers_were_bounded_still_reads_back(
    h: Harness, depth: int
) -> None:
    asked = await h.api.post("/questions", json={"question": "Which?", "answer_schema": {}})
    rid = asked.json()["id"]
    stored = deep_list(depth)  # what an earlier version accepted and recorded
    answer = HumanAnswer(request_id=rid, text=stored, by=Actor(channel="api", id="bob"))
    await write(h.rt.log, str(ids.thread_of_request(rid)), lambda _: [answer])
    got = await h.api.get(f"/questions/{rid}")
    assert got.status_code == 200, got.text[:200]
    # Its value as it read before; past the JSON reader's 200 levels, the text recorded.
    value = json.loads(stored) if depth < 200 else stored
    assert (got.json()["status"], got.json()["value"]) == ("answered", value)
