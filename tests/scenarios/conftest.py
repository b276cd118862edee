"""Fixtures of the end-to-end scenarios that several modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.models.anthropic import AnthropicModel
from tests.channels.email.provider import MailProvider
from tests.standins.anthropic_api import AnthropicAPI


@pytest.fixture
async def provider() -> AsyncIterator[MailProvider]:
    """A local SMTP server that records what the app sends (sign-in links)."""
    async with MailProvider() as p:
        yield p


@pytest.fixture
async def claude() -> AsyncIterator[tuple[AnthropicAPI, AnthropicModel]]:
    """The real Anthropic adapter, talking to the local Messages API stand-in."""
    async with AnthropicAPI() as api:
        model = AnthropicModel(api_key="sk-ant-test", model="claude-test", base_url=api.url)
        yield api, model
        await model.aclose()
