"""``/greenlight`` is recorded before Slack has its answer; a worker posts its opening message.

Slack does not retry a slash command, so nothing may be lost after the answer: a
failure to record is a 500 (which Slack shows the person), a failed post is retried
like every delivery (and the person told, once, through the command's
``response_url``), and a post never stands without its thread.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from bot.domain.events import UserMessage
from bot.domain.reducer import Status, ThreadState
from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import ANN, BOB, slack_settings
from tests.channels.slack.slack import CHANNEL, Slack, sample, text_of
from tests.channels.slack.test_cards import APPROVALS, cards_in
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI


async def only_thread(h: Harness) -> ThreadState:
    (tid,) = (await h.rt.indexes.threads(offset=0, limit=10))[0]
    return await h.thread(tid)


def posted_in(api: SlackAPI, channel: str) -> list[dict[str, object]]:
    return [m for (ch, _ts), m in api.messages.items() if ch == channel]


@asynccontextmanager
async def redis_refusing_writes(redis: Redis) -> AsyncIterator[None]:
    """Redis out of memory for a while: every write is refused, reads still work."""
    before = await redis.config_get("maxmemory*")
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        yield
    finally:
        await redis.config_set("maxmemory", before["maxmemory"])
        await redis.config_set("maxmemory-policy", before["maxmemory-policy"])


async def test_the_command_is_recorded_before_its_answer_and_posted_by_a_worker(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 200 and not r.content
    state = await only_thread(h)  # recorded before Slack had its answer
    (message,) = [e for e in await h.rt.log.events(state.id) if isinstance(e, UserMessage)]
    assert message.text == "deploy: list services" and message.by.id == ANN
    assert api.calls_to("chat.postMessage") == []  # the post is the worker's

    await h.drain()
    intro = api.calls_to("chat.postMessage")[0]
    assert intro.params["channel"] == CHANNEL
    assert f"<@{ANN}> asked the *deploy* agent: deploy: list services" in str(intro.params["text"])
    assert api.responses == []  # nothing went wrong: nothing to say privately


async def test_a_channel_the_app_may_not_post_in_cancels_the_command_and_says_so_privately(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    api.refusing[CHANNEL] = "not_in_channel"
    r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 200
    await h.drain()

    (response,) = api.responses
    assert response["response_type"] == "ephemeral"
    assert "not_in_channel" in str(response["text"]) and "/invite" in str(response["text"])
    assert (await only_thread(h)).status is Status.CANCELLED  # the agent never runs
    assert posted_in(api, CHANNEL) == []
    await h.drain()
    assert len(api.responses) == 1


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("restricted_action_read_only_channel", "in a channel where I may post"),
        ("is_archived", "in a channel where I may post"),
        ("channel_not_found", "`/invite @Greenlight`"),
        ("ekm_access_denied", "in a channel where I may post"),
    ],
)
async def test_a_channel_slack_will_never_take_the_post_in_cancels_the_command_at_once(
    h: Harness, api: SlackAPI, slack: Slack, error: str, hint: str
) -> None:
    api.refusing[CHANNEL] = error  # an announcement channel, an archived one, ...
    r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 200
    await h.drain()

    (response,) = api.responses  # told at once, as before the command was recorded first
    assert f"I can't post here ({error}), so I cancelled your request" in response["text"]
    assert hint in str(response["text"])
    assert (await only_thread(h)).status is Status.CANCELLED  # the agent never runs
    await h.drain()
    assert len(api.calls_to("chat.postMessage")) == 1  # never tried again
    assert len(api.responses) == 1


@pytest.mark.parametrize(
    ("error", "told"),
    [
        ("invalid_auth", "my Slack app needs fixing by whoever runs Greenlight"),
        ("token_revoked", "my Slack app needs fixing by whoever runs Greenlight"),
        ("missing_scope", "my Slack app needs fixing by whoever runs Greenlight"),
        ("not_allowed_token_type", "my Slack app needs fixing by whoever runs Greenlight"),
        ("msg_too_long", "Slack refused my post (msg_too_long)"),
        ("an_error_slack_adds_one_day", "Slack refused my post (an_error_slack_adds_one_day)"),
    ],
)
async def test_a_post_the_app_can_never_make_cancels_the_command_and_is_logged_as_an_error(
    h: Harness,
    api: SlackAPI,
    slack: Slack,
    *,
    caplog: pytest.LogCaptureFixture,
    error: str,
    told: str,
) -> None:
    api.refusing[CHANNEL] = error  # the app's token or scopes, or the message itself
    await slack.command("deploy: list services", ANN)
    await h.drain()

    (response,) = api.responses
    assert told in str(response["text"]) and "cancelled your request" in str(response["text"])
    assert (await only_thread(h)).status is Status.CANCELLED
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]  # for the operator
    assert error in line.getMessage() and "opening post" in line.getMessage()
    await h.drain()
    assert len(api.calls_to("chat.postMessage")) == 1


async def test_an_opening_post_slack_fails_is_retried_and_the_person_told_once(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    api.fail_next("chat.postMessage", status=500, times=2)  # Slack has a bad minute
    r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 200

    async def posted() -> list[dict[str, object]]:
        await h.drain()  # the outbox's retries come due
        return [m for m in posted_in(api, CHANNEL) if "asked the" in str(m.get("text"))]

    (intro,) = await h.wait_for(posted)
    (told,) = api.responses  # once, though it failed twice
    assert "Slack did not take my post just now" in str(told["text"])
    assert "Your request is recorded" in str(told["text"])

    async def answered() -> list[dict[str, object]]:
        await h.drain()
        return [m for m in api.messages.values() if m.get("thread_ts") == intro["ts"]]

    assert await h.wait_for(answered)  # the agent's answer, under the opening post
    assert (await only_thread(h)).status is not Status.CANCELLED


async def test_a_command_redis_cannot_record_is_a_500_and_nothing_is_posted(
    h: Harness, api: SlackAPI, slack: Slack, redis: Redis
) -> None:
    async with redis_refusing_writes(redis):
        r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 500  # Slack shows the person the command failed
    await h.drain()
    assert await h.rt.indexes.threads(offset=0, limit=10) == ([], 0)
    assert api.calls_to("chat.postMessage") == [] and api.responses == []


async def test_a_command_without_a_trigger_id_is_refused_as_malformed(
    h: Harness, slack: Slack
) -> None:
    form = {**sample("slash_command"), "text": "deploy: list services", "trigger_id": ""}
    r = await slack.send(urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded")
    assert r.status_code == 400 and "trigger_id" in r.text
    assert await h.rt.indexes.threads(offset=0, limit=10) == ([], 0)


async def test_a_card_for_the_approvals_channel_does_not_wait_for_a_late_opening_post(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        api.refusing[CHANNEL] = "service_unavailable"  # Slack has a bad hour in that channel
        await slack.command("deploy api 1.5.0 to production", ANN)
        await h.drain()

        (card,) = cards_in(api, APPROVALS)  # at once: the approvers need not wait
        assert f"<#{CHANNEL}>" in text_of(api.messages[card])  # where it was asked
        assert posted_in(api, CHANNEL) == []
        (told,) = api.responses
        assert "Slack did not take my post just now (service_unavailable)" in str(told["text"])

        del api.refusing[CHANNEL]  # the opening post goes through; the note follows it

        async def noted() -> list[dict[str, object]]:
            await h.drain()  # the outbox's retries come due
            return [m for m in posted_in(api, CHANNEL) if "Waiting for approval" in str(m)]

        (note,) = await h.wait_for(noted)
        (intro,) = [m for m in posted_in(api, CHANNEL) if "asked the" in str(m.get("text"))]
        assert note["thread_ts"] == intro["ts"]

        await slack.click(card, "gl_approve", BOB)

        async def answered() -> list[dict[str, object]]:
            await h.drain()
            return [m for m in posted_in(api, CHANNEL) if "1.5.0 on production" in str(m)]

        (answer,) = await h.wait_for(answered)
        assert answer["thread_ts"] == intro["ts"]  # the conversation lives under it


async def approved_while_the_opening_post_is_late(h: Harness, api: SlackAPI) -> str:
    """A /greenlight whose opening post Slack fails to take for now, and its card in the
    approvals channel approved meanwhile: the card's ts."""
    slack = Slack(h.http, api)
    api.refusing[CHANNEL] = "internal_error"
    await slack.command("deploy api 1.5.0 to production", ANN)
    await h.drain()
    (card,) = cards_in(api, APPROVALS)
    await slack.click(card, "gl_approve", BOB)
    return card


async def test_a_card_decided_before_the_late_opening_post_leaves_no_waiting_note(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        card = await approved_while_the_opening_post_is_late(h, api)
        await h.drain()
        assert f"*Approved* by <@{BOB}>" in text_of(api.messages[card])

        del api.refusing[CHANNEL]

        async def answered() -> list[dict[str, object]]:
            await h.drain()
            return [m for m in posted_in(api, CHANNEL) if "1.5.0 on production" in str(m)]

        (answer,) = await h.wait_for(answered)
        (intro,) = [m for m in posted_in(api, CHANNEL) if "asked the" in str(m.get("text"))]
        assert answer["thread_ts"] == intro["ts"]
        assert not [m for m in posted_in(api, CHANNEL) if "Waiting for approval" in str(m)]


async def test_a_post_refused_after_its_card_was_decided_cancels_nothing(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    # The opening post failed for a while, the card in the approvals channel was decided
    # and the deploy ran; then Slack refuses the post for good. Cancelled then, the person
    # would type the command again and the deploy would run twice.
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        await approved_while_the_opening_post_is_late(h, api)
        api.refusing[CHANNEL] = "not_in_channel"

        async def refused() -> list[str]:  # what the person is told after "I'll keep trying"
            await h.drain()
            return [str(r["text"]) for r in api.responses[1:]]

        told = await h.wait_for(refused)
        assert any("your request goes on, but not here" in t for t in told), told
        assert not any("cancelled" in t for t in told), told
        assert (await only_thread(h)).status is Status.DONE
