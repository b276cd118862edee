"""The REST API end to end over real HTTP: every flow, and every error changes nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.harness import test_settings as make_settings

DEPLOY = {"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"}


async def snapshot(redis: Redis) -> dict[Any, Any]:
    """Every key and its whole value: equal snapshots mean nothing changed."""
    out: dict[Any, Any] = {}
    for key in sorted(await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        elif kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        else:
            out[key] = await redis.get(key)
    return out


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    settings = make_settings(
        approver_groups={"deployers": ["alice", "bob"], "finance": ["fin"]}, max_body_bytes=4096
    )
    async with Harness(redis_server.url, settings=settings) as harness:
        yield harness


async def launch(h: Harness, body: dict[str, Any] = DEPLOY) -> tuple[str, dict[str, Any]]:
    """Create a thread, run the worker, return the thread id and its one open request."""
    r = await h.api.post("/threads", json=body)
    assert r.status_code == 201, r.text
    await h.drain()
    thread = (await h.api.get(f"/threads/{r.json()['id']}")).json()
    (req,) = thread["open_requests"]
    return thread["id"], req


def assert_error(r: Any, status: int, error: str, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == error and isinstance(body["detail"], str)
    for word in words:
        assert word in body["detail"], body
    return body


# --- flows ----------------------------------------------------------------------------------


async def test_launch_approve_done_with_a_background_worker(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url, background_worker=True) as h:
        r = await h.api.post("/threads", json=DEPLOY)
        assert r.status_code == 201 and r.json()["status"] == "running"
        tid = r.json()["id"]

        async def open_request() -> dict[str, Any] | None:
            items = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
            return items[0] if items else None

        req = await h.wait_for(open_request)
        assert (req["thread_id"], req["tool"], req["kind"]) == (tid, "deploy", "approval")
        r = await h.api.post(
            f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
        )
        assert r.status_code == 200 and r.json()["status"] == "approved"

        async def done() -> dict[str, Any] | None:
            thread: dict[str, Any] = (await h.api.get(f"/threads/{tid}")).json()
            return thread if thread["status"] == "done" else None

        thread = await h.wait_for(done)
        assert "-> 1.5.0 on production" in thread["last_reply"]
        assert [e["type"] for e in thread["events"]][-3:] == [
            "tool_started",
            "tool_result",
            "agent_reply",
        ]


async def test_reject_reason_reaches_the_reply(h: Harness) -> None:
    tid, req = await launch(h)
    r = await h.api.post(
        f"/requests/{req['id']}/decision",
        json={"decision": "reject", "by": "bob", "reason": "change freeze until Monday"},
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    await h.drain()
    thread = (await h.api.get(f"/threads/{tid}")).json()
    assert thread["status"] == "done"
    assert "change freeze until Monday" in thread["last_reply"]
    assert not [e for e in thread["events"] if e["type"] == "tool_started"]


async def test_answer_then_approve_a_refund(h: Harness) -> None:
    tid, question = await launch(h, {"agent": "refunds", "user": "ann", "text": "refund A-1002"})
    assert question["kind"] == "question" and "reason" in question["question"]

    r = await h.api.post(
        f"/requests/{question['id']}/answer", json={"text": "arrived broken", "by": "ann"}
    )
    assert r.status_code == 200 and r.json()["answer"] == "arrived broken"
    await h.drain()
    thread = (await h.api.get(f"/threads/{tid}")).json()
    (approval,) = thread["open_requests"]
    assert approval["tool"] == "refund" and approval["args"]["reason"] == "arrived broken"
    assert approval["args"]["amount"] > 500  # over the threshold: a human must approve

    r = await h.api.post(
        f"/requests/{approval['id']}/decision", json={"decision": "approve", "by": "fin"}
    )
    assert r.status_code == 200
    await h.drain()
    thread = (await h.api.get(f"/threads/{tid}")).json()
    assert thread["status"] == "done" and thread["last_reply"].startswith("Refunded")


async def test_pause_records_decisions_but_runs_nothing_until_resumed(h: Harness) -> None:
    tid, req = await launch(h)
    r = await h.api.post(f"/threads/{tid}/pause", json={"by": "ops", "reason": "incident"})
    assert r.status_code == 200 and r.json()["status"] == "paused"

    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    await h.drain()
    thread = (await h.api.get(f"/threads/{tid}")).json()
    assert thread["status"] == "paused"
    assert not [e for e in thread["events"] if e["type"] == "tool_started"]

    r = await h.api.post(f"/threads/{tid}/resume")
    assert r.status_code == 200
    await h.drain()
    thread = (await h.api.get(f"/threads/{tid}")).json()
    assert thread["status"] == "done" and "1.5.0" in thread["last_reply"]


async def test_cancel_closes_requests_and_later_decisions_conflict(
    h: Harness, redis: Redis
) -> None:
    tid, req = await launch(h)
    r = await h.api.post(f"/threads/{tid}/cancel", json={"by": "carol", "reason": "not needed"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["open_requests"] == []
    assert (await h.api.get(f"/requests/{req['id']}")).json()["status"] == "cancelled"
    assert (await h.api.get("/requests")).json()["items"] == []

    before = await snapshot(redis)
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
    )
    assert_error(r, 409, "conflict", "cancelled", "carol")
    r = await h.api.post(f"/threads/{tid}/messages", json={"text": "again", "user": "ann"})
    assert_error(r, 409, "conflict", "cancelled")
    assert await snapshot(redis) == before


# --- errors: each is clear JSON and changes nothing ------------------------------------------


async def test_token_is_required(h: Harness, redis: Redis) -> None:
    before = await snapshot(redis)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}):
        r = await h.http.post("/threads", json=DEPLOY, headers=headers)
        assert_error(r, 401, "unauthorized", "bearer token")
        assert_error(await h.http.get("/requests", headers=headers), 401, "unauthorized")
    assert await snapshot(redis) == before
    assert (await h.http.get("/healthz")).status_code == 200  # health needs no token


async def test_unknown_thread_and_request_are_404(h: Harness, redis: Redis) -> None:
    tid, _ = await launch(h)
    before = await snapshot(redis)
    missing_thread = "th_" + "0" * 20
    missing_request = f"{tid}.r00000000"
    assert_error(await h.api.get(f"/threads/{missing_thread}"), 404, "not_found", missing_thread)
    assert_error(await h.api.get("/threads/not-an-id"), 404, "not_found")
    assert_error(
        await h.api.post(f"/threads/{missing_thread}/messages", json={"text": "hi"}),
        404,
        "not_found",
    )
    assert_error(await h.api.post(f"/threads/{missing_thread}/pause"), 404, "not_found")
    assert_error(await h.api.get(f"/requests/{missing_request}"), 404, "not_found")
    for rid in (missing_request, "nope"):
        r = await h.api.post(f"/requests/{rid}/decision", json={"decision": "approve", "by": "bob"})
        assert_error(r, 404, "not_found", rid)
        r = await h.api.post(f"/requests/{rid}/answer", json={"text": "x", "by": "bob"})
        assert_error(r, 404, "not_found", rid)
    assert_error(await h.api.get("/nowhere"), 404, "not_found")
    assert await snapshot(redis) == before


async def test_deciding_a_decided_request_names_who_and_when(h: Harness, redis: Redis) -> None:
    _, req = await launch(h)
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
    )
    assert r.status_code == 200
    before = await snapshot(redis)
    r = await h.api.post(
        f"/requests/{req['id']}/decision",
        json={"decision": "reject", "by": "alice", "reason": "no"},
    )
    body = assert_error(r, 409, "conflict", "already approved by bob")
    assert body["decided_by"] == "bob" and body["decided_at"].endswith("Z")
    assert body["decided_at"] in body["detail"]
    assert await snapshot(redis) == before


async def test_someone_who_may_not_decide_is_not_told_who_decided(h: Harness, redis: Redis) -> None:
    _, req = await launch(h)
    url = f"/requests/{req['id']}/decision"
    mallory = {"decision": "reject", "by": "mallory", "reason": "no"}
    while_open = assert_error(await h.api.post(url, json=mallory), 403, "forbidden")
    assert (await h.api.post(url, json={"decision": "approve", "by": "bob"})).status_code == 200
    before = await snapshot(redis)
    # Decided now: Mallory hears what she heard while it was open, not who decided nor when.
    body = assert_error(await h.api.post(url, json=mallory), 403, "forbidden", "mallory may not")
    assert body == while_open and "decided_by" not in body and "already" not in body["detail"]
    assert await snapshot(redis) == before


async def test_only_allowed_approvers_and_never_oneself(h: Harness, redis: Redis) -> None:
    _, req = await launch(h, {**DEPLOY, "user": "alice"})
    assert req["approvers"] == ["alice", "bob"]
    before = await snapshot(redis)
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "mallory"}
    )
    assert_error(r, 403, "forbidden", "mallory may not decide")
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "alice"}
    )
    assert_error(r, 403, "forbidden", "alice asked for this")
    assert await snapshot(redis) == before


async def test_oversized_body_is_413(h: Harness, redis: Redis) -> None:
    before = await snapshot(redis)
    r = await h.api.post("/threads", json={**DEPLOY, "text": "x" * 5000})
    assert_error(r, 413, "payload_too_large", "4096")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        yield b'{"agent": "deploy", "user": "ann", "text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = await h.api.post("/threads", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    assert await snapshot(redis) == before


async def test_edited_args_failing_the_schema_are_422(h: Harness, redis: Redis) -> None:
    tid, req = await launch(h)
    before = await snapshot(redis)
    edited = {**req["args"], "environment": "the moon"}
    r = await h.api.post(
        f"/requests/{req['id']}/decision",
        json={"decision": "approve", "by": "bob", "edited_args": edited},
    )
    assert_error(r, 422, "invalid_input", "environment")
    r = await h.api.post(f"/requests/{req['id']}/decision", json={"decision": "maybe", "by": "bob"})
    assert_error(r, 422, "invalid_input", "decision")
    assert await snapshot(redis) == before
    assert (await h.api.get(f"/threads/{tid}")).json()["version"] == (await h.thread(tid)).version


async def test_bad_bodies_are_400_or_422(h: Harness, redis: Redis) -> None:
    _, req = await launch(h)
    before = await snapshot(redis)
    json_headers = {"Content-Type": "application/json"}
    r = await h.api.post("/threads", content=b'{"agent": "deploy", "text": ', headers=json_headers)
    assert_error(r, 400, "bad_request", "JSON")
    bad_utf8 = b'{"agent": "deploy", "text": "deploy \xff\xfe api"}'
    r = await h.api.post("/threads", content=bad_utf8, headers=json_headers)
    assert_error(r, 400, "bad_request", "UTF-8")
    r = await h.api.post(f"/requests/{req['id']}/decision", content=b"\xc3(", headers=json_headers)
    assert_error(r, 400, "bad_request")
    r = await h.api.post("/threads", json={**DEPLOY, "agent": "nope"})
    assert_error(r, 422, "invalid_input", "unknown agent 'nope'", "deploy", "refunds")
    r = await h.api.post("/threads", json={**DEPLOY, "colour": "red"})
    assert_error(r, 422, "invalid_input", "colour")
    r = await h.api.post("/threads", json={**DEPLOY, "text": "   "})
    assert_error(r, 422, "invalid_input", "empty")
    assert await snapshot(redis) == before


# --- listings and health ----------------------------------------------------------------------


async def test_threads_filter_by_status_and_agent_with_pages(h: Harness) -> None:
    deploys = [(await h.api.post("/threads", json=DEPLOY)).json()["id"] for _ in range(3)]
    await h.drain()  # the deploys now await approval; the refunds below stay queued
    refunds = [
        (
            await h.api.post("/threads", json={"agent": "refunds", "text": f"refund A-100{i}"})
        ).json()["id"]
        for i in range(2)
    ]

    page = (await h.api.get("/threads", params={"limit": 2})).json()
    assert page["total"] == 5 and [t["id"] for t in page["items"]] == refunds[::-1]

    got = (await h.api.get("/threads", params={"status": "awaiting_approval", "limit": 2})).json()
    rest = (await h.api.get("/threads", params={"status": "awaiting_approval", "offset": 2})).json()
    assert got["total"] == rest["total"] == 3
    assert {t["id"] for t in got["items"] + rest["items"]} == set(deploys)

    by_agent = (await h.api.get("/threads", params={"agent": "deploy", "limit": 2})).json()
    assert by_agent["total"] == 3 and len(by_agent["items"]) == 2
    assert all(t["agent"] == "deploy" for t in by_agent["items"])
    tail = (await h.api.get("/threads", params={"agent": "deploy", "offset": 2})).json()
    assert {t["id"] for t in by_agent["items"] + tail["items"]} == set(deploys)

    both = (await h.api.get("/threads", params={"agent": "refunds", "status": "running"})).json()
    assert both["total"] == 2 and {t["id"] for t in both["items"]} == set(refunds)
    r = await h.api.get("/threads", params={"status": "sleeping"})
    assert_error(r, 422, "invalid_input", "status")


async def test_health_and_readiness(h: Harness) -> None:
    assert (await h.http.get("/healthz")).json() == {"status": "ok"}
    r = await h.http.get("/readyz")
    assert_error(r, 503, "not_ready", "no worker")
    await h.drain()  # a worker ran: it left a heartbeat
    r = await h.http.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_the_web_and_the_worker_read_one_clock_for_expiry(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    clock = ManualClock(time.time())
    settings = make_settings(approver_groups={"deployers": ["alice", "bob"], "finance": ["fin"]})
    async with Harness(redis_server.url, settings=settings, clock=clock) as h:
        tid, req = await launch(h)
        assert req["expires_at"] == clock.now() + 3600  # the deploy policy: one hour

        # A second before expiry the web still sees it open; after, no worker has swept yet,
        # and the web refuses a decision as expired all the same.
        clock.advance(3599)
        assert (await h.api.get(f"/requests/{req['id']}")).json()["status"] == "open"
        clock.advance(1)
        before = await snapshot(redis)
        url = f"/requests/{req['id']}/decision"
        r = await h.api.post(url, json={"decision": "approve", "by": "bob"})
        assert_error(r, 409, "conflict", "expired")
        assert await snapshot(redis) == before

        # The worker, on the same clock, finds the timer due and records the expiry.
        await h.drain()
        assert (await h.api.get(f"/requests/{req['id']}")).json()["status"] == "expired"
        assert (await h.api.get(f"/threads/{tid}")).json()["open_requests"] == []
