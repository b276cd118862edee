from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage.embedded import EmbeddedRedis
from tests.channels.email.helpers import Mailroom, email_settings
from tests.channels.email.provider import MailProvider
from tests.harness import Harness


@pytest.fixture
async def room(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> AsyncIterator[Mailroom]:
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=email_settings(provider), clock=clock) as h:
        yield Mailroom(h, provider)
