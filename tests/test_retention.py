"""Retention: finished threads past the age leave Redis for the archive, still readable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.domain.audit import verify_chain
from bot.domain.clock import ManualClock
from bot.storage import keys
from bot.storage.archive import Archive
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.harness import test_settings as settings_with
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


async def finished(h: Harness) -> str:
    r = await h.api.post("/threads", json=DEPLOY)
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


async def test_old_audit_records_move_to_the_archive_and_still_export(
    h: Harness, redis: Redis
) -> None:
    clock = h.clock
    assert isinstance(clock, ManualClock)
    tid = await finished(h)
    (record,) = (await h.api.get("/audit")).json()["items"]
    clock.advance(8 * DAY)
    assert h.rt.retention is not None
    await h.rt.retention.sweep()

    streams = [keys.audit(s) for s in range(keys.SHARDS)]
    assert sum([await redis.xlen(s) for s in streams]) == 0  # out of Redis
    got = await cli(h, "audit", "export")
    assert got.exit_code == 0, got.output
    (line,) = got.stdout.splitlines()
    assert line and tid in line and record["hash"] in line
