"""A Greenlight with Slack on, against the local Web API stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.slack import SECRET, Slack
from tests.harness import Harness, test_settings
from tests.standins.slack_api import SlackAPI, SlackUser

ANN, BOB, CAROL, DAN, MAL = "U0ANN0001", "U0BOB0001", "U0CAROL01", "U0DAN0001", "U0MAL0001"
OPS = "S0OPS0001"
USERS = [
    SlackUser(ANN, "ann", "ann@example.com"),
    SlackUser(BOB, "bob", "bob@example.com"),
    SlackUser(CAROL, "carol", "Carol@Example.com"),
    SlackUser(DAN, "dan", "dan@example.com"),
    SlackUser(MAL, "mallory", "mallory@example.com"),
]
# Bob by Slack id, Carol by email, Dan through a Slack user group, Dave through the REST API.
GROUPS = {
    "deployers": [f"slack:{BOB}", "carol@example.com", OPS, "api:dave"],
    "finance": [f"slack:{BOB}"],
}


def slack_settings(api: SlackAPI, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "slack_bot_token": api.bot_token,
        "slack_signing_secret": SECRET,
        "slack_api_url": api.url,
        "approver_groups": GROUPS,
    }
    values.update(overrides)
    return test_settings(**values)


@pytest.fixture
async def api() -> AsyncIterator[SlackAPI]:
    async with SlackAPI(users=USERS, groups={OPS: [DAN]}) as stand_in:
        yield stand_in


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url, settings=slack_settings(api)) as harness:
        yield harness


@pytest.fixture
def slack(h: Harness, api: SlackAPI) -> Slack:
    return Slack(h.http, api)
