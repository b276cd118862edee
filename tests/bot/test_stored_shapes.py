"""What a thread leaves in Redis, in the shape this version writes and in the shapes written
before: another process reads it back the same, and everything stored before still loads,
verifies, lists and resumes."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.audit import anchor, to_link
from bot.domain.events import EVENT, ApprovalRequested, Event, stored_id
from bot.domain.hashing import chain_hash
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes
from tests.harness import Harness
from tests.harness import test_settings as settings_with
from tests.test_cli import DEPLOY, thread_status


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = settings_with(approver_groups={"deployers": ["bob"], "finance": ["bob"]})
    async with Harness(redis_server.url, settings=settings, background_worker=True) as harness:
        yield harness


async def suspended(h: Harness) -> tuple[str, str]:
    """A new deploy thread, once it waits for approval: its id and its request's."""
    tid = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
    thread = await thread_status(h, tid, "awaiting_approval")
    return tid, thread["open_requests"][0]["id"]


async def test_another_process_reads_a_thread_as_its_writer_holds_it(h: Harness) -> None:
    tid, rid = await suspended(h)
    stored = await h.rt.log.stored(tid)
    # Nothing repeated: no version, no id, short types and links, the request id without
    # its thread, the call's arguments, their hash and the requester once.
    assert not any('"v":' in raw or '"prev"' in raw for raw in stored)
    assert not any("id" in json.loads(raw) for raw in stored)
    (asked,) = [raw for raw in stored if raw.startswith('{"type":"ask",')]
    assert '"request_id":".' in asked
    assert all(f'"{left_out}"' not in asked for left_out in ("args", "args_hash", "requester"))
    # The first event links to its thread; each has the id its hash makes.
    assert json.loads(stored[0])["p"] == to_link(anchor(tid))
    events = await h.rt.log.events(tid)
    assert [e.id for e in events] == [stored_id(chain_hash(raw)) for raw in stored]
    async with Harness(h.redis_url, settings=h.settings) as other:
        assert await other.rt.log.events(tid) == events
        chain = (await other.api.get(f"/threads/{tid}/audit")).json()
        assert chain["intact"] and chain["events"] == len(stored)
        (listed,) = (await other.api.get("/requests")).json()["items"]
        assert listed["id"] == rid


async def test_the_versions_before_cannot_misread_a_new_event(h: Harness) -> None:
    # They parsed events into the same models, which know each type by its whole name: a
    # type stored under its short code is none they know, so they fail the step with a
    # StoreError and leave the queue entry to a worker of this version, instead of giving
    # an event stored without its id a random one.
    tid, _ = await suspended(h)
    for raw in await h.rt.log.stored(tid):
        with pytest.raises(ValidationError, match="does not match any of the expected tags"):
            EVENT.validate_json(raw)


def to_old_shape(events: list[Event]) -> list[str]:
    """The events as the version before stored them: ``v`` written out, ids of 20 hex
    digits, every field present, each linked to the 128-bit hash of the one before."""
    raws: list[str] = []
    for new in events:
        event = new.model_copy(
            update={
                "id": f"ev_{os.urandom(10).hex()}",
                "prev": chain_hash(raws[-1]) if raws else None,
            }
        )
        body = event.model_dump_json(exclude_defaults=True)
        raws.append(f'{{"type":"{event.type}","v":1,' + body[1:])
    return raws


async def test_a_thread_stored_by_the_version_before_still_reads_verifies_lists_and_resumes(
    h: Harness,
) -> None:
    tid, rid = await suspended(h)
    events = await h.rt.log.events(tid)
    (asked,) = [e for e in events if isinstance(e, ApprovalRequested)]
    shard = keys.shard_of(tid)
    old = to_old_shape(events)
    summary = {
        "agent": "deploy",
        "kind": "approval",
        "title": "deploy",
        "urgency": "high",
        "channel": "api",
        "approvers": ["bob"],
        "expires_at": asked.expires_at,
        "opened_at": asked.at,
        "requester": "ann",
        "own": ["api:ann"],
    }
    created = events[0].at
    pipe = h.redis.pipeline(transaction=True)
    pipe.delete(keys.log(tid), keys.agents(shard))
    pipe.rpush(keys.log(tid), *old)
    pipe.zadd(keys.threads(shard), {tid: created})  # the index of every thread, as before
    meta = {"version": len(old), "status": "awaiting_approval", "agent": "deploy"}
    meta |= {"updated": events[-1].at, "created": created, "cursor": len(old)}
    pipe.hset(keys.meta(tid), mapping=meta)
    pipe.hset(keys.waiting(shard), rid, json.dumps(summary))
    await pipe.execute()
    assert ids.thread_of_request(rid) == tid

    async with Harness(h.redis_url, settings=h.settings, background_worker=True) as other:
        assert [e.id for e in await other.rt.log.events(tid)] == [
            json.loads(raw)["id"] for raw in old
        ]
        assert (await other.api.get(f"/threads/{tid}/audit")).json()["intact"]
        # Listed as all threads were: moved over from the index of before, which is gone.
        listed = (await other.api.get("/threads")).json()
        assert [t["id"] for t in listed["items"]] == [tid] and listed["total"] == 1
        assert not await other.redis.exists(keys.threads(shard))
        (listed,) = (await other.api.get("/threads")).json()["items"]
        assert (listed["id"], listed["status"], listed["version"]) == (
            tid,
            "awaiting_approval",
            len(old),
        )
        (waiting,) = await Indexes(other.redis).waiting()
        assert (waiting.request, waiting.opened_at, waiting.requester) == (rid, asked.at, "ann")

        vote = {"decision": "approve", "by": "bob"}
        r = await other.api.post(f"/requests/{rid}/decision", json=vote)
        assert r.status_code == 200, r.text
        await thread_status(other, tid, "done")
        stored = await other.rt.log.stored(tid)
        assert stored[: len(old)] == old and len(stored) > len(old)
        chain = (await other.api.get(f"/threads/{tid}/audit")).json()
        assert chain["intact"] and chain["events"] == len(stored)
        # Its meta hash went with its first append: the indexes say the same.
        assert not await other.redis.exists(keys.meta(tid))
        (listed,) = (await other.api.get("/threads?agent=deploy")).json()["items"]
        assert (listed["status"], listed["version"]) == ("done", len(stored))
        audit = (await other.api.get("/audit")).json()["items"]
        assert [(r["thread"], r["request"], r["outcome"]) for r in audit] == [(tid, rid, "approve")]


async def test_how_far_delivery_got_is_kept_only_while_it_is_behind(h: Harness) -> None:
    tid, _ = await suspended(h)
    log, shard = h.rt.log, keys.shard_of(tid)
    version = len(await log.stored(tid))
    # Suspended with everything handed to the channels: no cursor is kept at all.
    assert await h.redis.hget(keys.cursors(shard), tid) is None
    taken = await log.take(tid, "", "test", 10_000)
    assert taken is not None and taken.lease.delivered == version
    # Let go with two events not handed over: the cursor is kept, and read back.
    taken.lease.delivered = version - 2
    assert await log.release(taken.lease, version, None)
    assert await h.redis.hget(keys.cursors(shard), tid) == str(version - 2)
    again = await log.take(tid, "", "test", 10_000)
    assert again is not None and again.lease.delivered == version - 2
    # A meta hash of before holds the cursor until the thread's next append removes it.
    await h.redis.hdel(keys.cursors(shard), tid)
    await h.redis.hset(keys.meta(tid), mapping={"version": version, "cursor": 1})
    again.lease.delivered = 3
    assert await log.release(again.lease, version, None)
    assert await h.redis.hget(keys.meta(tid), "cursor") == "3"
    last = await log.take(tid, "", "test", 10_000)
    assert last is not None and last.lease.delivered == 3
