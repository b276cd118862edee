"""Input is bounded at ingress (invariant 11): refused with a 4xx JSON error, or stored and
readable back; never a 5xx, and a refusal changes nothing in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from bot.web.bodies import MAX_DEPTH
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
