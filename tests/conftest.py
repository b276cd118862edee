"""Shared fixtures: one real Redis server per session (the embedded binary), flushed per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis
from tests.channels.email.provider import MailProvider

# Tests build their settings explicitly; nothing from the developer's shell leaks in.
for _name in list(os.environ):
    if _name.startswith(("ANTHROPIC_", "SLACK_", "SMTP_", "EMAIL_", "REDIS_", "API_TOKEN")):
        del os.environ[_name]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def provider() -> AsyncIterator[MailProvider]:
    """A local SMTP server that records what the app sends (email cards, sign-in links)."""
    async with MailProvider() as p:
        yield p


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = await connect(redis_server.url)  # as production connects
    await client.flushall()
    yield client
    await client.aclose()
