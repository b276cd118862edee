"""At start-up, a process says what its Redis would lose (README: Redis durability).

On a server of this module's own, whose persistence the tests change.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.serve import open_runtime
from bot.storage.connection import Client, connect
from bot.storage.embedded import EmbeddedRedis
from tests.harness import eventually
from tests.harness import test_settings as make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    found = EmbeddedRedis(Path(tmp_path_factory.mktemp("durability")))
    found.start()
    yield found
    found.stop()


@pytest.fixture
async def redis(server: EmbeddedRedis) -> AsyncIterator[Client]:
    client = await connect(server.url)
    yield client
    await client.config_set("appendonly", "yes")
    await client.config_set("appendfsync", "everysec")
    await eventually(lambda: _aof_written(client))  # the server stops only once it is
    await client.aclose()


async def started(server: EmbeddedRedis, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings a process logs about Redis as it starts (the example agents loaded)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.serve"):
        async with open_runtime(make_settings(redis_url=server.url), inbound=False):
            pass
    return [r.getMessage() for r in caplog.records if r.name == "bot.serve" and "Redis" in r.msg]


async def test_approved_tools_that_could_run_twice_after_a_crash_are_named(
    server: EmbeddedRedis, redis: Client, caplog: pytest.LogCaptureFixture
) -> None:
    (warning,) = await started(server, caplog)
    assert warning.startswith("Redis has appendfsync=everysec")
    assert "runs again with nothing saying it began" in warning
    # The example agents' gated tools that are not idempotent; the refund is idempotent,
    # and tools that need no approval are not named.
    assert "For deploy.deploy, deploy.rollback: set appendfsync always" in warning
    assert "refund" not in warning and "list_services" not in warning

    await redis.config_set("appendfsync", "always")
    assert await started(server, caplog) == []


async def test_a_server_without_the_aof_is_said_to_lose_suspended_threads(
    server: EmbeddedRedis, redis: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.config_set("appendonly", "no")
    assert await started(server, caplog) == [
        "Redis has appendonly=no: suspended threads would be lost if Redis restarts"
    ]


async def _aof_written(redis: Client) -> bool:
    got: dict[str, Any] = await redis.info("persistence")
    return not (got["aof_rewrite_in_progress"] or got["aof_rewrite_scheduled"])
