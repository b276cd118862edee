"""The summaries of open requests the inbox lists: kept with every append, read by any
process, and gone when the request closes or its thread is forgotten."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes
from tests.harness import Harness


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url) as harness:
        yield harness


async def ask(h: Harness, approvers: list[str], min_approvals: int = 1) -> str:
    body = {
        "agent": "billing",
        "tool": "refund",
        "arguments": {"order": "A-1"},
        "summary": "charged twice",
        "requester": "ann",
        "policy": {"approvers": approvers, "min_approvals": min_approvals, "expires_in": 600},
    }
    r = await h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


async def test_an_open_request_is_listed_until_decided_in_every_process(
    h: Harness, redis: Redis
) -> None:
    other = Indexes(redis)  # another web process, with its own copy
    rid = await ask(h, ["bob", "carol"], min_approvals=2)
    (listed,) = await other.waiting()
    assert (listed.request, listed.agent, listed.tool, listed.approvers) == (
        rid,
        "billing",
        "refund",
        ["bob", "carol"],
    )
    assert (listed.approved, listed.needed, listed.requester) == (0, 2, "ann")

    vote = {"decision": "approve", "by": "bob"}
    assert (await h.api.post(f"/requests/{rid}/decision", json=vote)).status_code == 200
    (listed,) = await other.waiting()
    assert listed.approved == 1  # a vote changes the summary: N of M

    second = await ask(h, ["bob"])
    vote = {"decision": "approve", "by": "carol"}
    assert (await h.api.post(f"/requests/{rid}/decision", json=vote)).status_code == 200
    assert [w.request for w in await other.waiting()] == [second]
    assert [w.request for w in await h.rt.indexes.waiting()] == [second]
