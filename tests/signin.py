"""Signing in to the pages in tests, the way a person does: by an emailed link.

    async with MailProvider() as provider:
        async with Harness(redis_server.url, settings=signin_settings(provider)) as h:
            web = await sign_in(h, provider, OPS)      # an httpx client with the session
            page = await web.get("/inbox")
            await web.post("/signout", data={"csrf": await csrf_of(web)})

``sign_in`` asks for a link on ``/signin``, reads it from the email the app sent
to the local SMTP sink, opens it and presses its page's button: the real sign-in
path, nothing set by hand. ``link_for`` gives the link alone (for a browser to
open), ``open_link`` opens one and presses the button.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from bot.settings import Settings
from tests.channels.email.helpers import OPS, email_settings
from tests.channels.email.provider import MailProvider
from tests.channels.slack.slack import SECRET
from tests.harness import Harness, eventually
from tests.standins.slack_api import SlackAPI

SESSION_SECRET = "test-session-secret-0123456789abcdef"
LINK = re.compile(r"https?://\S+?(/signin/link/[A-Za-z0-9_-]+)")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_TOKEN = re.compile(r'name="token" value="([^"]+)"')

__all__ = [
    "OPS",
    "SESSION_SECRET",
    "csrf_of",
    "link_for",
    "open_link",
    "sign_in",
    "signin_settings",
]


def signin_settings(
    provider: MailProvider, slack: SlackAPI | None = None, **overrides: Any
) -> Settings:
    """Settings with the email channel and sessions on (``OPS`` may sign in: a deployer);
    with ``slack``, the Slack channel too, on that stand-in (requests signed with ``SECRET``)."""
    if slack is not None:
        overrides = {
            "slack_bot_token": slack.bot_token,
            "slack_signing_secret": SECRET,
            "slack_api_url": slack.url,
            **overrides,
        }
    return email_settings(provider, **{"session_secret": SESSION_SECRET, **overrides})


async def csrf_of(client: httpx.AsyncClient, path: str = "/signin") -> str:
    """The CSRF token of ``client``'s session, read from a page's form."""
    page = await client.get(path)
    found = _CSRF.search(page.text)
    assert found, f"no CSRF field on {path} ({page.status_code})"
    return found.group(1)


async def link_for(
    client: httpx.AsyncClient, provider: MailProvider, email: str, next: str | None = None
) -> str:
    """Ask for a sign-in link for ``email`` and return its path, read from the email sent."""
    to = email.strip().lower()  # the app writes to the address as it signs it in
    before = len(provider.to(to))
    data = {"email": email, "csrf": await csrf_of(client)}
    if next is not None:
        data["next"] = next
    asked = await client.post("/signin/email", data=data)
    assert asked.status_code == 303, asked.text

    async def arrived() -> str | None:
        sent = provider.to(to)
        if len(sent) <= before:
            return None
        found = LINK.search(sent[-1].text)
        assert found, f"no sign-in link in: {sent[-1].text}"
        return found.group(1)

    return await eventually(arrived)


async def sign_in(
    h: Harness, provider: MailProvider, email: str, client: httpx.AsyncClient | None = None
) -> httpx.AsyncClient:
    """A client of ``h`` signed in as ``email`` by an emailed link.

    Without ``client``, a new one, closed with the harness.
    """
    web = client
    if web is None:
        web = httpx.AsyncClient(base_url=h.url, timeout=10)
        h._stack.push_async_callback(web.aclose)
    path = await link_for(web, provider, email)
    opened = await open_link(web, path)
    assert opened.status_code == 303, opened.text
    return web


async def open_link(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """Open an emailed link's page and press its button, as a person does; the answer to
    the press (a 303 once signed in)."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    csrf, token = _CSRF.search(page.text), _TOKEN.search(page.text)
    assert csrf and token, f"no sign-in button on {path}: {page.text}"
    return await client.post("/signin/link", data={"csrf": csrf.group(1), "token": token.group(1)})
