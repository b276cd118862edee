"""A token revoked in one web process is refused by every web process within a second.

Each process keeps what it found of a token for ``FRESH_FOR`` (one second) instead of
asking Redis on every request; two apps on one Redis and one held clock stand for two
processes, and moving the clock stands for the second passing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage.embedded import EmbeddedRedis
from bot.storage.tokens import FRESH_FOR
from tests.harness import Harness
from tests.harness import test_settings as settings_with
from tests.scenarios.test_scopes import _client, make_token

GROUPS = {"deployers": ["bob"], "finance": ["bob"]}


@pytest.fixture
def clock(redis: Redis) -> ManualClock:  # the redis fixture: a flushed server
    return ManualClock(1_800_000_000)


@pytest.fixture
async def one(redis_server: EmbeddedRedis, clock: ManualClock) -> AsyncIterator[Harness]:
    settings = settings_with(approver_groups=GROUPS)
    async with Harness(redis_server.url, settings=settings, clock=clock) as it:
        yield it


@pytest.fixture
async def other(redis_server: EmbeddedRedis, clock: ManualClock) -> AsyncIterator[Harness]:
    settings = settings_with(approver_groups=GROUPS)
    async with Harness(redis_server.url, settings=settings, clock=clock) as it:
        yield it


async def test_a_revoked_token_is_refused_at_once_where_revoked_and_within_a_second_elsewhere(
    one: Harness, other: Harness, clock: ManualClock
) -> None:
    token = await make_token(one, "soon-gone", "agent")
    async with _client(one, token) as here, _client(other, token) as there:
        assert (await here.get("/tokens/me")).status_code == 200
        assert (await there.get("/tokens/me")).status_code == 200

        assert (await one.api.delete("/tokens/soon-gone")).status_code == 204
        refused = await here.get("/tokens/me")
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "unauthorized"

        clock.advance(FRESH_FOR / 2)  # the other process still trusts what it found
        assert (await there.get("/tokens/me")).status_code == 200
        clock.advance(FRESH_FOR / 2)
        refused = await there.get("/tokens/me")
        assert refused.status_code == 401, refused.text
        assert (await there.get("/tokens/me")).status_code == 401


async def test_a_token_used_every_moment_is_looked_up_once_a_second_and_its_use_recorded(
    one: Harness, clock: ManualClock
) -> None:
    token = await make_token(one, "busy", "agent")
    async with _client(one, token) as agent:
        first = await agent.get("/tokens/me")
        assert first.status_code == 200 and first.json()["name"] == "busy"
        used = _last_use(await one.api.get("/tokens"), "busy")
        assert used == clock.now()

        clock.advance(FRESH_FOR / 2)
        assert (await agent.get("/tokens/me")).status_code == 200
        assert _last_use(await one.api.get("/tokens"), "busy") == used  # not asked again

        clock.advance(FRESH_FOR)
        assert (await agent.get("/tokens/me")).status_code == 200
        assert _last_use(await one.api.get("/tokens"), "busy") == clock.now()


def _last_use(listed: httpx.Response, name: str) -> float:
    return float(next(t["last_used_at"] for t in listed.json()["items"] if t["name"] == name))
