"""The pages' guard: sign-in required, fail closed without SESSION_SECRET, identities matched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends
from redis.asyncio import Redis

from bot.domain.errors import ConfigError
from bot.storage.embedded import EmbeddedRedis
from bot.web.app import _check_signed_in
from bot.web.session import Viewer, signed_in
from bot.web.signin import SignInConfig
from tests.channels.email.provider import MailProvider
from tests.harness import Harness
from tests.signin import sign_in, signin_settings
from tests.standins.slack_api import SlackAPI, SlackUser

BOB, CAROL = "U0BOB0001", "U0CAROL01"
USERS = [SlackUser(BOB, "bob", "bob@example.test"), SlackUser(CAROL, "carol", "carol@example.test")]


@pytest.fixture
async def api() -> AsyncIterator[SlackAPI]:
    async with SlackAPI(users=USERS) as stand_in:
        yield stand_in


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, api: SlackAPI
) -> AsyncIterator[Harness]:
    settings = signin_settings(
        provider,
        api,
        approver_groups={"deployers": ["bob@example.test", f"slack:{CAROL}"], "finance": ["bob"]},
        admins=["bob@example.test"],
        signin_email_domains=["example.test"],
    )
    async with Harness(redis_server.url, settings=settings) as h:
        yield h


async def test_a_page_sends_whoever_is_not_signed_in_to_the_sign_in_page(h: Harness) -> None:
    page = await h.http.get("/account?tab=slack")
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=%2Faccount%3Ftab%3Dslack"
    form = await h.http.get(page.headers["location"])
    assert form.status_code == 200
    assert 'name="next" value="/account?tab=slack"' in form.text
    assert (await h.http.post("/signout")).status_code == 401


async def test_the_signed_in_person_is_matched_to_their_slack_user(
    h: Harness, provider: MailProvider, api: SlackAPI
) -> None:
    web = await sign_in(h, provider, "Carol@example.test")
    page = (await web.get("/account")).text
    assert "carol@example.test" in page
    assert f"<li>slack:{CAROL}</li>" in page
    assert "Admin</dt>\n  <dd>no" in page
    (call,) = api.calls_to("users.lookupByEmail")
    assert call.params["email"] == "carol@example.test"
    again = await sign_in(h, provider, "carol@example.test")
    assert f"<li>slack:{CAROL}</li>" in (await again.get("/account")).text
    assert len(api.calls_to("users.lookupByEmail")) == 1  # kept for a while


async def test_an_admin_is_named_in_admins(h: Harness, provider: MailProvider) -> None:
    web = await sign_in(h, provider, "bob@example.test")
    page = await web.get("/account")
    assert "bob@example.test</strong> (admin)" in page.text
    assert f"<li>slack:{BOB}</li>" in page.text


async def test_a_failed_slack_look_up_signs_in_by_email_alone(
    h: Harness, provider: MailProvider, api: SlackAPI
) -> None:
    api.fail_next("users.lookupByEmail", status=500, times=5)
    web = await sign_in(h, provider, "bob@example.test")
    page = await web.get("/account")
    assert page.status_code == 200
    assert "nobody else" in page.text


async def test_without_a_session_secret_no_sign_in_or_page_route_exists(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    settings = signin_settings(provider, session_secret=None)
    async with Harness(redis_server.url, settings=settings) as h:
        for path in ("/signin", "/account", "/signin/link/abc"):
            assert (await h.http.get(path)).status_code == 404
        assert (await h.http.post("/signin/email", data={"email": "x@y.z"})).status_code == 404
        assert (await h.http.post("/signout")).status_code == 404
        assert "set-cookie" not in (await h.http.get("/healthz")).headers
        assert (await h.http.get("/static/inbox.css")).status_code == 200


async def test_pages_are_served_with_an_https_only_cookie_behind_https(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    settings = signin_settings(provider, public_url="https://greenlight.example.test")
    async with Harness(redis_server.url, settings=settings) as h:
        cookie = (await h.http.get("/signin")).headers["set-cookie"].lower()
        assert "; secure" in cookie
        assert "httponly" in cookie
        assert "samesite=lax" in cookie


def test_a_short_session_secret_stops_the_start(provider: MailProvider) -> None:
    with pytest.raises(ConfigError, match="SESSION_SECRET is 6 characters: use at least 32"):
        SignInConfig.from_settings(signin_settings(provider, session_secret="secret"))


def test_a_page_route_without_sign_in_stops_the_app_being_built() -> None:
    forgot = APIRouter()

    @forgot.get("/forgotten")
    async def forgotten() -> None: ...

    guarded = APIRouter()

    @guarded.get("/guarded")
    async def fine(viewer: Annotated[Viewer, Depends(signed_in)]) -> None: ...

    @guarded.get("/signin/elsewhere")
    async def open_to_all() -> None: ...

    _check_signed_in([guarded])
    with pytest.raises(ConfigError, match="/forgotten does not depend on signed_in"):
        _check_signed_in([guarded, forgot])
