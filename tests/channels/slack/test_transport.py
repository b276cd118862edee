"""The wire: signatures, Slack's retries, what is ignored, rate limits, Socket Mode."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.errors import ConfigError
from bot.domain.events import UserMessage
from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import ANN, slack_settings
from tests.channels.slack.slack import CHANNEL, TEAM, Slack, has_buttons, sample, unreadable
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI


def thread_of(root_ts: str) -> str:
    return ids.thread_id_for("slack", f"{TEAM}:{CHANNEL}:{root_ts}")


async def user_messages(h: Harness, root_ts: str) -> list[UserMessage]:
    return [e for e in await h.rt.log.events(thread_of(root_ts)) if isinstance(e, UserMessage)]


@pytest.fixture
async def socket_h(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> AsyncIterator[Harness]:
    """A harness that hears Slack over Socket Mode only: no signing secret, so no HTTP
    endpoint for events."""
    settings = slack_settings(api, slack_signing_secret=None, slack_app_token=api.app_token)
    async with Harness(redis_server.url, settings=settings) as h:
        yield h


async def refused_envelope(
    api: SlackAPI, caplog: pytest.LogCaptureFixture, envelope: dict[str, Any]
) -> logging.LogRecord:
    """Push a Socket Mode ``envelope`` the app must refuse, and return the one line that
    says so: it is acknowledged all the same, or Slack would send it again."""
    with caplog.at_level(logging.WARNING, logger="channels.slack.events"):
        ack = await api.push(envelope)
    assert ack == {"envelope_id": envelope["envelope_id"]}
    (line,) = [r for r in caplog.records if envelope["envelope_id"] in r.getMessage()]
    assert "refused a Socket Mode events_api envelope" in line.getMessage()
    return line


async def test_a_retried_event_is_recorded_once(h: Harness, slack: Slack) -> None:
    payload = slack.mention_payload("deploy api 1.5.0 to production", ANN)
    first = await slack.event(payload)
    again = await slack.event(payload, retry=1)
    assert (first.status_code, again.status_code) == (200, 200)
    assert len(await user_messages(h, payload["event"]["ts"])) == 1


async def test_a_retry_whose_first_delivery_never_came_is_processed(
    h: Harness, slack: Slack
) -> None:
    payload = slack.mention_payload("deploy api 1.5.0 to production", ANN)
    r = await slack.event(payload, retry=2)
    assert r.status_code == 200
    (message,) = await user_messages(h, payload["event"]["ts"])
    assert message.text == "deploy api 1.5.0 to production" and message.by.id == ANN


async def test_bot_messages_edits_and_chatter_are_ignored_with_200(
    h: Harness, slack: Slack
) -> None:
    root = await slack.mention("deploy: list services", ANN)
    before = (await h.thread(thread_of(root))).version
    ignored: list[dict[str, Any]] = [sample("bot_message"), sample("message_changed")]
    for payload in ignored:
        payload["event"]["thread_ts"] = root
    own = slack.reply_payload("Done: api 1.4.1 -> 1.5.0", "U0BOT0001", root)
    own["event"]["bot_id"] = "B0BOT0001"
    chatter = slack.reply_payload("lunch?", ANN, root)
    del chatter["event"]["thread_ts"]  # a top-level message in the channel
    deleted = slack.reply_payload("", ANN, root)
    deleted["event"].update(subtype="message_deleted", deleted_ts=root)
    joined = sample("message_in_thread")
    joined["event"].update(subtype="channel_join", thread_ts=None)
    other = sample("app_mention")
    other["event"] = {
        "type": "reaction_added",
        "user": ANN,
        "reaction": "eyes",
        "item": {"type": "message", "channel": CHANNEL, "ts": root},
        "event_ts": "1718000010.000100",
    }

    for payload in [*ignored, own, chatter, deleted, joined, other]:
        r = await slack.event(payload)
        assert r.status_code == 200, (payload["event"], r.text)

    assert (await h.thread(thread_of(root))).version == before
    _ids, total = await h.rt.indexes.threads(offset=0, limit=50)
    assert total == 1


async def test_bad_signature_and_stale_timestamp_are_401(h: Harness, slack: Slack) -> None:
    payload = slack.mention_payload("deploy api 1.5.0 to production", ANN)
    forged = await slack.event(payload, secret="not-the-secret")
    stale = await slack.event(payload, timestamp=int(time.time()) - 600)
    assert (forged.status_code, stale.status_code) == (401, 401)
    _ids, total = await h.rt.indexes.threads(offset=0, limit=50)
    assert total == 0
    tampered = await slack.send(
        b'{"type":"event_callback"}', "application/json", timestamp=int(time.time()), secret="other"
    )
    assert tampered.status_code == 401


async def test_url_verification_answers_the_challenge(slack: Slack) -> None:
    r = await slack.event(
        {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    assert r.status_code == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in r.text


async def test_rate_limited_post_is_retried(h: Harness, api: SlackAPI, slack: Slack) -> None:
    api.fail_next("chat.postMessage", retry_after="0")
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    posts = api.calls_to("chat.postMessage")
    # The first post ("Working…") was refused with a 429 and sent again; then the card.
    assert len(posts) == 3 and posts[0].params == posts[1].params
    assert [m for m in api.messages.values() if m.get("thread_ts") == root and has_buttons(m)]


async def test_delivering_an_event_twice_posts_once(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    state = await h.thread(thread_of(root))
    asked = [e for e in await h.rt.log.events(state.id) if e.type == "approval_requested"]
    posts = len(api.calls_to("chat.postMessage"))

    (channel,) = [c for c in h.rt.channels if c.name == "slack"]
    await channel.deliver(state, asked[0])  # at-least-once: the outbox may hand it over again
    assert len(api.calls_to("chat.postMessage")) == posts


async def test_socket_mode(socket_h: Harness, api: SlackAPI) -> None:
    assert api.calls_to("apps.connections.open")[0].token == api.app_token
    payload = Slack(socket_h.http, api).mention_payload("deploy api 1.5.0 to production", ANN)
    ack = await api.push(
        {
            "envelope_id": "1d1c5c5a-6b1e-4c7a-9f3e-2b7c8d9e0f11",
            "type": "events_api",
            "payload": payload,
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
    )
    assert ack == {"envelope_id": "1d1c5c5a-6b1e-4c7a-9f3e-2b7c8d9e0f11"}
    (message,) = await user_messages(socket_h, payload["event"]["ts"])
    assert message.text == "deploy api 1.5.0 to production"
    # No signing secret: no HTTP endpoint to forge requests against.
    r = await socket_h.http.post("/slack/events", content=b"{}")
    assert r.status_code == 404


async def test_a_message_socket_mode_read_with_a_lone_surrogate_is_refused_as_over_http(
    socket_h: Harness, api: SlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # Over HTTP the body's reader refuses it (400); Socket Mode's client reads envelopes
    # with Python's json, which lets "\ud800" through, so each envelope is read again by
    # the same strict reader before it goes any further.
    payload = Slack(socket_h.http, api).mention_payload("deploy api 1.5.0 \ud800", ANN)
    envelope = {
        "envelope_id": "5e0c1f2a-8d3b-4e6f-a1b2-c3d4e5f60718",
        "type": "events_api",
        "payload": payload,
        "retry_attempt": 0,
    }
    # Handled (Slack need not send it again): nothing recorded, and why is logged.
    line = await refused_envelope(api, caplog, envelope)
    assert "not valid JSON" in line.getMessage()
    assert not await socket_h.rt.log.events(thread_of(payload["event"]["ts"]))
    _ids, total = await socket_h.rt.indexes.threads(offset=0, limit=50)
    assert total == 0 and api.calls_to("chat.postEphemeral") == []  # as over HTTP: a 400


async def test_socket_mode_envelopes_are_read_as_strictly_as_http_bodies(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    settings = slack_settings(
        api, slack_signing_secret=None, slack_app_token=api.app_token, max_body_bytes=20_000
    )
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        mention = slack.mention_payload("deploy api 1.5.0 to production", ANN)
        refused = unreadable(mention, 20_000)
        with caplog.at_level(logging.WARNING, logger="channels.slack.events"):
            for n, payload in enumerate(refused.values()):
                envelope = {"envelope_id": f"0c8e2f1a-{n:04d}", "type": "events_api"}
                ack = await api.push({**envelope, "payload": payload, "retry_attempt": 0})
                # Acknowledged, so Slack does not send it again; gone no further.
                assert ack == {"envelope_id": envelope["envelope_id"]}
        logged = [
            r.getMessage() for r in caplog.records if "refused a Socket Mode" in r.getMessage()
        ]
        assert len(logged) == len(refused), logged
        for line, why in zip(logged, refused, strict=True):
            assert why in line, (why, line)
        assert not await user_messages(h, mention["event"]["ts"])
        _ids, total = await h.rt.indexes.threads(offset=0, limit=50)
        assert total == 0 and api.calls_to("chat.postEphemeral") == []

        # The same mention, readable, on the same connection: heard.
        ok = {"envelope_id": "0c8e2f1a-9999", "type": "events_api", "payload": mention}
        assert await api.push(ok) == {"envelope_id": ok["envelope_id"]}
        (message,) = await user_messages(h, mention["event"]["ts"])
        assert message.text == "deploy api 1.5.0 to production"


async def test_a_double_click_is_one_decision(h: Harness, api: SlackAPI, slack: Slack) -> None:
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    (card,) = [k for k, m in api.messages.items() if m.get("thread_ts") == root]
    click = slack.click_payload(card, "gl_approve", "U0BOB0001")

    for _ in range(2):
        r = await slack.interact(click)
        assert r.status_code == 200
    events = await h.rt.log.events(thread_of(root))
    assert len([e for e in events if e.type == "approval_decision"]) == 1
    assert api.calls_to("chat.postEphemeral") == []  # the replay is silent


async def test_a_refused_token_stops_startup_with_the_reason(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_bot_token="xoxb-revoked")
    with pytest.raises(ConfigError, match="invalid_auth"):
        async with Harness(redis_server.url, settings=settings):
            pass


async def test_a_socket_mode_event_of_the_wrong_shape_is_refused_as_over_http(
    socket_h: Harness, api: SlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # Over HTTP a signed event whose fields have other types than Slack documents is a
    # 400 (``ingress.is_malformed``): Slack does not send it again, and no traceback.
    mention = Slack(socket_h.http, api).mention_payload("deploy api 1.5.0 to production", ANN)
    envelope = {
        "envelope_id": "7a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b",
        "type": "events_api",
        "payload": {**mention, "event": "app_mention"},
    }
    line = await refused_envelope(api, caplog, envelope)
    assert line.levelno == logging.WARNING and line.exc_info is None
    _ids, total = await socket_h.rt.indexes.threads(offset=0, limit=50)
    assert total == 0
