"""``/slack/events`` checks the signature on the raw bytes before anything parses them:
unsigned or garbled is a 401, signed but malformed a 400, wrong field types a 4xx; never a
5xx, and nothing refused changes Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

import pytest
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from channels.slack import ingress
from tests.channels.slack.conftest import ANN, BOB
from tests.channels.slack.slack import SECRET, Slack, sample, unreadable
from tests.harness import Harness
from tests.scenarios.test_rest import snapshot

FORM = "application/x-www-form-urlencoded"
GARBLED = [
    (b"[[]]", "application/json"),
    (b"payload=%7B", FORM),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"\xff\xfe\x00garbage", FORM),
    (b"payload=%FF%FE", FORM),
    (b"payload=%5B%5D", FORM),
    (b"payload=null", FORM),
    (b'"just a string"', "application/json"),
    (b"{", "application/json"),
    (b"", "application/json"),
]


async def assert_refused_or_readable(h: Harness, redis: Redis, before: Any, r: Any) -> None:
    """Never a 5xx; refused (4xx) changes nothing; accepted can be read back over the API."""
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert await snapshot(redis) == before
        return
    tids, _ = await h.rt.indexes.threads(offset=0, limit=100)
    for tid in tids:
        got = await h.api.get(f"/threads/{tid}")
        assert got.status_code == 200, got.text


def assert_json_error(r: Any, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and isinstance(body["detail"], str), body


@pytest.mark.parametrize(("body", "content_type"), GARBLED)
async def test_unsigned_garbage_is_401(
    h: Harness, redis: Redis, body: bytes, content_type: str
) -> None:
    before = await snapshot(redis)
    headers = {"Content-Type": content_type}
    r = await h.http.post("/slack/events", content=body, headers=headers)
    assert_json_error(r, 401, "unauthorized")
    stale = {**headers, "X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"}
    r = await h.http.post("/slack/events", content=body, headers=stale)
    assert_json_error(r, 401, "unauthorized")
    assert await snapshot(redis) == before


async def signed(slack: Slack, body: bytes, content_type: str) -> Any:
    """POST ``body`` signed with Slack's v0 algorithm over its bytes, UTF-8 or not."""
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac.hexdigest()}",
    }
    return await slack.http.post("/slack/events", content=body, headers=headers)


def test_signing_over_bytes_agrees_with_slack_sdk() -> None:
    body, stamp = '{"type":"event_callback","x":"café"}'.encode(), "1718000000"
    expected = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
    headers = {"x-slack-request-timestamp": stamp, "x-slack-signature": expected or ""}
    ingress.verify(SECRET, body, headers, now=1718000000)


@pytest.mark.parametrize(("body", "content_type"), GARBLED)
async def test_signed_garbage_is_400(
    slack: Slack, redis: Redis, body: bytes, content_type: str
) -> None:
    before = await snapshot(redis)
    r = await signed(slack, body, content_type)
    assert_json_error(r, 400, "bad_request")
    assert await snapshot(redis) == before


async def test_signed_events_the_strict_json_reader_refuses_are_400(
    h: Harness, slack: Slack, redis: Redis
) -> None:
    # The reader of every JSON from outside (bot.domain.limits.from_json), as Socket Mode.
    before = await snapshot(redis)
    mention = slack.mention_payload("deploy api 1.5.0 to production", ANN)
    for why, payload in unreadable(mention, 1_000_000).items():
        r = await slack.event(payload)
        if why.startswith("over the limit"):
            assert r.status_code == 413, r.text  # the body limit, before anything reads it
            continue
        assert_json_error(r, 400, "bad_request")
        assert why in r.json()["detail"], r.text
    assert await snapshot(redis) == before


def _mention(**event: Any) -> dict[str, Any]:
    payload = sample("app_mention")
    payload["event"].update(event)
    return payload


WRONG_EVENTS = [
    _mention(text=123),
    _mention(text=["deploy"]),
    _mention(user={"id": ANN}),
    _mention(channel=7),
    _mention(ts=None),
    _mention(thread_ts=[1]),
    {**sample("app_mention"), "event": []},
    {**sample("app_mention"), "event": "app_mention"},
    {**sample("app_mention"), "team_id": ["T"]},
    {**sample("app_mention"), "authorizations": "yes"},
    {**sample("app_mention"), "authorizations": [1]},
    {**sample("app_mention"), "event_id": {"x": 1}},
    {**sample("app_mention"), "type": ["event_callback"]},
]


@pytest.mark.parametrize("payload", WRONG_EVENTS)
async def test_signed_events_with_wrong_types_are_4xx(
    h: Harness, slack: Slack, redis: Redis, payload: dict[str, Any]
) -> None:
    before = await snapshot(redis)
    r = await slack.event(payload)
    await assert_refused_or_readable(h, redis, before, r)


def _click(**action: Any) -> dict[str, Any]:
    payload = sample("block_actions")
    payload["actions"][0].update(action)
    return payload


WRONG_ACTIONS = [
    _click(value=5),
    _click(value={"r": "rq_x"}),
    _click(action_id=["gl_approve"]),
    _click(value='{"r": 5}'),
    _click(value="not json"),
    {**sample("block_actions"), "actions": "approve"},
    {**sample("block_actions"), "actions": [[]]},
    {**sample("block_actions"), "user": "U0BOB0001"},
    {**sample("block_actions"), "user": None},
    {**sample("block_actions"), "container": 5},
    {**sample("block_actions"), "message": []},
    {**sample("block_actions"), "channel": "C0"},
    {**sample("block_actions"), "team": ["T"]},
    {**sample("block_actions"), "type": 3},
]


@pytest.mark.parametrize("payload", WRONG_ACTIONS)
async def test_signed_actions_with_wrong_types_are_4xx(
    h: Harness, slack: Slack, redis: Redis, payload: dict[str, Any]
) -> None:
    before = await snapshot(redis)
    r = await slack.interact(payload)
    await assert_refused_or_readable(h, redis, before, r)


def _submission(callback_id: str, meta: Any, values: Any = None) -> dict[str, Any]:
    payload = sample("view_submission")
    payload["user"]["id"] = BOB
    payload["view"]["callback_id"] = callback_id
    payload["view"]["private_metadata"] = meta
    if values is not None:
        payload["view"]["state"] = {"values": values}
    return payload


REASON = {"reason": {"reason": {"type": "plain_text_input", "value": "no"}}}


@pytest.mark.parametrize("callback_id", ["gl_reject", "gl_edit"])
@pytest.mark.parametrize(
    "meta",
    [
        "",
        "garbage",
        "[]",
        '{"r": 5}',
        '{"r": "rq_nope"}',
        '{"r": "rq_nope", "h": ["x"]}',
        json.dumps({"r": "rq_" + "x" * 5000}),
        5,
        None,
        {"r": "rq_x"},
    ],
)
async def test_signed_view_submission_with_unexpected_private_metadata_is_4xx(
    h: Harness, slack: Slack, redis: Redis, callback_id: str, meta: Any
) -> None:
    before = await snapshot(redis)
    r = await slack.interact(_submission(callback_id, meta, REASON))
    await assert_refused_or_readable(h, redis, before, r)


@pytest.mark.parametrize("values", [[], "x", {"reason": []}, {"reason": {"reason": 5}}])
async def test_signed_view_submission_with_wrong_state_is_4xx(
    h: Harness, slack: Slack, redis: Redis, values: Any
) -> None:
    before = await snapshot(redis)
    r = await slack.interact(_submission("gl_reject", '{"r": "rq_x"}', values))
    await assert_refused_or_readable(h, redis, before, r)


async def test_signed_command_with_odd_fields_is_not_5xx(
    h: Harness, slack: Slack, redis: Redis
) -> None:
    before = await snapshot(redis)
    form = {**sample("slash_command"), "text": "", "user_id": ""}
    r = await slack.send(urllib.parse.urlencode(form).encode(), FORM)
    await assert_refused_or_readable(h, redis, before, r)


async def test_a_good_mention_still_records(slack: Slack, h: Harness) -> None:
    r = await slack.event(_mention(ts=f"{int(time.time())}.000100"))
    assert r.status_code == 200, r.text
    assert await h.rt.indexes.threads(offset=0, limit=10) != ([], 0)
