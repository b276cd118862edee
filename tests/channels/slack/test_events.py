"""Events API callbacks are decided in ``channels.slack.events``, without Bolt, over HTTP and
Socket Mode alike: the app's own events are ignored, people's are heard, the rest answered."""

from __future__ import annotations

import socket
from typing import Any

from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import ANN, BOB, slack_settings
from tests.channels.slack.slack import TEAM, Slack, home_of, publishes, sample
from tests.channels.slack.test_transport import user_messages
from tests.harness import Harness
from tests.standins.slack_api import BOT_USER, SlackAPI


def home_opened(user: str) -> dict[str, Any]:
    payload = sample("app_mention")
    payload["event"] = {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0HOME0001",
        "tab": "home",
        "event_ts": "1718000020.000100",
    }
    payload["event_id"] = f"Ev0HOME{user}"
    return payload


def envelope(kind: str, payload: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "envelope_id": f"5c5a1d1c-6b1e-4c7a-9f3e-2b7c8d9e0f{n:02d}",
        "type": kind,
        "payload": payload,
        "accepts_response_payload": kind != "events_api",
        "retry_attempt": 0,
        "retry_reason": "",
    }


async def test_the_apps_own_events_are_ignored_with_200(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    mine = slack.mention_payload("deploy api 1.5.0 to production", BOT_USER)
    r = await slack.event(mine)
    assert r.status_code == 200, r.text
    r = await slack.event(home_opened(BOT_USER))
    assert r.status_code == 200, r.text
    await slack.home_opened(BOB)

    await home_of(api, BOB)  # published after Slack's answer, as the app's own would be
    assert publishes(api, BOT_USER) == 0
    assert await h.rt.indexes.threads(offset=0, limit=10) == ([], 0)


async def test_socket_mode_events_skip_bolt_and_commands_still_reach_it(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_signing_secret=None, slack_app_token=api.app_token)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        mention = slack.mention_payload("deploy api 1.5.0 to production", ANN)
        for n, payload in enumerate([home_opened(BOT_USER), home_opened(BOB), mention]):
            sent = envelope("events_api", payload, n)
            assert await api.push(sent) == {"envelope_id": sent["envelope_id"]}
        await home_of(api, BOB)
        assert publishes(api, BOT_USER) == 0
        (message,) = await user_messages(h, mention["event"]["ts"])
        assert message.by.id == ANN

        command = {**sample("slash_command"), "text": "", "team_id": TEAM, "user_id": ANN}
        ack = await api.push(envelope("slash_commands", command, 9))
        assert "Start with an agent's name" in ack["payload"]["text"]


async def test_an_event_when_slack_cannot_say_who_the_app_is_is_a_500_slack_retries(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: Slack's API unreachable
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = slack_settings(api, slack_api_url=f"http://127.0.0.1:{port}/api/")
    async with Harness(redis_server.url, settings=settings) as h:  # serves all the same
        slack = Slack(h.http, api)
        r = await slack.event(slack.mention_payload("deploy api 1.5.0 to production", ANN))
        assert r.status_code == 500
        assert r.json()["error"] == "delivery_error" and "auth.test" in r.json()["detail"]
        assert await h.rt.indexes.threads(offset=0, limit=10) == ([], 0)
