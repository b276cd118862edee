"""The summaries of open requests the inbox lists: kept with every append, read by any
process, and gone when the request closes or its thread is forgotten."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, replace

import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.waiting import Waiting
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes, from_stored, to_stored
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


async def test_a_summary_built_late_never_replaces_a_newer_one_nor_revives_a_closed_request(
    h: Harness, redis: Redis
) -> None:
    rid = await ask(h, ["bob", "carol"], min_approvals=2)
    tid = str(ids.thread_of_request(rid))
    before = await h.rt.log.load(tid)  # a listing read the thread, then ...
    await redis.hdel(keys.waiting(keys.shard_of(tid)), rid)
    vote = {"decision": "approve", "by": "bob"}
    assert (await h.api.post(f"/requests/{rid}/decision", json=vote)).status_code == 200
    assert not await h.rt.indexes.summarise(before, rid)  # ... the vote stored a newer one
    (listed,) = await h.rt.waiting.waiting()
    assert listed.approved == 1

    vote = {"decision": "approve", "by": "carol"}
    assert (await h.api.post(f"/requests/{rid}/decision", json=vote)).status_code == 200
    assert not await h.rt.indexes.summarise(before, rid)  # closed: not listed again
    assert await h.rt.waiting.waiting() == []


async def test_a_process_lists_what_waits_as_redis_has_it_after_redis_lost_writes(
    h: Harness, redis: Redis
) -> None:
    other = Indexes(redis)  # another web process, with its own copy
    first = await ask(h, ["bob"])
    shard = keys.shard_of(str(ids.thread_of_request(first)))
    assert [w.request for w in await other.waiting()] == [first]
    shard_keys = [keys.waiting(shard), keys.open_requests(shard), keys.waiting_version(shard)]
    saved = [await redis.dump(k) for k in shard_keys]
    lost = await ask_in(h, shard)
    assert {w.request for w in await other.waiting()} >= {first, lost}
    # Redis loses the last writes (restarted within its fsync window, or a failover to a
    # replica that was behind): the shard is as it was before ``lost``.
    for key, value in zip(shard_keys, saved, strict=True):
        await redis.restore(key, 0, value, replace=True)
    then = await ask_in(h, shard)  # as many changes again as were lost
    listed = {w.request for w in await other.waiting()}
    assert first in listed and then in listed and lost not in listed


async def ask_in(h: Harness, shard: int) -> str:
    """A request whose thread lives in ``shard`` (others are asked on the way)."""
    while True:
        rid = await ask(h, ["bob"])
        if keys.shard_of(str(ids.thread_of_request(rid))) == shard:
            return rid


def test_a_summary_is_stored_lean_and_reads_back_whole() -> None:
    item = Waiting(
        request="th_0123456789abcdef0123.r0a1b2c3d",
        thread="th_0123456789abcdef0123",
        agent="deploy",
        kind="approval",
        title="deploy",
        urgency="normal",
        channel="api",
        approvers=["bob"],
        needed=1,
        approved=0,
        expires_at=None,
        opened_at=1764476908.5,
        requester="ann",
        own=["api:ann"],
    )
    stored = to_stored(item)
    # Its fields in a fixed order, without the request id, when it was opened, the thread
    # the request id names, the requester who is in own, and what is usual at the end.
    assert json.loads(stored) == ["deploy", "deploy", "normal", "api", ["bob"], None, ["api:ann"]]
    # When it was opened is its score in the open index.
    assert from_stored(item.request, stored, opened_at=item.opened_at) == item
    # A requester who may approve their own request is kept.
    theirs = replace(item, own=[], requester="Ann Example")
    assert from_stored(item.request, to_stored(theirs), opened_at=item.opened_at) == theirs
    # Summaries stored whole, as the first ones were, or as objects without the usual
    # values, still read.
    whole = json.dumps(asdict(item))
    assert from_stored(item.request, whole, opened_at=0.0) == item
    lean = {k: v for k, v in asdict(item).items() if k not in ("request", "thread", "approved")}
    assert from_stored(item.request, json.dumps(lean), opened_at=0.0) == item
