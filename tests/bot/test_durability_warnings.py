"""At start-up, a process says what its Redis would lose (README: Redis durability).

On a server of each test's own, whose persistence the test changes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.serve import open_runtime
from bot.settings import Settings
from bot.storage.connection import Client, connect
from bot.storage.embedded import EmbeddedRedis
from tests.harness import test_settings as make_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """Our own: the session's server keeps its persistence."""
    found = EmbeddedRedis(tmp_path / "redis")
    found.start()
    yield found
    found.stop()


@pytest.fixture
async def redis(server: EmbeddedRedis) -> AsyncIterator[Client]:
    client = await connect(server.url)
    yield client
    await client.aclose()


async def started(settings: Settings, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings a process logs about Redis as it starts (the example agents loaded)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.serve"):
        async with open_runtime(settings, inbound=False) as rt:
            assert await rt.redis.ping()
    return [r.getMessage() for r in caplog.records if r.name == "bot.serve" and "Redis" in r.msg]


async def test_approved_tools_that_could_run_twice_after_a_crash_are_named(
    server: EmbeddedRedis, redis: Client, caplog: pytest.LogCaptureFixture
) -> None:
    (warning,) = await started(make_settings(redis_url=server.url), caplog)
    assert warning.startswith("Redis has appendfsync=everysec")
    assert "runs again with nothing saying it began" in warning
    # The example agents' gated tools that are not idempotent; the refund is idempotent,
    # and tools that need no approval are not named.
    assert "For deploy.deploy, deploy.rollback: set appendfsync always" in warning
    assert "refund" not in warning and "list_services" not in warning

    await redis.config_set("appendfsync", "always")
    assert await started(make_settings(redis_url=server.url), caplog) == []


async def test_a_server_without_the_aof_is_said_to_lose_suspended_threads(
    server: EmbeddedRedis, redis: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.config_set("appendonly", "no")
    assert await started(make_settings(redis_url=server.url), caplog) == [
        "Redis has appendonly=no: suspended threads would be lost if Redis restarts"
    ]


async def test_the_embedded_server_puts_every_write_on_disk_before_acknowledging_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(data_dir=tmp_path)  # no REDIS_URL: the embedded server
    assert await started(settings, caplog) == []
    async with open_runtime(settings, inbound=False) as rt:
        config = await rt.redis.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
