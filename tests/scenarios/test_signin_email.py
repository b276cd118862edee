"""Signing in to the pages by an emailed link, through real HTTP and real SMTP."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage.embedded import EmbeddedRedis
from tests.channels.email.provider import MailProvider
from tests.harness import Harness
from tests.signin import (
    OPS,
    SESSION_SECRET,
    csrf_of,
    link_for,
    open_link,
    sign_in,
    signin_settings,
)

FIN = "fin@example.test"
STRANGER = "stranger@example.test"


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, clock: ManualClock
) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url, settings=signin_settings(provider), clock=clock) as h:
        yield h


@pytest.fixture
async def web(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as client:
        yield client


async def whoami(web: httpx.AsyncClient) -> str | None:
    """The address the sign-in page's navigation shows, None when nobody is signed in."""
    page = await web.get("/signin")
    if "Signed in as" not in page.text:
        return None
    return page.text.split("Signed in as <strong>")[1].split("</strong>")[0]


async def test_the_emailed_link_signs_in_and_leads_where_the_person_was_going(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    path = await link_for(web, provider, OPS, next="/inbox?agent=deploy")
    mail = provider.last_to(OPS)
    assert mail["Subject"] == "Your Greenlight sign-in link"
    assert "15 minutes" in mail.text
    opened = await open_link(web, path)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/inbox?agent=deploy"
    assert await whoami(web) == OPS


async def test_a_link_works_once(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    path = await link_for(web, provider, OPS)
    assert (await open_link(web, path)).status_code == 303
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as other:
        again = await other.get(path)
        assert again.status_code == 400
        assert "expired or was already used" in again.text
        # Its button, pressed again (a page opened before, a second tab): refused too.
        button = {"csrf": await csrf_of(other), "token": path.rsplit("/", 1)[1]}
        pressed = await other.post("/signin/link", data=button)
        assert pressed.status_code == 400
        assert "expired or was already used" in pressed.text
        assert await whoami(other) is None


async def test_opening_a_link_uses_nothing_up_and_signs_nobody_in(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    # A mail scanner (Safe Links, Proofpoint) opens every link before the person does.
    path = await link_for(web, provider, OPS, next="/account")
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as scanner:
        for _ in range(2):
            page = await scanner.get(path)
            assert page.status_code == 200
            assert f"as <strong>{OPS}</strong>" in page.text
            assert '<button type="submit">Sign in</button>' in page.text
        assert await whoami(scanner) is None
        assert (await scanner.get("/account")).status_code == 303  # off to /signin
        # The person, later, in their own browser: the link still works, once.
        opened = await open_link(web, path)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/account"
        assert await whoami(web) == OPS
        assert (await scanner.get(path)).status_code == 400
        assert await whoami(scanner) is None


async def test_the_button_needs_the_pages_csrf_token(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    # Another site posting a link of its own into this browser (login CSRF) signs nobody in.
    path = await link_for(web, provider, OPS)
    token = path.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as victim:
        await victim.get("/signin")
        for forged in ({"token": token}, {"token": token, "csrf": "forged"}):
            assert (await victim.post("/signin/link", data=forged)).status_code == 403
        assert await whoami(victim) is None
    assert (await open_link(web, path)).status_code == 303  # and it did not use the link up


async def test_an_expired_link_is_refused(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient, clock: ManualClock
) -> None:
    path = await link_for(web, provider, OPS)
    page = await web.get(path)  # opened in time, its button pressed too late
    assert page.status_code == 200
    clock.advance(15 * 60 + 1)
    button = {"csrf": await csrf_of(web), "token": path.rsplit("/", 1)[1]}
    assert (await web.post("/signin/link", data=button)).status_code == 400
    assert (await web.get(path)).status_code == 400
    assert await whoami(web) is None


async def test_a_link_signs_in_only_the_address_it_was_sent_to(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    ops_link = await link_for(web, provider, OPS)
    fin_link = await link_for(web, provider, FIN)
    assert ops_link != fin_link
    assert (await open_link(web, fin_link)).status_code == 303
    assert await whoami(web) == FIN
    # FIN's browser, holding OPS's link: it signs in OPS (whose link it is), and then
    # neither link works again, in any browser.
    assert (await open_link(web, ops_link)).status_code == 303
    assert await whoami(web) == OPS
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as other:
        for path in (ops_link, fin_link):
            assert (await other.get(path)).status_code == 400
        assert await whoami(other) is None


async def test_every_address_gets_the_same_answer_and_only_known_ones_get_mail(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    answers = []
    for address in (OPS, STRANGER):
        csrf = await csrf_of(web)
        r = await web.post("/signin/email", data={"email": address, "csrf": csrf})
        answers.append((r.status_code, r.headers["location"], r.text))
    assert answers[0] == answers[1]
    await h.wait_for(lambda: _async(provider.to(OPS)))
    assert provider.to(STRANGER) == []


async def test_links_to_one_address_are_rate_limited(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    for _ in range(5):
        await link_for(web, provider, OPS)
    csrf = await csrf_of(web)
    r = await web.post("/signin/email", data={"email": OPS, "csrf": csrf})
    assert r.status_code == 303  # the same answer...
    await link_for(web, provider, FIN)  # ...and mail that was sent after it has arrived
    assert len(provider.to(OPS)) == 5  # ...but no sixth email


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    await web.get("/signin")
    r = await web.post("/signin/email", data={"email": OPS})
    assert r.status_code == 403
    r = await web.post("/signin/email", data={"email": OPS, "csrf": "forged"})
    assert r.status_code == 403
    signed = await sign_in(h, provider, FIN, client=web)
    assert (await signed.post("/signout", data={"csrf": "forged"})).status_code == 403
    assert (await signed.post("/signout")).status_code == 403
    assert await whoami(signed) == FIN
    out = await signed.post("/signout", headers={"X-CSRF-Token": await csrf_of(signed)})
    assert out.status_code == 303
    assert await whoami(signed) is None
    assert len(provider.to(OPS)) == 0


async def test_the_session_cookie_is_httponly_lax_and_bounded(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient, clock: ManualClock
) -> None:
    path = await link_for(web, provider, OPS)
    opened = await open_link(web, path)
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith("greenlight_session=")
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    assert "max-age=43200" in cookie.lower()
    assert "secure" not in cookie.lower()  # PUBLIC_URL is http here
    assert SESSION_SECRET not in cookie
    clock.advance(43_200 + 1)
    assert await whoami(web) is None


async def test_signing_out_needs_a_session_and_ends_it(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    csrf = await csrf_of(web)
    assert (await web.post("/signout", data={"csrf": csrf})).status_code == 401
    await sign_in(h, provider, OPS, client=web)
    out = await web.post("/signout", data={"csrf": await csrf_of(web)})
    assert out.status_code == 303
    assert out.headers["location"] == "/signin"
    assert await whoami(web) is None


async def test_signing_out_signs_out_every_copy_of_the_cookie(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient
) -> None:
    await sign_in(h, provider, OPS, client=web)
    async with httpx.AsyncClient(base_url=h.url, timeout=10, cookies=web.cookies) as copy:
        assert (await copy.get("/inbox")).status_code == 200  # a copy works before...
        assert await whoami(copy) == OPS
        out = await web.post("/signout", data={"csrf": await csrf_of(web)})
        assert out.status_code == 303
        kept = await copy.get("/inbox")  # ...and no page after the sign-out
        assert kept.status_code == 303
        assert kept.headers["location"].startswith("/signin?next=")
        assert (await copy.get("/account")).status_code == 303
        assert await whoami(copy) is None
        assert (await copy.post("/signout", data={"csrf": await csrf_of(copy)})).status_code == 401


async def test_a_session_is_kept_in_redis_as_long_as_it_lasts_and_without_it_is_signed_out(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient, redis: Redis
) -> None:
    other = await sign_in(h, provider, FIN)
    await sign_in(h, provider, OPS, client=web)
    stored = sorted(await redis.keys("gl:signin:session:*"))
    assert len(stored) == 2
    whose = {await redis.get(k): k for k in stored}
    assert sorted(whose) == [FIN, OPS]
    assert all(43_190 < ttl <= 43_200 for ttl in [await redis.ttl(k) for k in stored])
    mine = whose[OPS]
    await redis.delete(mine)  # as Redis does when its TTL runs out
    assert (await web.get("/inbox")).status_code == 303
    assert await whoami(web) is None
    assert await whoami(other) == FIN  # the other session is as it was


async def test_signing_in_again_ends_the_session_it_replaces(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient, redis: Redis
) -> None:
    await sign_in(h, provider, OPS, client=web)
    async with httpx.AsyncClient(base_url=h.url, timeout=10, cookies=web.cookies) as copy:
        await sign_in(h, provider, FIN, client=web)
        assert await whoami(web) == FIN
        assert await whoami(copy) is None
    assert [await redis.get(k) for k in await redis.keys("gl:signin:session:*")] == [FIN]


async def _async(value: object) -> object:
    return value


async def test_the_link_leads_only_to_this_site_and_its_token_is_never_logged(
    h: Harness, provider: MailProvider, web: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = await link_for(web, provider, OPS, next="//evil.example/phish")
    opened = await open_link(web, path)
    assert opened.headers["location"] == "/inbox"
    token = path.rsplit("/", 1)[1]
    ours = [r for r in caplog.records if r.name.startswith(("bot.", "channels."))]
    logged = "\n".join(r.getMessage() for r in ours)
    assert f"{OPS} signed in by email link" in logged
    assert token not in logged


async def test_something_that_is_not_an_address_is_said_so(
    h: Harness, web: httpx.AsyncClient
) -> None:
    csrf = await csrf_of(web)
    r = await web.post("/signin/email", data={"email": "ops at example", "csrf": csrf})
    assert r.status_code == 422
    assert "is not an email address" in r.text
