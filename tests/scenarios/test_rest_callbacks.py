"""``callback_url`` on POST /threads, /approvals and /questions: a real http(s) URL; with
CALLBACK_URL_REFUSE_PRIVATE, a public one. Refused URLs change nothing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.scenarios.test_rest import DEPLOY, assert_error, snapshot

BODIES = {
    "/threads": DEPLOY,
    "/approvals": {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}},
    "/questions": {"question": "Which region?"},
}
"""Every route that takes a ``callback_url``, with a body it accepts."""

NOT_URLS = [
    "not a url",
    "ftp://example.com/hook",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http://",
    "https:///path-only",
    "http://exa mple.com/",
    "http://example.com:99999/",
    "http://example.com:0/",
    "http://[::1/",
    "http://example.com/\u00e9",
    "https://example.com/" + "a" * 2000,
]
PRIVATE = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://10.1.2.3/",
    "http://192.168.0.10/",
    "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
]


@pytest.mark.parametrize("route", BODIES)
async def test_callback_url_must_be_an_http_url(
    redis_server: EmbeddedRedis, redis: Redis, route: str
) -> None:
    async with Harness(redis_server.url) as h:
        before = await snapshot(redis)
        for url in NOT_URLS:
            r = await h.api.post(route, json={**BODIES[route], "callback_url": url})
            assert_error(r, 422, "invalid_input", "callback_url")
        assert await snapshot(redis) == before


@pytest.mark.parametrize("route", BODIES)
async def test_private_targets_are_refused_only_when_asked(
    redis_server: EmbeddedRedis, redis: Redis, route: str
) -> None:
    body = BODIES[route]
    settings = make_settings(callback_url_refuse_private=True)
    async with Harness(redis_server.url, settings=settings) as h:
        before = await snapshot(redis)
        for url in PRIVATE:
            r = await h.api.post(route, json={**body, "callback_url": url})
            assert_error(r, 422, "invalid_input", "private address", "CALLBACK_URL_REFUSE_PRIVATE")
        r = await h.api.post(route, json={**body, "callback_url": "http://nx.invalid/"})
        assert_error(r, 422, "invalid_input", "does not resolve")
        assert await snapshot(redis) == before
        # A public address literal needs no lookup.
        r = await h.api.post(route, json={**body, "callback_url": "https://1.1.1.1/hook"})
        assert r.status_code == 201, r.text
    async with Harness(redis_server.url) as h:  # off by default: local receivers work
        r = await h.api.post(route, json={**body, "callback_url": PRIVATE[0]})
        assert r.status_code == 201, r.text
