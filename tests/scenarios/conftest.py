"""Fixtures of the end-to-end scenarios that several modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.channels.email.provider import MailProvider


@pytest.fixture
async def provider() -> AsyncIterator[MailProvider]:
    """A local SMTP server that records what the app sends (sign-in links)."""
    async with MailProvider() as p:
        yield p
