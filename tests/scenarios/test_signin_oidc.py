"""Signing in with OpenID Connect against a local provider, through real HTTP both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.harness import test_settings as settings_for_tests
from tests.signin import SESSION_SECRET
from tests.standins.oidc import IdentityProvider

PUBLIC = "http://greenlight.test"
"""PUBLIC_URL: the provider sends browsers back there; ``browse`` maps it to the harness."""
CLIENT_ID, CLIENT_SECRET = "greenlight", "test-oidc-client-secret"
OPS = {"sub": "248289761001", "email": "Ops@Example.test", "email_verified": True, "name": "Ops"}
GROUPS = {"deployers": ["bob", "ops@example.test"], "finance": ["bob"]}
"""OPS may sign in: the configuration names them (as a deployer)."""
PARTNER = "partner.test"
"""SIGNIN_EMAIL_DOMAINS: anyone there may sign in too."""


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as p:
        p.person = dict(OPS)
        yield p


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, idp: IdentityProvider
) -> AsyncIterator[Harness]:
    settings = settings_for_tests(
        session_secret=SESSION_SECRET,
        public_url=PUBLIC,
        oidc_issuer=idp.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_name="Stand-in SSO",
        approver_groups=GROUPS,
        signin_email_domains=[PARTNER],
    )
    async with Harness(redis_server.url, settings=settings) as h:
        yield h


@pytest.fixture
async def web(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as client:
        yield client


async def browse(
    web: httpx.AsyncClient, h: Harness, url: str, *, stop_at: str | None = None
) -> httpx.Response:
    """GET ``url`` and follow redirects like a browser, between the app and the provider;
    with ``stop_at``, answer the redirect to a path starting with it instead of following."""
    response = await web.get(url)
    while response.is_redirect:
        location = response.headers["location"]
        if location.startswith(PUBLIC):
            location = h.url + location.removeprefix(PUBLIC)
        if stop_at and urlsplit(location).path.startswith(stop_at):
            return response
        response = await web.get(location)
    return response


async def whoami(web: httpx.AsyncClient) -> str | None:
    page = await web.get("/account")
    if page.status_code != 200:
        return None
    return page.text.split("Signed in as <strong>")[1].split("</strong>")[0]


def callback_of(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The callback path and its query, from the provider's redirect back."""
    parts = urlsplit(response.headers["location"])
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def test_a_person_signs_in_with_the_provider_and_lands_where_they_were_going(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    form = await web.get("/signin?next=/account")
    assert 'href="/signin/oidc?next=/account"' in form.text
    assert "Sign in with Stand-in SSO" in form.text
    start = await web.get("/signin/oidc?next=/account")
    asked = parse_qs(urlsplit(start.headers["location"]).query)
    assert asked["code_challenge_method"] == ["S256"]
    assert asked["redirect_uri"] == [f"{PUBLIC}/signin/oidc/callback"]
    assert asked["state"] and asked["nonce"]
    landed = await browse(web, h, start.headers["location"])
    assert landed.status_code == 200
    assert landed.url.path == "/account"
    assert await whoami(web) == "ops@example.test"
    assert "(Ops)" in landed.text
    ((status, _),) = idp.tokens
    assert status == 200


async def test_a_callback_with_another_state_is_refused(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    back = await browse(web, h, "/signin/oidc", stop_at="/signin/oidc/callback")
    path, query = callback_of(back)
    refused = await web.get(f"{path}?{urlencode({**query, 'state': 'forged'})}")
    assert refused.status_code == 400
    assert "failed" in refused.text
    assert idp.tokens == []  # the code was never traded
    assert await whoami(web) is None


def another_nonce(idp: IdentityProvider) -> None:
    idp.nonce = "a-nonce-from-another-sign-in"


def a_rogue_key(idp: IdentityProvider) -> None:
    idp.rogue_key = True


def an_unverified_email(idp: IdentityProvider) -> None:
    idp.person["email_verified"] = False


def an_email_unverified_as_a_string(idp: IdentityProvider) -> None:
    idp.person["email_verified"] = "false"


def no_word_on_verification(idp: IdentityProvider) -> None:
    del idp.person["email_verified"]


@pytest.mark.parametrize(
    ("misbehave", "said"),
    [
        (another_nonce, "nonce"),
        (a_rogue_key, "signature"),
        (an_unverified_email, "has not verified Ops@Example.test"),
        (an_email_unverified_as_a_string, "has not verified Ops@Example.test"),
        (no_word_on_verification, "has not verified Ops@Example.test"),
    ],
)
async def test_an_id_token_that_does_not_hold_up_signs_nobody_in(
    h: Harness,
    idp: IdentityProvider,
    web: httpx.AsyncClient,
    misbehave: Callable[[IdentityProvider], None],
    said: str,
) -> None:
    misbehave(idp)
    refused = await browse(web, h, "/signin/oidc")
    assert refused.status_code == 400
    assert said in refused.text
    assert await whoami(web) is None


async def test_a_verified_email_may_come_as_the_string_true(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    idp.person["email_verified"] = "true"
    landed = await browse(web, h, "/signin/oidc?next=/account")
    assert landed.url.path == "/account"
    assert await whoami(web) == "ops@example.test"


async def test_an_address_the_configuration_does_not_name_may_not_sign_in(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    idp.person = {"sub": "1", "email": "anyone@gmail.test", "email_verified": True}
    refused = await browse(web, h, "/signin/oidc?next=/account")
    assert refused.status_code == 403
    assert "anyone@gmail.test may not sign in here" in refused.text
    for detail in ("ops@example.test", "bob", PARTNER, "SIGNIN_EMAIL_DOMAINS", "deployers"):
        assert detail not in refused.text
    ((status, _),) = idp.tokens  # the provider vouched for them: the refusal is ours
    assert status == 200
    assert await whoami(web) is None
    assert (await web.get("/inbox")).status_code == 303


async def test_any_address_of_a_signin_email_domain_may_sign_in(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    idp.person = {"sub": "2", "email": f"Ann@{PARTNER.upper()}", "email_verified": True}
    landed = await browse(web, h, "/signin/oidc?next=/account")
    assert landed.url.path == "/account"
    assert await whoami(web) == f"ann@{PARTNER}"


async def test_a_code_from_another_browsers_sign_in_fails_pkce(
    h: Harness, idp: IdentityProvider, web: httpx.AsyncClient
) -> None:
    # An attacker starts a sign-in of their own and slips its code into the victim's
    # callback, with the victim's state: the victim's verifier does not match the code.
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as attacker:
        theirs = await browse(attacker, h, "/signin/oidc", stop_at="/signin/oidc/callback")
    mine = await browse(web, h, "/signin/oidc", stop_at="/signin/oidc/callback")
    path, query = callback_of(mine)
    _, stolen = callback_of(theirs)
    refused = await web.get(
        f"{path}?{urlencode({'code': stolen['code'], 'state': query['state']})}"
    )
    assert refused.status_code == 400
    ((status, answer),) = idp.tokens
    assert (status, answer["error_description"]) == (400, "PKCE verification")
    assert await whoami(web) is None


async def test_a_wrong_client_secret_signs_nobody_in(
    redis_server: EmbeddedRedis, redis: Redis, idp: IdentityProvider
) -> None:
    settings = settings_for_tests(
        session_secret=SESSION_SECRET,
        public_url=PUBLIC,
        oidc_issuer=idp.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="not-the-secret",
    )
    async with Harness(redis_server.url, settings=settings) as h:
        refused = await browse(h.http, h, "/signin/oidc")
        assert refused.status_code == 400
        assert idp.tokens == [(401, {"error": "invalid_client"})]
        assert await whoami(h.http) is None


async def test_an_unreachable_provider_is_said_so(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    settings = settings_for_tests(
        session_secret=SESSION_SECRET,
        public_url=PUBLIC,
        oidc_issuer="http://127.0.0.1:9",  # the discard port: nothing listens
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_name="Stand-in SSO",
    )
    async with Harness(redis_server.url, settings=settings) as h:
        r = await h.http.get("/signin/oidc")
        assert r.status_code == 502
        assert "Stand-in SSO cannot be reached just now" in r.text
