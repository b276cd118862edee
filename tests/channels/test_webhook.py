"""The webhook channel over real HTTP: signatures, idempotency, threads, callbacks, retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.errors import UnauthorizedError
from bot.domain.events import AgentReply, DeliveryFailed, Event, UserMessage
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes
from bot.storage.retries import Retries
from bot.telemetry import LIBRARY_LEVELS
from channels.webhook import SIGNATURE_HEADER, sign, verify
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.standins.receiver import Receiver

SECRET = "whsec-test-secret"
DEPLOY = "deploy api 1.5.0 to production"


def signed(body: dict[str, Any], *, secret: str = SECRET, t: float | None = None) -> dict[str, Any]:
    """httpx arguments for a body signed as a sender would sign it."""
    raw = json.dumps(body).encode()
    stamp = int(time.time() if t is None else t)
    headers = {SIGNATURE_HEADER: sign(secret, raw, stamp), "Content-Type": "application/json"}
    return {"content": raw, "headers": headers}


async def events_of(h: Harness, thread_id: str) -> list[Event]:
    return await h.rt.log.events(thread_id)


async def drained_until(h: Harness, clock: ManualClock, probe: Any) -> Any:
    """Run the worker (retries included), moving the clock a second after each run, until
    ``probe`` finds what it waits for."""

    async def step() -> Any:
        await h.drain()
        found = await probe()
        clock.advance(1)
        return found

    return await h.wait_for(step)


# --- the signature scheme, pure ------------------------------------------------------------


def test_sign_then_verify_and_each_way_it_fails() -> None:
    body, now = b'{"text":"hi"}', 1_700_000_000
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=")
    verify(SECRET, header, body, now + 299)
    verify(SECRET, header, body, now - 299)  # the sender's clock may run ahead

    failures = {
        "missing": (None, body, now),
        "wrong secret": (sign("other", body, now), body, now),
        "tampered body": (header, b'{"text":"hI"}', now),
        "stale": (header, body, now + 301),
        "from the future": (header, body, now - 301),
        "malformed": ("v1=abc", body, now),
    }
    for why, (given, raw, at) in failures.items():
        with pytest.raises(UnauthorizedError):
            verify(SECRET, given, raw, at)
            pytest.fail(f"accepted: {why}")


def test_any_v1_may_match_so_secrets_can_rotate() -> None:
    body, now = b"{}", 1_700_000_000
    old = sign("old-secret", body, now).split(",v1=")[1]
    new = sign(SECRET, body, now).split(",v1=")[1]
    verify(SECRET, f"t={now},v1={old},v1={new}", body, now)
    with pytest.raises(UnauthorizedError, match="wrong"):
        verify(SECRET, f"t={now},v1={old}", body, now)


@pytest.mark.parametrize(
    "header",
    [
        "t=\u00b2,v1=ab",  # a superscript digit: str.isdigit() says yes, int() says no
        "t=" + "9" * 400 + ",v1=ab",  # too large to compare with a float clock
        "t=1700000000,v1=\u00e9\u00e9",  # non-ASCII hex: compare_digest raises on str
    ],
)
def test_odd_signature_headers_are_refused_not_crashes(header: str) -> None:
    with pytest.raises(UnauthorizedError):
        verify(SECRET, header, b"{}", 1_700_000_000.5)


# --- inbound --------------------------------------------------------------------------------


async def test_signed_message_starts_a_thread_without_running_the_agent(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h:
        r = await h.http.post("/webhooks/deploy", **signed({"text": DEPLOY, "user": "ann"}))
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["agent"] == "deploy" and out["duplicate"] is False
        state = await h.thread(out["id"])
        assert state.origin is not None and state.origin.channel == "webhook"
        (message,) = [e for e in await events_of(h, out["id"]) if isinstance(e, UserMessage)]
        assert message.text == DEPLOY and (message.by.channel, message.by.id) == ("webhook", "ann")
        # The web only recorded and enqueued: no model turn happened yet.
        assert state.version == 2

        await h.drain()
        assert (await h.thread(out["id"])).status == "awaiting_approval"


@pytest.mark.parametrize(
    ("why", "headers"),
    [
        ("wrong secret", signed({"text": DEPLOY, "user": "ann"}, secret="nope")["headers"]),
        ("stale", signed({"text": DEPLOY, "user": "ann"}, t=time.time() - 360)["headers"]),
        ("missing", {"Content-Type": "application/json"}),
    ],
)
async def test_bad_signature_is_401_and_records_nothing(
    redis_server: EmbeddedRedis, redis: Redis, why: str, headers: dict[str, str]
) -> None:
    raw = json.dumps({"text": DEPLOY, "user": "ann"}).encode()
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h:
        r = await h.http.post("/webhooks/deploy", content=raw, headers=headers)
        assert r.status_code == 401, why
        assert r.json()["error"] == "unauthorized" and SIGNATURE_HEADER in r.json()["detail"]
        assert await redis.keys("*") == []


async def test_a_non_ascii_signature_header_is_401(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    raw = json.dumps({"text": DEPLOY, "user": "ann"}).encode()
    stamp = int(time.time())
    mac = sign(SECRET, raw, stamp).split(",v1=")[1]
    # Headers arrive as latin-1: b"\xb2" is "²", which str.isdigit() accepts.
    for header in (b"t=\xb2,v1=" + mac.encode(), f"t={stamp},v1=\xe9".encode("latin-1")):
        async with Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h:
            r = await h.http.post(
                "/webhooks/deploy",
                content=raw,
                headers={SIGNATURE_HEADER: header, "Content-Type": "application/json"},
            )
            assert r.status_code == 401, r.text
            assert await redis.keys("*") == []


async def test_unconfigured_webhook_refuses_everything(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=None)) as h:
        r = await h.http.post("/webhooks/deploy", **signed({"text": DEPLOY, "user": "ann"}))
        assert r.status_code == 401
        assert "WEBHOOK_SECRET" in r.json()["detail"]
        assert await redis.keys("*") == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads", {"agent": "deploy", "text": DEPLOY, "user": "ann"}),
        (
            "/approvals",
            {
                "tool": "deploy",
                "arguments": {},
                "summary": "Deploy",
                "policy": {"approvers": ["bob"]},
            },
        ),
        ("/questions", {"question": "Which region?", "answerers": ["bob"]}),
    ],
)
async def test_a_callback_url_is_refused_when_callbacks_could_not_be_signed(
    redis_server: EmbeddedRedis, redis: Redis, path: str, body: dict[str, Any]
) -> None:
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=None)) as h:
        r = await h.api.post(path, json=body | {"callback_url": "https://agent.example/hook"})
        assert r.status_code == 422, r.text
        assert "callback_url needs WEBHOOK_SECRET" in r.json()["detail"]
        assert await redis.keys("gl:*th_*") == []
        r = await h.api.post(path, json=body)  # without one, as before
        assert r.status_code == 201, r.text


async def test_replayed_id_is_one_message(redis_server: EmbeddedRedis, redis: Redis) -> None:
    body = {"id": "evt-42", "text": DEPLOY, "user": "ann"}
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h:
        first = await h.http.post("/webhooks/deploy", **signed(body))
        # The sender retries later: a fresh signature, the same delivery id.
        again = await h.http.post("/webhooks/deploy", **signed(body, t=time.time() + 5))
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["duplicate"] is True and again.json()["id"] == first.json()["id"]
        messages = [e for e in await events_of(h, first.json()["id"]) if e.type == "user_message"]
        assert len(messages) == 1
        assert (await Indexes(redis).threads(offset=0, limit=1))[1] == 1


async def test_conversation_id_continues_the_thread(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h:
        one = {"text": "list services", "user": "ann", "conversation_id": "ticket-7"}
        first = await h.http.post("/webhooks/deploy", **signed(one))
        await h.drain()
        two = {**one, "text": DEPLOY}
        second = await h.http.post("/webhooks/deploy", **signed(two))
        other = await h.http.post("/webhooks/deploy", **signed({**one, "conversation_id": "t-8"}))
        assert (first.status_code, second.status_code, other.status_code) == (201, 202, 201)
        tid = first.json()["id"]
        assert second.json()["id"] == tid and other.json()["id"] != tid
        texts = [e.text for e in await events_of(h, tid) if isinstance(e, UserMessage)]
        assert texts == ["list services", DEPLOY]


async def test_bad_bodies_are_clear_errors_and_record_nothing(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    settings = make_settings(webhook_secret=SECRET, max_body_bytes=1000)
    async with Harness(redis_server.url, settings=settings) as h:
        raw = b'{"text": "hi", "user":'
        headers = {SIGNATURE_HEADER: sign(SECRET, raw, int(time.time()))}
        r = await h.http.post("/webhooks/deploy", content=raw, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == "bad_request"

        r = await h.http.post("/webhooks/deploy", **signed({"text": "hi", "user": "a", "x": 1}))
        assert r.status_code == 422 and "x" in r.json()["detail"]

        r = await h.http.post("/webhooks/nope", **signed({"text": "hi", "user": "ann"}))
        assert r.status_code == 422 and "unknown agent 'nope'" in r.json()["detail"]

        r = await h.http.post("/webhooks/deploy", **signed({"text": "x" * 2000, "user": "ann"}))
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert await redis.keys("*") == []


# --- outbound -------------------------------------------------------------------------------


async def test_callbacks_are_signed_and_follow_the_thread(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with (
        Receiver() as receiver,
        Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h,
    ):
        body = {"text": DEPLOY, "user": "ann", "callback_url": f"{receiver.url}/hook"}
        tid = (await h.http.post("/webhooks/deploy", **signed(body))).json()["id"]
        await h.drain()

        (asked,) = receiver.requests
        verify(SECRET, asked.headers[SIGNATURE_HEADER.lower()], asked.body, time.time())
        event = asked.json()
        assert (asked.method, asked.path) == ("POST", "/hook")
        assert asked.headers["idempotency-key"] == event["id"]
        assert (event["type"], event["thread_id"], event["agent"]) == (
            "approval_requested",
            tid,
            "deploy",
        )
        data = event["data"]
        assert data["tool"] == "deploy" and data["args"]["version"] == "1.5.0"
        assert data["decide"]["path"] == f"/requests/{data['request_id']}/decision"

        # Deciding through the path the callback named resumes the thread.
        r = await h.api.post(
            data["decide"]["path"],
            json={"decision": "approve", "by": "bob", "args_hash": data["args_hash"]},
        )
        assert r.status_code == 200, r.text
        await h.drain()
        later = [r.json() for r in receiver.requests[1:]]
        assert [e["type"] for e in later] == ["request_decided", "agent_reply"]
        assert later[0]["data"]["by"]["id"] == "bob"
        assert later[1]["data"]["final"] is True and "1.5.0" in later[1]["data"]["text"]
        for got in receiver.requests:
            verify(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body, time.time())


async def test_rest_threads_with_a_callback_url_get_callbacks(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with (
        Receiver() as receiver,
        Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET)) as h,
    ):
        r = await h.api.post(
            "/threads",
            json={
                "agent": "deploy",
                "text": "deploy api to production",
                "callback_url": receiver.url,
            },
        )
        await h.drain()
        (asked,) = [r.json() for r in receiver.requests]
        assert asked["type"] == "human_question" and asked["thread_id"] == r.json()["id"]
        assert "version" in asked["data"]["question"]
        assert asked["data"]["answer"]["url"].endswith(
            f"/requests/{asked['data']['request_id']}/answer"
        )


async def test_callback_is_retried_until_the_receiver_takes_it(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    clock = ManualClock(time.time())
    async with (
        Receiver(fail_first=2) as receiver,
        Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET), clock=clock) as h,
    ):
        body = {"text": DEPLOY, "user": "ann", "callback_url": receiver.url}
        tid = (await h.http.post("/webhooks/deploy", **signed(body))).json()["id"]
        await drained_until(h, clock, lambda: receiver.delivered(1))

        assert [r.status for r in receiver.requests] == [500, 500, 200]
        ids = {r.json()["id"] for r in receiver.requests}
        assert len(ids) == 1 and {r.headers["idempotency-key"] for r in receiver.requests} == ids
        assert not [e for e in await events_of(h, tid) if isinstance(e, DeliveryFailed)]
        assert await Retries(redis).count() == 0


async def test_a_pending_retry_survives_a_restart(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    settings, clock = make_settings(webhook_secret=SECRET), ManualClock(time.time())
    async with Receiver(fail_first=1) as receiver:
        async with Harness(redis_server.url, settings=settings, clock=clock) as h:
            body = {"text": DEPLOY, "user": "ann", "callback_url": receiver.url}
            await h.http.post("/webhooks/deploy", **signed(body))
            await h.drain()
        assert [r.status for r in receiver.requests] == [500]
        assert await Retries(redis).count() == 1  # only Redis remembers it now

        async with Harness(redis_server.url, settings=settings, clock=clock) as fresh:
            await drained_until(fresh, clock, lambda: receiver.delivered(1))
        assert receiver.ok()[0].json()["type"] == "approval_requested"


async def test_giving_up_is_recorded_on_the_thread(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    settings = make_settings(webhook_secret=SECRET, delivery_give_up_after=0.2)
    clock = ManualClock(time.time())
    async with (
        Receiver(fail_always=True) as receiver,
        Harness(redis_server.url, settings=settings, clock=clock) as h,
    ):
        body = {"text": DEPLOY, "user": "ann", "callback_url": receiver.url}
        tid = (await h.http.post("/webhooks/deploy", **signed(body))).json()["id"]

        async def gave_up() -> list[DeliveryFailed]:
            return [e for e in await events_of(h, tid) if isinstance(e, DeliveryFailed)]

        (failed,) = await drained_until(h, clock, gave_up)
        asked = receiver.requests[0].json()
        assert failed.channel == "webhook" and failed.event_id == asked["id"]
        assert "500" in failed.error
        assert len(receiver.requests) >= 2  # retried before giving up
        assert await Retries(redis).count() == 0
        # The thread itself is unharmed: still waiting for its approval.
        assert (await h.thread(tid)).status == "awaiting_approval"


async def test_unreachable_callback_is_retried_like_a_failure(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Receiver() as gone:
        url = gone.url
    settings = make_settings(webhook_secret=SECRET, delivery_give_up_after=0.1)
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=settings, clock=clock) as h:
        body = {"text": DEPLOY, "user": "ann", "callback_url": url}
        tid = (await h.http.post("/webhooks/deploy", **signed(body))).json()["id"]

        async def gave_up() -> list[DeliveryFailed]:
            return [e for e in await events_of(h, tid) if isinstance(e, DeliveryFailed)]

        (failed,) = await drained_until(h, clock, gave_up)
        assert "ConnectError" in failed.error
        replies = [e for e in await events_of(h, tid) if isinstance(e, AgentReply)]
        assert replies == []


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every line logged at DEBUG, libraries' loggers at the levels the entry points set."""
    was = {name: logging.getLogger(name).level for name in LIBRARY_LEVELS}
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in was.items():
        logging.getLogger(name).setLevel(level)


async def test_a_failing_callback_names_only_where_it_points_in_logs_and_events(
    redis_server: EmbeddedRedis, redis: Redis, logged: pytest.LogCaptureFixture
) -> None:
    secrets = ("u53r", "pa55", "s3cr3t-path", "s3cr3t-query", "s3cr3t-fragment")
    tail = "/hooks/s3cr3t-path?token=s3cr3t-query#s3cr3t-fragment"
    async with Receiver() as gone:
        unreachable = gone.url
    settings = make_settings(webhook_secret=SECRET, delivery_give_up_after=0.2)
    clock = ManualClock(time.time())
    async with (
        Receiver(fail_always=True) as receiver,
        Harness(redis_server.url, settings=settings, clock=clock) as h,
    ):
        failing = receiver.url.replace("http://", "http://u53r:pa55@")
        sites = {failing + tail: receiver.url, unreachable + tail: unreachable}
        tids = {}
        for url in sites:
            body = {"text": DEPLOY, "user": "ann", "callback_url": url}
            tids[url] = (await h.http.post("/webhooks/deploy", **signed(body))).json()["id"]

        async def gave_up() -> bool:
            for tid in tids.values():
                if not [e for e in await events_of(h, tid) if isinstance(e, DeliveryFailed)]:
                    return False
            return True

        await drained_until(h, clock, gave_up)
        assert receiver.requests and receiver.requests[0].path.startswith("/hooks/s3cr3t-path")
        for url, tid in tids.items():
            # Enough to tell what failed where: the scheme, host and port, and the cause.
            error = failed_error(await events_of(h, tid))
            assert f"callback to {sites[url]} " in error, error
            # Only the thread's first event, which keeps where to call back, holds the URL.
            for raw in (await h.rt.log.stored(tid))[1:]:
                assert not [s for s in secrets if s in raw], raw
        assert "answered 500" in failed_error(await events_of(h, tids[failing + tail]))
        assert "ConnectError" in failed_error(await events_of(h, tids[unreachable + tail]))
    said = logged.text
    assert "retry in" in said and "gave up" in said and receiver.url in said
    assert [s for s in secrets if s in said] == []


def failed_error(events: list[Event]) -> str:
    (failed,) = [e for e in events if isinstance(e, DeliveryFailed)]
    return failed.error


async def test_a_retry_cut_off_mid_delivery_stays_scheduled(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    clock = ManualClock(time.time())
    async with (
        Receiver(fail_first=1, hang=True) as receiver,
        Harness(redis_server.url, settings=make_settings(webhook_secret=SECRET), clock=clock) as h,
    ):
        body = {"text": DEPLOY, "user": "ann", "callback_url": receiver.url}
        await h.http.post("/webhooks/deploy", **signed(body))

        async def second_attempt() -> bool:
            return len(receiver.requests) >= 2

        # The worker dies while the retry hangs: its task is cancelled mid-request.
        retrying = asyncio.create_task(drained_until(h, clock, second_attempt))
        await h.wait_for(second_attempt)
        retrying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retrying

        # The claimed job is still in Redis, due again after the claim timeout.
        (job,) = [
            row
            for s in range(keys.SHARDS)
            for row in await redis.zrange(keys.retries(s), 0, -1, withscores=True)
        ]
        assert json.loads(str(job[0]))["c"] == "webhook" and float(job[1]) <= time.time() + 61


async def test_the_signature_window_is_read_from_the_runtime_clock(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    clock = ManualClock(time.time())
    settings = make_settings(webhook_secret=SECRET)
    async with Harness(redis_server.url, settings=settings, clock=clock) as h:
        body = {"text": DEPLOY, "user": "ann"}
        sent = signed(body, t=clock.now())
        clock.advance(301)  # the same request, five minutes and a second later
        r = await h.http.post("/webhooks/deploy", **sent)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert await redis.keys("*") == []

        r = await h.http.post("/webhooks/deploy", **signed(body, t=clock.now()))
        assert r.status_code == 201, r.text
