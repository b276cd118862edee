"""Correctly signed but generated webhook and Slack bodies: never a 5xx, refusals change
nothing, and whatever is accepted reads back over the API."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.storage.embedded import EmbeddedRedis
from channels.slack.channel import SlackChannel
from channels.webhook.signing import SIGNATURE_HEADER, sign
from tests.channels.slack.conftest import DAN, OPS, USERS, slack_settings
from tests.channels.slack.slack import SECRET as SLACK_SECRET
from tests.channels.slack.slack import sample
from tests.fuzz import examples
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.scenarios.test_rest import snapshot
from tests.standins.slack_api import SlackAPI

WEBHOOK_SECRET = "whsec-fuzz"
COUNTS: dict[str, dict[int, int]] = {}

# Any JSON value, with strings that include what breaks storage (lone surrogates, NUL).
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ids = st.text(max_size=20) | st.just("m-1")


@pytest.fixture(scope="module")
async def hook(redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    settings = make_settings(webhook_secret=WEBHOOK_SECRET)
    async with Harness(redis_server.url, settings=settings) as h:
        await h.redis.flushall()
        yield h


@pytest.fixture(scope="module")
async def slack_h(redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    async with (
        SlackAPI(users=USERS, groups={OPS: [DAN]}) as api,
        Harness(redis_server.url, settings=slack_settings(api)) as h,
    ):
        await h.redis.flushall()
        yield h


async def check(h: Harness, kind: str, before: Any, r: Any) -> None:
    """No 5xx; a refusal changed nothing; every thread there is reads back."""
    seen = COUNTS.setdefault(kind, {})
    seen[r.status_code] = seen.get(r.status_code, 0) + 1
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert await snapshot(h.redis) == before, r.text
        return
    for tid in (await h.rt.indexes.threads(offset=0, limit=200))[0]:
        got = await h.api.get(f"/threads/{tid}")
        assert got.status_code == 200, got.text


webhook_bodies = st.fixed_dictionaries(
    {
        "text": st.just("deploy api 1.5.0 to production") | st.text(max_size=40) | values,
        "user": st.just("ann") | st.text(max_size=20) | values,
    },
    optional={
        "id": ids | values,
        "conversation_id": ids | values,
        "callback_url": st.just("http://127.0.0.1:9/hook") | st.text(max_size=30) | values,
        "extra": values,
    },
)


@examples(150)
@given(
    body=webhook_bodies | values,
    agent=st.sampled_from(["deploy", "refunds", "nope", "%F0%9F", "a" * 300]),
    escape=st.booleans(),
)
async def test_signed_webhook_bodies(hook: Harness, body: Any, agent: str, escape: bool) -> None:
    raw = json.dumps(body, ensure_ascii=escape).encode("utf-8", "surrogatepass")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(WEBHOOK_SECRET, raw, int(hook.clock.now())),
    }
    before = await snapshot(hook.redis)
    r = await hook.http.post(f"/webhooks/{agent}", content=raw, headers=headers)
    await check(hook, "webhook", before, r)


def mutate(payload: Any, path: list[int], value: Any) -> Any:
    """``payload`` with the value at a path (indices into keys or items) replaced."""
    if not path or not isinstance(payload, dict | list) or not payload:
        return value
    if isinstance(payload, dict):
        key = list(payload)[path[0] % len(payload)]
        return {**payload, key: mutate(payload[key], path[1:], value)}
    i = path[0] % len(payload)
    return [*payload[:i], mutate(payload[i], path[1:], value), *payload[i + 1 :]]


SAMPLES = ["app_mention", "message_in_thread", "block_actions", "view_submission", "bot_message"]
FORM = "application/x-www-form-urlencoded"


@st.composite
def slack_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A captured payload with one value replaced, as Slack would send it; or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60)), draw(st.sampled_from(["application/json", FORM]))
    if draw(st.integers(0, 9)) == 0:
        form = {k: draw(st.text(max_size=10)) for k in sample("slash_command")}
        return urllib.parse.urlencode(form).encode(), FORM
    name = draw(st.sampled_from(SAMPLES))
    payload = mutate(sample(name), draw(st.lists(st.integers(0, 50), max_size=5)), draw(values))
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if name in ("block_actions", "view_submission"):
        form = urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")
        return f"payload={form}".encode(), FORM
    return text.encode("utf-8", "surrogatepass"), "application/json"


@examples(150)
@given(body=slack_bodies())
async def test_signed_slack_bodies(slack_h: Harness, body: tuple[bytes, str]) -> None:
    raw, content_type = body
    stamp = str(int(time.time()))
    mac = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + raw, hashlib.sha256)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac.hexdigest()}",
    }
    (channel,) = [c for c in slack_h.rt.channels if isinstance(c, SlackChannel)]
    await channel.background.stop()  # what earlier bodies started is done: Redis holds still
    before = await snapshot(slack_h.redis)
    r = await slack_h.http.post("/slack/events", content=raw, headers=headers)
    await channel.background.stop()
    await check(slack_h, "slack", before, r)


def test_the_runs_reached_the_channels() -> None:
    """Counts of the runs above: signed bodies sent and the statuses they got."""
    for kind, seen in COUNTS.items():
        print(f"signed {kind}: {sum(seen.values())} bodies, statuses {sorted(seen.items())}")
    assert all(sum(COUNTS.get(k, {}).values()) > 50 for k in ("webhook", "slack")), COUNTS
