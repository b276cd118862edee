"""Retrying a REST call with the same Idempotency-Key changes nothing the second time."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.scenarios.test_rest import snapshot

DEPLOY = {"agent": "deploy", "text": "deploy api 1.5.0 to production", "user": "ann"}


async def test_retried_calls_record_once(redis_server: EmbeddedRedis, redis: Redis) -> None:
    async with Harness(redis_server.url) as h:
        first = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": "k-1"})
        again = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": "k-1"})
        other = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": "k-2"})
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
        tid = first.json()["id"]
        assert again.json()["id"] == tid != other.json()["id"]
        assert again.json()["version"] == first.json()["version"] == 2

        await h.drain()
        requests = (await h.api.get("/requests")).json()["items"]
        req = next(r for r in requests if r["thread_id"] == tid)
        decision = {"decision": "approve", "by": "bob"}
        url = f"/requests/{req['id']}/decision"
        ok = await h.api.post(url, json=decision, headers={"Idempotency-Key": "d-1"})
        replay = await h.api.post(url, json=decision, headers={"Idempotency-Key": "d-1"})
        fresh = await h.api.post(url, json=decision, headers={"Idempotency-Key": "d-2"})
        assert (ok.status_code, replay.status_code, fresh.status_code) == (200, 200, 409)
        assert replay.json()["status"] == "approved"

        thread = (await h.api.get(f"/threads/{tid}")).json()
        types = [e["type"] for e in thread["events"]]
        assert types.count("user_message") == 1 and types.count("approval_decision") == 1


async def test_an_empty_key_is_refused(redis_server: EmbeddedRedis, redis: Redis) -> None:
    async with Harness(redis_server.url) as h:
        r = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": ""})
        assert r.status_code == 422 and r.json()["error"] == "invalid_input"
        assert await redis.zcard("gl:threads") == 0


async def test_a_key_reused_with_another_body_is_422_naming_it(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url) as h:
        key = {"Idempotency-Key": "k-reused"}
        first = await h.api.post("/threads", json=DEPLOY, headers=key)
        assert first.status_code == 201, first.text
        tid = first.json()["id"]
        # The same body in another key order and with a default spelled out is a replay.
        same = {"user": "ann", "text": DEPLOY["text"], "agent": "deploy", "metadata": {}}
        again = await h.api.post("/threads", json=same, headers=key)
        assert again.status_code == 200 and again.json()["id"] == tid
        before = await snapshot(redis)
        other = await h.api.post("/threads", json={**DEPLOY, "text": "deploy web 2.0"}, headers=key)
        assert other.status_code == 422, other.text
        assert other.json()["error"] == "invalid_input"
        assert "Idempotency-Key 'k-reused'" in other.json()["detail"]
        assert await snapshot(redis) == before

        await h.drain()
        (req,) = (await h.api.get("/requests")).json()["items"]
        url = f"/requests/{req['id']}/decision"
        key = {"Idempotency-Key": "d-reused"}
        ok = await h.api.post(url, json={"decision": "approve", "by": "bob"}, headers=key)
        assert ok.status_code == 200, ok.text
        before = await snapshot(redis)
        # The request is closed now, so the refusal is found after the write is refused.
        flip = {"decision": "reject", "by": "bob", "reason": "no"}
        r = await h.api.post(url, json=flip, headers=key)
        assert r.status_code == 422 and "'d-reused'" in r.json()["detail"], r.text
        # The key of a message used on a decision: another route, another request.
        r = await h.api.post(f"/threads/{tid}/messages", json={"text": "hi"}, headers=key)
        assert r.status_code == 422 and "'d-reused'" in r.json()["detail"], r.text
        assert await snapshot(redis) == before
        replay = await h.api.post(url, json={"decision": "approve", "by": "bob"}, headers=key)
        assert replay.status_code == 200 and replay.json()["status"] == "approved"


async def test_a_key_over_200_characters_is_refused_naming_the_header(
    redis_server: EmbeddedRedis, redis: Redis
) -> None:
    async with Harness(redis_server.url) as h:
        longest, over = "k" * 200, "k" * 201
        r = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": over})
        assert r.status_code == 422, r.text
        assert r.json() == {
            "error": "invalid_input",
            "detail": "Idempotency-Key: String should have at most 200 characters",
            "errors": [
                {"field": "Idempotency-Key", "error": "String should have at most 200 characters"}
            ],
        }
        assert await redis.zcard("gl:threads") == 0
        r = await h.api.post("/threads", json=DEPLOY, headers={"Idempotency-Key": longest})
        assert r.status_code == 201, r.text
        approval = {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}}
        decision = {"decision": "approve", "by": "bob"}
        for url, body in [("/approvals", approval), ("/requests/rq_x/decision", decision)]:
            r = await h.api.post(url, json=body, headers={"Idempotency-Key": ""})
            assert r.status_code == 422, (url, r.text)
            assert r.json()["errors"][0]["field"] == "Idempotency-Key", (url, r.text)
