"""Audit records are stored without what their other fields say, and read back whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.domain.audit import to_record
from bot.domain.events import (
    Actor,
    ApprovalDecision,
    Decision,
    Event,
    Expired,
    HumanAnswer,
    stored_id,
)
from bot.storage import keys
from bot.storage.archive import Archive
from bot.storage.audit import AuditLog, from_stored_record, to_stored_record

TID = "th_8f3d242d11574712c3fb"
RID = f"{TID}.r999d1083"
HASH = "qK6M4clvjHbhK0bOl_GHrg"
BOB = Actor(channel="api", id="bob")


def decided(event: Event) -> dict[str, Any]:
    event.id = stored_id(HASH)
    record = to_record(TID, event, HASH)
    assert record is not None
    return record


@pytest.mark.parametrize(
    "event",
    [
        ApprovalDecision(
            at=1796078275.1075184,
            request_id=RID,
            decision=Decision.APPROVE,
            by=BOB,
            args_hash="8bdf02a4c7c6a787",
        ),
        ApprovalDecision(
            request_id=RID, decision=Decision.REJECT, by=BOB, reason="not now", args_hash="h"
        ),
        HumanAnswer(request_id=RID, text="1.5.1", by=Actor(channel="slack", id="U1")),
        Expired(request_id=RID),
    ],
    ids=["approve", "reject", "answer", "expiry"],
)
def test_a_record_reads_back_whole_from_less_than_half_of_it(event: Event) -> None:
    record = decided(event)
    stored = to_stored_record(record)
    repeated = (TID + '"', '"decision"', '"answer"', '"expiry"', stored_id(HASH))
    for name in (*repeated, '"bob"', '"U1"', '"api"', '"slack"', '"system"'):
        assert name not in stored
    assert len(stored) < len(json.dumps(record, separators=(",", ":"))) / 2
    back = from_stored_record(stored)
    assert back == record and list(back) == list(record)  # the same fields, in order


def test_what_the_other_fields_do_not_say_is_stored() -> None:
    # A person's name, a channel with a colon in it, a request id that names no thread,
    # an event id stored before ids came from hashes.
    record = decided(
        ApprovalDecision(
            request_id="req_7",
            decision=Decision.APPROVE,
            by=Actor(channel="oidc:corp", id="ann", name="Ann Example"),
            args_hash="h",
        )
    )
    record |= {"thread": TID, "event": "ev_0123456789abcdef0123"}
    stored = to_stored_record(record)
    for kept in ("Ann Example", '"oidc:corp"', TID, "ev_0123456789abcdef0123"):
        assert kept in stored
    back = from_stored_record(stored)
    assert back == record and list(back) == list(record)


def test_a_record_stored_whole_before_reads_as_it_was() -> None:
    whole = decided(
        ApprovalDecision(request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash="h")
    )
    assert from_stored_record(json.dumps(whole)) == whole


def test_a_field_a_later_version_appends_is_left_out() -> None:
    record = decided(
        ApprovalDecision(request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash="h")
    )
    later = json.loads(to_stored_record(record))
    later += [None] * (12 - len(later)) + ["a field from later"]
    assert from_stored_record(json.dumps(later)) == record


async def test_the_newest_come_first_from_every_shard_a_page_at_a_time(redis: Redis) -> None:
    await every_millisecond(redis).execute()
    audit = AuditLog(redis)

    async def newest(since: float, until: float) -> list[int]:
        return [int(r["request"][-8:], 16) async for r in audit.newest(since, until, batch=4)]

    assert await newest(0, 2e9) == list(range(24, -1, -1))
    assert await newest(1_800_000_000.005, 1_800_000_000.0199) == list(range(19, 4, -1))
    assert await newest(2e9, 1e9) == []


async def test_the_oldest_come_first_and_a_reader_resumes_just_after_any_record(
    redis: Redis,
) -> None:
    # Two shards also hold a record under the same entry id.
    pipe = every_millisecond(redis, last_seq=1)
    twin = {"at": 1_800_000_000.024, "thread": TIDS[1], "request": f"{TIDS[1]}.r{99:08x}"}
    stamp = f"{1_800_000_000_000 + 24}-1"
    pipe.xadd(keys.audit(keys.shard_of(TIDS[1])), {"r": json.dumps(twin)}, id=stamp)
    await pipe.execute()
    audit = AuditLog(redis)

    async def oldest(since: float, until: float, after: Any = None) -> list[Any]:
        return [
            (where, int(r["request"][-8:], 16))
            async for where, r in audit.oldest(since, until, after=after, batch=4)
        ]

    every = await oldest(0, 2e9)
    assert sorted(n for _, n in every) == [*range(25), 99]
    assert [n for _, n in every][:24] == list(range(24))
    assert await oldest(1_800_000_000.005, 1_800_000_000.0199) == every[5:20]
    for cut in range(len(every)):  # from any record on, the rest: each once, in order
        assert await oldest(0, 2e9, after=every[cut][0]) == every[cut + 1 :]
    assert await oldest(2e9, 1e9) == []


def test_a_batch_archived_again_in_a_later_month_is_read_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    at = datetime(2024, 3, 31, 23, 0, tzinfo=UTC).timestamp()
    vote = decided(
        ApprovalDecision(request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash="h")
    )
    records = [vote | {"event": f"ev_{i:020x}", "at": at + i} for i in range(3)]
    lines = [to_stored_record(r) for r in records]
    # A sweep wrote the oldest two, then stopped before trimming them from Redis; the next,
    # in April, wrote them again with one more.
    batch = [(f"{int(at * 1000) + i * 1000}-0", line) for i, line in enumerate(lines)]
    archive.write_audit(4, batch[:2], at)
    archive.write_audit(4, batch, at + 86400)
    events = [r["event"] for r in records]
    assert [r["event"] for r in archive.audit_records(0, at + 10)] == events
    assert [r["event"] for r in archive.audit_newest(0, at + 10)] == events[::-1]
    assert [r["event"] for r in archive.audit_newest(at + 1, at + 1)] == events[1:2]


def archived_at(archive: Archive, shard: int, first: str, times: list[float]) -> list[str]:
    """Archive a batch of ``shard`` whose first record Redis stored at ``first``, of
    records made at ``times``; their events."""
    vote = decided(
        ApprovalDecision(request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash="h")
    )
    records = [vote | {"event": f"ev_{shard:02d}{int(t * 1000):018x}", "at": t} for t in times]
    ms, _, seq = first.partition("-")
    entries = [f"{ms}-{int(seq) + i}" for i in range(len(records))]
    batch = list(zip(entries, [to_stored_record(r) for r in records], strict=True))
    archive.write_audit(shard, batch, 1_800_000_000)
    return [r["event"] for r in records]


def archived_before(archive: Archive, shard: int, first: str, times: list[float]) -> list[str]:
    """``archived_at``, as versions before wrote batches: named by their first entry only,
    each line a record alone."""
    events = archived_at(archive, shard, first, times)
    (path,) = (archive.root / "audit").glob(f"*/{shard:02d}-{first}.*.jsonl")
    lines = [line.partition(" ")[2] for line in path.read_text().splitlines()]
    path.with_name(f"{shard:02d}-{first}.jsonl").write_text("".join(f"{x}\n" for x in lines))
    path.unlink()
    return events


def test_archived_records_come_in_the_order_of_their_time_whatever_redis_clock_said(
    tmp_path: Path,
) -> None:
    archive = Archive(tmp_path)
    # Writers' clocks far from Redis's, and from each other's: a shard's later batch holds
    # records older than its first batch's.
    (at300, at100) = archived_at(archive, 4, "1000-0", [300.0, 100.0])
    (at200, at50) = archived_at(archive, 4, "2000-0", [200.0, 50.0])
    (at150,) = archived_at(archive, 7, "1500-0", [150.0])
    in_order = [at50, at100, at150, at200, at300]
    assert [r["event"] for r in archive.audit_records(0, 1e9)] == in_order
    assert [r["event"] for r in archive.audit_newest(0, 1e9)] == in_order[::-1]
    assert [r["event"] for r in archive.audit_oldest(150, 1e9)] == in_order[2:]
    assert [r["event"] for r in archive.audit_newest(0, 150)] == in_order[2::-1]
    assert list(archive.audit_oldest(301, 1e9)) == list(archive.audit_newest(20, 10)) == []


def test_a_reader_opens_only_the_batches_that_may_hold_the_records_it_reads(
    tmp_path: Path,
) -> None:
    archive = Archive(tmp_path)
    archived_at(archive, 4, "1000-0", [100.0, 110.0])
    later = archived_at(archive, 4, "2000-0", [200.0, 210.0])
    (old,) = (tmp_path / "audit").glob("*/04-1000-0.*.jsonl")
    old.write_text("not a record\n")  # so reading it fails
    with pytest.raises(json.JSONDecodeError):
        list(archive.audit_oldest(0, 1e9))
    assert [r["event"] for r in archive.audit_oldest(111, 1e9)] == later
    newest = archive.audit_newest(0, 1e9)
    assert [next(newest)["event"], next(newest)["event"]] == later[::-1]


def test_a_batch_archived_before_its_name_held_its_times_is_still_read(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    newer = archived_at(archive, 4, "2000-0", [200.0])
    older = archived_before(archive, 7, "1000-0", [100.0, 300.0])
    assert [r["event"] for r in archive.audit_records(0, 1e9)] == [older[0], *newer, older[1]]
    assert [r["event"] for r in archive.audit_newest(250, 1e9)] == older[1:]


def test_archived_records_come_after_a_place_in_the_streams_in_its_order_each_once(
    tmp_path: Path,
) -> None:
    archive = Archive(tmp_path)
    vote = decided(
        ApprovalDecision(request_id=RID, decision=Decision.APPROVE, by=BOB, args_hash="h")
    )

    def archived(shard: int, entries: list[str]) -> None:
        """A batch of ``shard`` whose records Redis stored as ``entries``; their events
        name their places."""
        lines = [to_stored_record(vote | {"event": f"ev_{shard}_{e}", "at": 9.0}) for e in entries]
        archive.write_audit(shard, list(zip(entries, lines, strict=True)), 1_800_000_000)

    archived(4, ["1000-0", "1000-1", "3000-0"])
    archived(4, ["1000-0", "1000-1", "3000-0", "4000-0"])  # written again, with one more
    archived(4, ["3000-0", "4000-0", "5000-0"])  # two sweeps at once: overlapping batches
    archived(7, ["1000-1", "2000-0"])
    archived_before(archive, 7, "2500-0", [1.0])  # its lines hold no entry ids

    def after(place: tuple[int, int, int], until_ms: int = 10**13) -> list[str]:
        return [r["event"] for _, r in archive.audit_after(place, until_ms)]

    every = ["ev_4_1000-1", "ev_7_1000-1", "ev_7_2000-0", "ev_4_3000-0", "ev_4_4000-0"]
    assert after((1000, 0, 4)) == [*every, "ev_4_5000-0"]
    assert after((1000, 1, 4)) == [*every[1:], "ev_4_5000-0"]  # the same id, a later shard
    assert after((1000, 1, 7)) == [*every[2:], "ev_4_5000-0"]
    assert after((1000, 1, 7), until_ms=4000) == every[2:]
    assert after((5000, 0, 4)) == []
    assert [p for p, _ in archive.audit_after((3000, 0, 4), 10**13)] == [(4000, 0, 4), (5000, 0, 4)]


TIDS = [f"th_{n:020x}" for n in range(3)]
"""Three threads, in three shards."""


def every_millisecond(redis: Redis, *, last_seq: int = 0) -> Pipeline:
    """A pipeline, to execute, that adds 25 audit records of ``TIDS`` in turn, one every
    millisecond, the newest last (under entry id sequence ``last_seq``)."""
    pipe = redis.pipeline(transaction=False)
    for i in range(25):
        tid = TIDS[i % 3]
        record = {"at": 1_800_000_000 + i / 1000, "thread": tid, "request": f"{tid}.r{i:08x}"}
        stamp = f"{1_800_000_000_000 + i}-{last_seq if i == 24 else 0}"
        pipe.xadd(keys.audit(keys.shard_of(tid)), {"r": json.dumps(record)}, id=stamp)
    return pipe
