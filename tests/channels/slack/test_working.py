"""While an agent works, its Slack thread says so, once; the answer takes that place."""

from __future__ import annotations

import html
from typing import Any

from redis.asyncio import Redis

from bot.domain.errors import ModelError
from bot.domain.model import ModelCall, ModelRequest, ModelTurn
from bot.storage.embedded import EmbeddedRedis
from channels.slack.working import STATUS, TEXT
from tests.channels.slack.conftest import ANN, BOB, slack_settings
from tests.channels.slack.slack import Slack, has_buttons
from tests.channels.slack.test_flows import ask_for_approval, card_in, thread_of
from tests.doubles import ScriptedModel
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI


def in_thread(api: SlackAPI, root: str) -> list[str]:
    """The texts of the messages in a Slack thread now, unescaped."""
    return [html.unescape(m["text"]) for m in api.messages.values() if m.get("thread_ts") == root]


def posted(api: SlackAPI, text: str) -> int:
    return len([c for c in api.calls_to("chat.postMessage") if c.params.get("text") == text])


async def test_a_working_message_shows_during_the_step_and_the_answer_replaces_it(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    roots: list[str] = []
    seen: list[list[str]] = []

    def play(request: ModelRequest) -> list[ModelCall]:
        seen.append(in_thread(api, roots[0]))  # what the thread shows while the model thinks
        return [ModelCall("reply", {"text": "Nothing to deploy today.", "final": True})]

    model = ScriptedModel(play)
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        roots.append(await slack.mention("deploy: anything new?", ANN))
        await h.drain()

    assert seen == [[TEXT]]
    assert in_thread(api, roots[0]) == ["Nothing to deploy today."]
    assert posted(api, TEXT) == 1
    (update,) = api.calls_to("chat.update")  # the answer took the status message's place
    assert update.params["text"] == "Nothing to deploy today."
    assert posted(api, "Nothing to deploy today.") == 0


async def test_a_card_is_a_new_post_and_the_working_message_goes(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    assert posted(api, TEXT) == 1 and len(api.calls_to("chat.delete")) == 1
    assert TEXT not in in_thread(api, root) and has_buttons(api.messages[card])

    await slack.click(card, "gl_approve", BOB)  # the approval sets the agent to work again
    await h.drain()
    assert posted(api, TEXT) == 2
    (answer,) = [t for t in in_thread(api, root) if t != api.messages[card]["text"]]
    assert "-> 1.5.0 on production" in answer and TEXT not in in_thread(api, root)


async def test_errors_end_the_working_message(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    def fail(request: ModelRequest) -> list[ModelCall]:
        raise ModelError("the model is down")

    model = ScriptedModel(fail)
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy: anything new?", ANN)
        await h.drain()
        question = card_in(api, root)  # after 3 errors in a row a human is asked

    assert "needs help" in api.messages[question]["text"]
    assert posted(api, TEXT) == 1 and TEXT not in in_thread(api, root)
    assert len(api.calls_to("chat.delete")) == 1


async def test_an_assistant_shows_the_assistant_thread_status_in_a_dm(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_assistant=True)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        payload: dict[str, Any] = slack.reply_payload(
            "deploy: list services", ANN, "", channel="D0ANNDM01"
        )
        event = payload["event"]
        event.pop("thread_ts")
        event["channel_type"] = "im"
        root = str(event["ts"])
        api.assistant_threads.add(("D0ANNDM01", root))
        r = await slack.event(payload)
        assert r.status_code == 200
        await h.drain()

    statuses = [c.params["status"] for c in api.calls_to("assistant.threads.setStatus")]
    assert statuses == [STATUS, ""]  # set while it works, cleared with the answer
    assert posted(api, TEXT) == 0
    assert any("Running now" in t for t in in_thread(api, root))


class PausedMidTurn:
    """A model during whose turn an operator pauses the thread (over the REST API)."""

    name = "pausing"

    def __init__(self) -> None:
        self.h: Harness | None = None
        self.thread = ""

    async def complete(self, request: ModelRequest) -> ModelTurn:
        assert self.h is not None
        r = await self.h.api.post(f"/threads/{self.thread}/pause", json={"by": "ops"})
        assert r.status_code == 200, r.text
        return ModelTurn(calls=[ModelCall("reply", {"text": "too late", "final": True})])


async def test_a_pause_mid_turn_ends_the_working_message(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    model = PausedMidTurn()
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        model.h = h
        slack = Slack(h.http, api)
        payload = slack.mention_payload("deploy: anything new?", ANN)
        root = str(payload["event"]["ts"])
        model.thread = thread_of(root)
        assert (await slack.event(payload)).status_code == 200
        await h.drain()
        assert (await h.thread(thread_of(root))).status.value == "paused"

    assert posted(api, TEXT) == 1 and in_thread(api, root) == []
    assert len(api.calls_to("chat.delete")) == 1
