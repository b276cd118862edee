"""The outbox's retries: one job's failure stops no other, and a job of a gone thread goes."""

from __future__ import annotations

import json
import logging
import time

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.retries import Retries
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.standins.receiver import Receiver

DEPLOY = "deploy api 1.5.0 to production"
SETTINGS = make_settings(webhook_secret="whsec-test-secret")


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_failing_retry_job_stops_none_of_the_others(
    redis_server: EmbeddedRedis, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(time.time())
    async with Receiver(fail_first=4) as receiver:
        # Four threads whose first callback fails: four retry jobs.
        async with Harness(redis_server.url, settings=SETTINGS, clock=clock) as h:
            for _ in range(4):
                body = {"agent": "deploy", "text": DEPLOY, "callback_url": receiver.url}
                assert (await h.api.post("/threads", json=body)).status_code == 201
            await h.drain()
        jobs = [
            (shard, job, score)
            for shard in range(keys.SHARDS)
            for job, score in await redis.zrange(keys.retries(shard), 0, -1, withscores=True)
        ]
        assert len(jobs) == 4 and len(receiver.requests) == 4
        # Claimed in this order: the first two go bad. One thread's log went (as retention
        # of an earlier version left its jobs behind); the other's holds what no one can read.
        ordered = sorted(jobs, key=lambda j: (j[0], j[2], j[1]))
        gone, unreadable, *good = [_thread_of(job) for _, job, _ in ordered]
        await redis.delete(keys.log(gone))
        await redis.rpush(keys.log(unreadable), '{"type": "no-such-event"}')
        dropped = counted(
            "greenlight_delivery_retries_dropped_total", channel="webhook", reason="gone"
        )
        errors = counted("greenlight_delivery_retry_errors_total", channel="webhook")

        caplog.set_level(logging.INFO, logger="bot.engine.outbox")
        async with Harness(redis_server.url, settings=SETTINGS, clock=clock) as fresh:
            clock.advance(1)  # the retries are due
            await fresh.drain()

        delivered = {r.json()["thread_id"] for r in receiver.ok()}
        assert delivered == set(good)
        # The gone thread's job was dropped; the unreadable one's waits for the claim's hold.
        (left,) = [
            (job, score)
            for shard in range(keys.SHARDS)
            for job, score in await redis.zrange(keys.retries(shard), 0, -1, withscores=True)
        ]
        assert _thread_of(left[0]) == unreadable and left[1] == clock.now() + Retries(redis).hold
        said = [r.getMessage() for r in caplog.records]
        assert any(gone in line and "dropped a retry" in line for line in said), said
        assert any(unreadable in line and "StoreError" in line for line in said), said
        assert (
            counted("greenlight_delivery_retries_dropped_total", channel="webhook", reason="gone")
            == dropped + 1
        )
        assert counted("greenlight_delivery_retry_errors_total", channel="webhook") == errors + 1


def _thread_of(job: str) -> str:
    return str(json.loads(job)["t"])
