"""``/greenlight`` is recorded before Slack has its answer; a worker posts its opening message.

Slack does not retry a slash command, so nothing may be lost after the answer: a
failure to record is a 500 (which Slack shows the person), a failed post is retried
like every delivery (and the person told, once, through the command's
``response_url``), and a post never stands without its thread.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from bot.domain.events import UserMessage
from bot.domain.reducer import Status, ThreadState
from tests.channels.slack.conftest import ANN
from tests.channels.slack.slack import CHANNEL, Slack, sample
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
    api.not_in_channel.add(CHANNEL)
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
