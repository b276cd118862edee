"""A message that names no agent: triaged in the worker (a default agent, the model's pick,
or the person asked with the list), never answered with a list of names at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.domain.errors import ConfigError
from bot.domain.events import AgentChosen, ThreadCreated
from bot.domain.triage import TRIAGE
from bot.models.anthropic import AnthropicModel
from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import ANN, slack_settings
from tests.channels.slack.slack import Slack
from tests.channels.slack.test_flows import replies_in, thread_of
from tests.harness import Harness
from tests.standins.anthropic_api import AnthropicAPI
from tests.standins.slack_api import SlackAPI


@pytest.fixture
async def claude() -> AsyncIterator[tuple[AnthropicAPI, AnthropicModel]]:
    async with AnthropicAPI() as api:
        model = AnthropicModel(api_key="sk-ant-test", model="claude-test", base_url=api.url)
        yield api, model
        await model.aclose()


async def chosen(h: Harness, root: str) -> list[AgentChosen]:
    return [e for e in await h.rt.log.events(thread_of(root)) if isinstance(e, AgentChosen)]


async def test_the_model_picks_the_agent_by_its_description(
    redis_server: EmbeddedRedis,
    redis: Redis,
    api: SlackAPI,
    claude: tuple[AnthropicAPI, AnthropicModel],
) -> None:
    anthropic, model = claude
    anthropic.push_tool_use([("choose_agent", {"agent": "refunds"})])
    anthropic.push_tool_use([("reply", {"text": "Which order?", "final": False})])
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("the customer was charged twice, please fix it", ANN)
        assert api.calls_to("chat.postEphemeral") == []  # no list of names any more
        await h.drain()

        (pick,) = await chosen(h, root)
        assert (pick.agent, pick.how) == ("refunds", "model")
        assert (await h.thread(thread_of(root))).agent == "refunds"
        assert "Which order?" in replies_in(api, root)
        listed, _ = await h.rt.indexes.threads(agent="refunds", offset=0, limit=10)
        assert listed == [thread_of(root)]  # listed under the agent chosen, no longer triage
        assert await h.rt.indexes.threads(agent=TRIAGE, offset=0, limit=10) == ([], 0)

    triage, turn = anthropic.requests
    (tool,) = triage.body["tools"]
    assert tool["name"] == "choose_agent"
    assert tool["input_schema"]["properties"]["agent"]["enum"] == ["deploy", "refunds", "none"]
    said = str(triage.body["messages"])
    assert "charged twice" in said and "refunds them" in said  # the message, the descriptions
    assert turn.body["tools"][0]["name"] != "choose_agent"  # then the refunds agent itself


async def test_no_agent_fits_so_the_person_is_asked_and_their_reply_picks_it(
    redis_server: EmbeddedRedis,
    redis: Redis,
    api: SlackAPI,
    claude: tuple[AnthropicAPI, AnthropicModel],
) -> None:
    anthropic, model = claude
    anthropic.push_tool_use([("choose_agent", {"agent": "none"})])
    anthropic.push_tool_use([("reply", {"text": "Deploying what?", "final": False})])
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("hello there", ANN)
        await h.drain()

        (asked,) = replies_in(api, root)
        assert asked.startswith("Which agent is this for?")
        assert "deploy: Deploys and rolls back services" in asked and "refunds:" in asked
        state = await h.thread(thread_of(root))
        assert state.agent == TRIAGE and await chosen(h, root) == []

        await slack.reply("deploy please", ANN, root)
        await h.drain()
        (pick,) = await chosen(h, root)
        assert (pick.agent, pick.how) == ("deploy", "named")  # named: no second triage call
        assert replies_in(api, root)[-1] == "Deploying what?"
    assert len(anthropic.requests) == 2


async def test_the_model_failing_falls_back_to_the_list(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    # The offline model has no script for triage: a model error, and the person is asked.
    root = await slack.mention("hello there", ANN)
    await h.drain()
    assert replies_in(api, root)[0].startswith("Which agent is this for?")


async def test_a_default_agent_takes_what_names_none_without_a_model_call(
    redis_server: EmbeddedRedis,
    redis: Redis,
    api: SlackAPI,
    claude: tuple[AnthropicAPI, AnthropicModel],
) -> None:
    anthropic, model = claude
    anthropic.push_tool_use([("reply", {"text": "On it.", "final": True})])
    settings = slack_settings(api, default_agent="deploy")
    async with Harness(redis_server.url, settings=settings, model=model) as h:
        slack = Slack(h.http, api)
        r = await slack.command("please list the services", ANN)
        assert r.status_code == 200 and not r.content
        (tid,) = (await h.rt.indexes.threads(offset=0, limit=10))[0]
        created = (await h.rt.log.events(tid))[0]
        assert isinstance(created, ThreadCreated) and created.agent == "deploy"
        await h.drain()
        # Posted once recorded: it names the agent the thread went to.
        intro = api.calls_to("chat.postMessage")[0]
        assert intro.params["text"].endswith("asked the *deploy* agent: please list the services")
        root = next(ts for (_, ts), m in api.messages.items() if m["text"] == intro.params["text"])
        assert "On it." in replies_in(api, root)
    (only,) = anthropic.requests
    assert only.body["tools"][0]["name"] != "choose_agent"


async def test_a_default_agent_that_is_no_agent_stops_start_up(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, default_agent="deploi")
    with pytest.raises(ConfigError, match="DEFAULT_AGENT 'deploi' is no agent; known: deploy"):
        async with Harness(redis_server.url, settings=settings):
            pass
