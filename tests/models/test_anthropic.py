"""The Anthropic adapter, through the real SDK, against the local Messages API stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.domain.errors import ModelError
from bot.domain.model import Block, ModelCall, ModelRequest, ToolSpec
from bot.models.anthropic import AnthropicModel
from tests.standins.anthropic_api import AnthropicAPI

KEY = "sk-ant-test-0123456789-secret"
DEPLOY = ToolSpec(
    name="deploy",
    description="Deploy a service.",
    input_schema={
        "type": "object",
        "properties": {"service": {"type": "string"}, "version": {"type": "string"}},
        "required": ["service", "version"],
    },
)
REPLY = ToolSpec(
    name="reply",
    description="Say something to the user.",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
)
REQUEST = ModelRequest(
    agent="deployer",
    system="You deploy services.",
    blocks=[Block("user_message", "deploy web 1.2", {"user": "ada"})],
    tools=[DEPLOY, REPLY],
)


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads these itself; a developer's shell must not change what the tests send.
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def api() -> AsyncIterator[AnthropicAPI]:
    async with AnthropicAPI() as server:
        yield server


@pytest.fixture
async def model(api: AnthropicAPI) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel(api_key=KEY, model="claude-test", base_url=api.url, max_retries=2)
    yield model
    await model.aclose()


async def test_request_carries_thread_system_and_cached_tools(
    api: AnthropicAPI, model: AnthropicModel
) -> None:
    api.push_tool_use([("reply", {"text": "on it"})])

    await model.complete(REQUEST)

    [sent] = api.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # how SDK 2.x sends an API key
    assert sent.body["model"] == "claude-test"
    assert sent.body["max_tokens"] == 1024
    assert sent.body["messages"] == [{"role": "user", "content": REQUEST.context_text()}]
    assert sent.body["system"] == [
        {"type": "text", "text": "You deploy services.", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent.body["tools"] == [
        {"name": "deploy", "description": "Deploy a service.", "input_schema": DEPLOY.input_schema},
        {
            "name": "reply",
            "description": "Say something to the user.",
            "input_schema": REPLY.input_schema,
            "cache_control": {"type": "ephemeral"},
        },
    ]
    assert sent.body["tool_choice"] == {"type": "any"}


async def test_every_tool_use_block_becomes_a_call(
    api: AnthropicAPI, model: AnthropicModel
) -> None:
    api.push_tool_use(
        [("deploy", {"service": "web", "version": "1.2"}), ("reply", {"text": "deploying"})],
        text="Let me do that.",
    )

    turn = await model.complete(REQUEST)

    assert turn.calls == [
        ModelCall("deploy", {"service": "web", "version": "1.2"}, "toolu_standin_0001"),
        ModelCall("reply", {"text": "deploying"}, "toolu_standin_0002"),
    ]


@pytest.mark.parametrize("status", [429, 529])
async def test_rate_limit_and_overload_are_retried(
    api: AnthropicAPI, model: AnthropicModel, status: int
) -> None:
    api.push_error(status)
    api.push_tool_use([("reply", {"text": "hi"})])

    turn = await model.complete(REQUEST)

    assert [call.name for call in turn.calls] == ["reply"]
    first, retry = api.requests
    assert retry.headers["x-stainless-retry-count"] == "1"
    assert retry.body == first.body


async def test_persistent_server_error_ends_in_model_error(
    api: AnthropicAPI, model: AnthropicModel
) -> None:
    for _ in range(3):
        api.push_error(500, message="boom")

    with pytest.raises(ModelError, match="HTTP 500") as raised:
        await model.complete(REQUEST)

    assert len(api.requests) == 3  # max_retries=2, plus the first attempt
    assert KEY not in str(raised.value)
    assert KEY not in repr(raised.value.detail)


async def test_client_error_is_not_retried(api: AnthropicAPI, model: AnthropicModel) -> None:
    api.push_error(400, message="tools.0.input_schema: invalid")

    with pytest.raises(ModelError, match=r"invalid_request_error.*tools\.0\.input_schema"):
        await model.complete(REQUEST)

    assert len(api.requests) == 1


async def test_text_only_answer_is_a_model_error(api: AnthropicAPI, model: AnthropicModel) -> None:
    api.push_text("Sure, I will deploy it.")

    with pytest.raises(ModelError, match="without a tool call") as raised:
        await model.complete(REQUEST)

    assert KEY not in str(raised.value)


async def test_timeout_ends_in_model_error(api: AnthropicAPI) -> None:
    api.push_stall()
    model = AnthropicModel(
        api_key=KEY, model="claude-test", base_url=api.url, timeout=0.2, max_retries=0
    )

    try:
        with pytest.raises(ModelError, match=r"timed out after 0\.2 s"):
            await model.complete(REQUEST)
    finally:
        await model.aclose()


async def test_base_url_comes_from_the_environment_when_not_given(
    api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    api.push_tool_use([("reply", {"text": "hi"})])
    model = AnthropicModel(api_key=KEY, model="claude-test")

    try:
        await model.complete(REQUEST)
    finally:
        await model.aclose()

    assert len(api.requests) == 1
