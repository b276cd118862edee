"""Retention: finished threads past the age leave Redis for the archive, still readable."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.asyncio import Redis

from bot.domain.audit import verify_chain
from bot.domain.clock import ManualClock
from bot.domain.events import Actor, Decision, Origin
from bot.domain.reducer import Status
from bot.storage import keys
from bot.storage.archive import Archive
from bot.storage.audit import from_stored_record
from bot.storage.embedded import EmbeddedRedis
from bot.storage.retries import Retries
from tests.channels.email.helpers import ANN, OPS, Mailroom, email_settings, new_mail, reply_to
from tests.channels.email.provider import MailProvider
from tests.harness import Harness, eventually
from tests.harness import test_settings as settings_with
from tests.standins.receiver import Receiver
from tests.test_cli import DEPLOY, cli

DAY = 86400.0


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = settings_with(retain_finished_days=7)
    clock = ManualClock(1_800_000_000.0)
    async with Harness(
        redis_server.url, settings=settings, clock=clock, archive=Archive(tmp_path / "archive")
    ) as harness:
        yield harness


async def finished(h: Harness, body: dict[str, str] = DEPLOY) -> str:
    r = await h.api.post("/threads", json=body)
    await h.drain()
    (req,) = (await h.api.get(f"/threads/{r.json()['id']}")).json()["open_requests"]
    body = {"decision": "approve", "by": "bob"}
    assert (await h.api.post(f"/requests/{req['id']}/decision", json=body)).status_code == 200
    await h.drain()
    return str(r.json()["id"])


async def test_finished_threads_past_the_age_are_archived_and_gone_from_redis(
    h: Harness, redis: Redis
) -> None:
    clock = h.clock
    assert isinstance(clock, ManualClock)
    old = await finished(h)
    clock.advance(6 * DAY)
    recent = await finished(h)
    waiting = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
    await h.drain()

    clock.advance(2 * DAY)  # old is 8 days finished, recent 2; waiting is not finished
    assert h.rt.retention is not None
    assert await h.rt.retention.sweep() == 1

    # Gone from Redis: its keys and its index entries.
    assert not await redis.exists(keys.log(old), keys.meta(old))
    listed = [t["id"] for t in (await h.api.get("/threads")).json()["items"]]
    assert old not in listed and {recent, waiting} <= set(listed)
    assert (await h.api.get(f"/threads/{old}")).status_code == 404

    # Still readable, by the API and the CLI, and its chain still verifies.
    archived = (await h.api.get(f"/archive/{old}")).json()
    assert archived["status"] == "done" and "1.5.0 on production" in archived["last_reply"]
    stored = h.archive.read(old) if h.archive else None
    assert stored is not None and verify_chain(stored.events, old) == []
    chain = (await h.api.get(f"/threads/{old}/audit")).json()
    assert chain == {
        "thread": old,
        "events": len(stored.events),
        "intact": True,
        "breaks": [],
        "archived": True,
    }
    got = await cli(h, "audit", "verify", old)
    assert got.exit_code == 0
    assert f"{old}: intact ({len(stored.events)} events, archived)" in got.stdout
    # An archived file edited shows, as a log edited in Redis does.
    (path,) = h.archive.root.glob(f"*/{old}.jsonl") if h.archive else []
    head, first, *rest = path.read_text().splitlines()
    path.write_text("\n".join([head, first, *rest[1:]]) + "\n")  # its second event gone
    chain = (await h.api.get(f"/threads/{old}/audit")).json()
    assert not chain["intact"] and chain["archived"] and chain["events"] == len(stored.events) - 1
    got = await cli(h, "threads", "--archived")
    assert got.exit_code == 0 and old in got.stdout and "1 of 1 archived threads" in got.stdout
    got = await cli(h, "show", old)
    assert got.exit_code == 0 and "archived" in got.stdout and "1.5.0 on production" in got.stdout


async def test_sweeping_twice_archives_once(h: Harness) -> None:
    clock = h.clock
    assert isinstance(clock, ManualClock)
    tid = await finished(h)
    clock.advance(8 * DAY)
    assert h.rt.retention is not None
    assert await h.rt.retention.sweep() == 1
    assert await h.rt.retention.sweep() == 0  # nothing left: archived once
    assert (await h.api.get("/archive")).json()["total"] == 1
    assert (await h.api.get(f"/archive/{tid}")).status_code == 200


async def test_an_archived_thread_is_found_by_its_id_and_no_pattern(h: Harness) -> None:
    # The id is a file name: read as a glob pattern, "*" would answer another thread under
    # its own name, and "**" would fail (500).
    clock = h.clock
    assert isinstance(clock, ManualClock)
    tid = await finished(h)
    clock.advance(8 * DAY)
    assert h.rt.retention is not None and await h.rt.retention.sweep() == 1
    assert (await h.api.get(f"/archive/{tid}")).json()["id"] == tid
    for pattern in ("*", "th_*", tid[:-1] + "?", "**"):
        r = await h.api.get(f"/archive/{quote(pattern)}")
        assert r.status_code == 404, (pattern, r.text)


async def test_an_archived_thread_takes_its_deliveries_still_to_retry_with_it(
    h: Harness, redis: Redis
) -> None:
    clock = h.clock
    assert isinstance(clock, ManualClock)
    async with Receiver(fail_always=True) as receiver:
        callback = {**DEPLOY, "callback_url": receiver.url}
        old = await finished(h, callback)
        waiting = (await h.api.post("/threads", json=callback)).json()["id"]
        await h.drain()
        assert await retried(redis) == {old, waiting}  # every callback failed

        clock.advance(8 * DAY)
        assert h.rt.retention is not None
        assert await h.rt.retention.sweep() == 1
        assert await retried(redis) == {waiting}  # the archived thread's jobs went with it

        tried = len(receiver.requests)
        await h.drain()  # the other's retries go on
        assert len(receiver.requests) > tried
        assert {r.json()["thread_id"] for r in receiver.requests[tried:]} == {waiting}


async def test_an_archived_thread_takes_the_aliases_that_lead_to_it_with_it(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, tmp_path: Path
) -> None:
    clock = ManualClock(1_800_000_000.0)
    settings = email_settings(provider, retain_finished_days=7)
    archive = Archive(tmp_path / "archive")
    async with Harness(redis_server.url, settings=settings, clock=clock, archive=archive) as h:
        room = Mailroom(h, provider)
        await room.smtp(new_mail(ANN, "deploy@example.test", "Release api", DEPLOY["text"]))
        await h.drain()
        (old,) = (await h.rt.indexes.threads(offset=0, limit=5))[0]
        ask = provider.last_to(OPS)
        assert (await room.smtp(reply_to(ask, "APPROVE", sender=OPS))).startswith("decided")
        await h.drain()
        assert (await h.thread(old)).status is Status.DONE
        told_ann = provider.last_to(ANN)
        clock.advance(6 * DAY)
        await room.smtp(new_mail(ANN, "deploy@example.test", "Again", DEPLOY["text"]))
        await h.drain()
        (new,) = [t for t in (await h.rt.indexes.threads(offset=0, limit=5))[0] if t != old]
        # Each email in or out leads to its thread: the Message-IDs, the conversation's root.
        assert set((await aliases(redis)).values()) == {old, new}
        linked_to_old = [k for k, tid in (await aliases(redis)).items() if tid == old]
        assert len(linked_to_old) >= 4

        clock.advance(2 * DAY)
        assert h.rt.retention is not None
        assert await h.rt.retention.sweep() == 1
        left = await aliases(redis)
        assert set(left.values()) == {new}  # the waiting thread's stay
        assert not await redis.exists(*linked_to_old)

        # A reply to the ended conversation starts nothing under its thread's id: its
        # archive file would be written over. The sender is told instead.
        archived = archive.read(old)
        answer = await room.smtp(reply_to(told_ann, "thanks!", sender=ANN))
        assert "ended" in answer, answer
        await h.drain()
        assert not (await h.thread(old)).exists and archive.read(old) == archived
        assert any("ended" in sent.text for sent in provider.to(ANN))


async def aliases(redis: Redis) -> dict[str, str]:
    """Every alias key and the thread it leads to."""
    return {str(k): str(await redis.get(k)) for k in await redis.keys(keys.alias("*", "*"))}


async def retried(redis: Redis) -> set[str]:
    """The threads with deliveries to retry."""
    jobs = [
        job
        for shard in range(keys.SHARDS)
        for job in await redis.zrange(keys.retries(shard), 0, -1)
    ]
    assert len(jobs) == await Retries(redis).count()
    return {json.loads(job)["t"] for job in jobs}


async def test_a_serving_worker_steps_threads_while_it_archives_a_backlog(
    h: Harness, redis: Redis
) -> None:
    """Past the age, thousands of threads may come due at once (the first day a deployment
    reaches it, or the age lowered): archiving them takes seconds, and new work must not
    wait behind it."""
    clock = h.clock
    assert isinstance(clock, ManualClock)
    ann, bob, api = (
        Actor(channel="api", id="ann"),
        Actor(channel="api", id="bob"),
        Origin(channel="api"),
    )
    backlog = [
        (await h.rt.inbox.message(agent="deploy", text=DEPLOY["text"], by=ann, origin=api)).thread
        for _ in range(200)
    ]
    await h.drain()
    for thread in backlog:
        (req,) = (await h.thread(thread.id)).open_requests()
        await h.rt.decisions.decide(req.id, Decision.APPROVE, bob)
    await h.drain()
    clock.advance(8 * DAY)

    async def left() -> int:
        return int(await redis.exists(*[keys.log(t.id) for t in backlog]))

    stop = asyncio.Event()
    serving = asyncio.create_task(h.worker.run(stop))
    try:
        await eventually(lambda: _below(left, len(backlog)))  # the sweep has begun
        new = await h.rt.inbox.message(agent="deploy", text=DEPLOY["text"], by=ann, origin=api)
        await eventually(lambda: _is(h, new.thread.id, Status.AWAITING_APPROVAL), timeout=10)
        assert await left() > 0  # stepped while the backlog was still being archived
        await eventually(lambda: _below(left, 1), timeout=60)
    finally:
        stop.set()
        await serving
    assert (await h.api.get("/archive")).json()["total"] == len(backlog)


async def _below(count: Callable[[], Awaitable[int]], limit: int) -> bool:
    return await count() < limit


async def _is(h: Harness, thread_id: str, status: Status) -> bool:
    return (await h.thread(thread_id)).status is status


async def test_old_audit_records_move_to_the_archive_and_still_export(
    h: Harness, redis: Redis
) -> None:
    tid = await finished(h)
    (record,) = (await h.api.get("/audit")).json()["items"]
    (line,) = await archived_export(h, redis)
    assert line and tid in line and record["hash"] in line


async def archived_export(h: Harness, redis: Redis) -> list[str]:
    """The audit export's lines once every record is 8 days old and retention has moved
    them all out of Redis (the age is 7 days)."""
    clock = h.clock
    assert isinstance(clock, ManualClock)
    clock.advance(8 * DAY)
    assert h.rt.retention is not None
    await h.rt.retention.sweep()

    streams = [keys.audit(s) for s in range(keys.SHARDS)]
    assert sum([await redis.xlen(s) for s in streams]) == 0  # out of Redis
    got = await cli(h, "audit", "export")
    assert got.exit_code == 0, got.output
    return got.stdout.splitlines()


async def test_the_audit_trail_comes_a_page_at_a_time_archived_first_each_record_once(
    h: Harness, redis: Redis
) -> None:
    clock = h.clock
    assert isinstance(clock, ManualClock) and h.rt.retention is not None and h.archive
    folder = h.archive.root / "audit"

    def batches() -> dict[str, list[Path]]:
        """Each shard's archived batches, oldest first."""
        found: dict[str, list[Path]] = {}
        for path in sorted(folder.glob("*/*.jsonl")):
            found.setdefault(path.name.split("-")[0], []).append(path)
        return found

    # Decisions archived a sweep at a time, until a shard holds more than one batch.
    threads: list[str] = []
    while not any(len(paths) > 1 for paths in batches().values()):
        assert len(threads) < 40, batches()
        threads.append(await finished(h))
        clock.advance(60)
        await h.rt.retention.sweep()
    clock.advance(8 * DAY)
    await h.rt.retention.sweep()
    streams = [keys.audit(s) for s in range(keys.SHARDS)]
    assert sum([await redis.xlen(s) for s in streams]) == 0  # all archived
    # The oldest of such a shard as a sweep leaves it that wrote it to the archive but
    # stopped before trimming it from Redis: in both.
    (oldest, *_) = next(paths for paths in batches().values() if len(paths) > 1)
    _, _, line = oldest.read_text().splitlines()[0].partition(" ")  # its entry id, the record
    shard = keys.shard_of(from_stored_record(line)["thread"])
    await redis.xadd(streams[shard], {"r": line})
    # Two recorded since, still in Redis.
    (last,) = [r for r in h.archive.audit_records(0, 2e9) if r["thread"] == threads[-1]]
    for n in range(2):
        tid = f"th_{n:020x}"
        new = last | {"at": last["at"] + 60 * (n + 1), "thread": tid, "event": f"ev_{n:014x}"}
        # Stored a minute apart, as their times say (in one millisecond, two shards' entries
        # would come by shard).
        stamp = f"{int(new['at'] * 1000)}-0"
        await redis.xadd(keys.audit(keys.shard_of(tid)), {"r": json.dumps(new)}, id=stamp)
        threads.append(tid)

    whole = (await h.api.get("/audit")).json()
    assert [r["thread"] for r in whole["items"]] == threads and whole["next"] is None
    pages, url = [], "/audit?limit=2"
    while url:
        got = (await h.api.get(url)).json()
        pages.append(got["items"])
        url = got["next"]
        assert len(pages) <= len(threads), pages
    assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)
    assert len(pages) == (len(threads) + 1) // 2
    assert [r for page in pages for r in page] == whole["items"]
    # The export follows the pages: every record, once.
    got = await cli(h, "audit", "export")
    assert [json.loads(line) for line in got.stdout.splitlines()] == whole["items"]
    r = await h.api.get("/audit", params={"after": "not a cursor"})
    assert r.status_code == 422 and "`after`" in r.json()["detail"], r.text


async def test_records_retention_moves_while_the_pages_are_read_come_each_once(
    redis_server: EmbeddedRedis, redis: Redis, tmp_path: Path
) -> None:
    # Retention moves the oldest records in Redis, those a page read there last: after a
    # page of them, the next pages find the rest in the archive.
    clock = ManualClock(time.time() + 60)  # ahead of Redis's: the records stay in Redis
    settings = settings_with(retain_finished_days=7)
    archive = Archive(tmp_path / "archive")
    async with Harness(redis_server.url, settings=settings, clock=clock, archive=archive) as h:
        for _ in range(4):
            await finished(h)
        whole = (await h.api.get("/audit")).json()
        assert len(whole["items"]) == 4 and whole["next"] is None
        pages = [(await h.api.get("/audit", params={"limit": 1})).json()]
        pages.append((await h.api.get(pages[-1]["next"])).json())  # from Redis, these two
        clock.advance(8 * DAY)
        assert h.rt.retention is not None
        await h.rt.retention.sweep()
        streams = [keys.audit(s) for s in range(keys.SHARDS)]
        assert sum([await redis.xlen(s) for s in streams]) == 0  # the rest are archived
        while pages[-1]["next"]:
            pages.append((await h.api.get(pages[-1]["next"])).json())
    assert [r for page in pages for r in page["items"]] == whole["items"]


RECORD_FIELDS = ("kind", "outcome", "by", "by_id", "channel", "reason", "args_hash", "hash")


async def test_records_a_backlog_sweep_moves_between_two_pages_are_not_lost(
    h: Harness, redis: Redis
) -> None:
    # A sweep moves at most 1,000 records of a shard: with a backlog, the next sweep moves
    # a busy shard's records older than some a quiet shard's last sweep moved, and read.
    assert h.rt.retention is not None
    busy, quiet = "th_" + "0" * 20, "th_" + "1" * 20
    assert keys.shard_of(busy) != keys.shard_of(quiet)
    base = h.clock.now() - 30 * DAY
    pipe = redis.pipeline(transaction=False)
    for n, (tid, at) in enumerate(
        [(busy, base + i) for i in range(1500)] + [(quiet, base + 2000 + i) for i in range(10)]
    ):
        record = {
            **dict.fromkeys(RECORD_FIELDS, "x"),
            **{"at": at, "thread": tid, "request": f"{tid}.r{n:08x}", "event": f"ev_{n:05}"},
        }
        pipe.xadd(keys.audit(keys.shard_of(tid)), {"r": json.dumps(record)}, id=f"{n + 1}-0")
    await pipe.execute()
    await h.rt.retention.sweep()  # the busy shard's oldest 1,000, the quiet one's 10
    first = (await h.api.get("/audit", params={"limit": 1005})).json()
    await h.rt.retention.sweep()  # the busy shard's 500 others
    rest = (await h.api.get(first["next"])).json()
    assert rest["next"] is None
    read = [r["event"] for r in first["items"] + rest["items"]]
    assert sorted(read) == [f"ev_{n:05}" for n in range(1510)]


@pytest.mark.parametrize(
    ("archived", "live"),
    [
        (None, [10**30, 0, 0]),  # no stream entry id: Redis refuses it
        (None, [1, 2**64, 0]),
        (None, [-1, 0, 0]),
        (None, [1, 0, keys.SHARDS]),
        ([float("nan"), "ev_x"], None),
        ([float("inf"), "ev_x"], None),
    ],
)
async def test_a_cursor_this_api_never_gave_is_refused_with_a_422(
    h: Harness, archived: list[object] | None, live: list[int] | None
) -> None:
    forged = json.dumps({"a": archived, "l": live}).encode()
    r = await h.api.get("/audit", params={"after": base64.urlsafe_b64encode(forged).decode()})
    assert r.status_code == 422 and "`after`" in r.json()["detail"], r.text


async def test_records_of_both_shapes_read_back_whole_from_redis_and_from_the_archive(
    h: Harness, redis: Redis
) -> None:
    tid = await finished(h)
    (new,) = (await h.api.get("/audit")).json()["items"]
    other = "th_0000000000000000000a"
    old = new | {  # as records were stored before: a whole JSON object
        "at": new["at"] + 1,
        "thread": other,
        "request": f"{other}.r00000001",
        "by": "Bob Example",
        "event": "ev_0123456789abcdef0123",
    }
    await redis.xadd(keys.audit(keys.shard_of(tid)), {"r": json.dumps(old)})
    assert (await h.api.get("/audit")).json()["items"] == [new, old]
    assert [json.loads(line) for line in await archived_export(h, redis)] == [new, old]


async def test_a_call_asked_again_after_its_request_was_archived_opens_a_new_thread(
    h: Harness,
) -> None:
    # Its open_key outlives the request (a day past it, a month for one that never
    # expires); the request's thread must not be made again under its archived id.
    clock = h.clock
    assert isinstance(clock, ManualClock) and h.archive is not None
    body = {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}, "open_key": "k"}
    first = (await h.api.post("/approvals", json=body)).json()
    decided = {"decision": "approve", "by": "bob"}
    assert (await h.api.post(f"/requests/{first['id']}/decision", json=decided)).status_code == 200
    await h.drain()
    clock.advance(8 * DAY)
    assert h.rt.retention is not None and await h.rt.retention.sweep() == 1
    archived = h.archive.read(first["thread_id"])
    assert archived is not None

    again = await h.api.post("/approvals", json=body)
    assert again.status_code == 201, again.text
    assert again.json()["thread_id"] != first["thread_id"]
    assert h.archive.read(first["thread_id"]) == archived


async def test_a_key_whose_thread_was_archived_makes_no_thread_again(h: Harness) -> None:
    # A retry of an Idempotency-Key a month later must not start its archived thread anew:
    # archived again, the new one would be written over the old file.
    clock = h.clock
    assert isinstance(clock, ManualClock) and h.archive is not None
    asked = {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}}
    keyed = {"Idempotency-Key": "release-1.5.0"}
    thread = (await h.api.post("/threads", json=DEPLOY, headers=keyed)).json()["id"]
    await h.drain()
    (req,) = (await h.api.get(f"/threads/{thread}")).json()["open_requests"]
    decided = {"decision": "approve", "by": "bob"}
    assert (await h.api.post(f"/requests/{req['id']}/decision", json=decided)).status_code == 200
    first = (await h.api.post("/approvals", json=asked, headers=keyed)).json()
    assert (await h.api.post(f"/requests/{first['id']}/decision", json=decided)).status_code == 200
    await h.drain()
    clock.advance(8 * DAY)
    assert h.rt.retention is not None and await h.rt.retention.sweep() == 2
    archived = [h.archive.read(t) for t in (thread, first["thread_id"])]

    for route, body in [
        ("/threads", DEPLOY),
        ("/approvals", asked),
        ("/approvals", {**asked, "open_key": "k"}),
    ]:
        again = await h.api.post(route, json=body, headers=keyed)
        assert again.status_code == 409 and "archived" in again.json()["detail"], again.text
    assert [h.archive.read(t) for t in (thread, first["thread_id"])] == archived
