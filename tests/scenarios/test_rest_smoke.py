"""The README's promise over real HTTP: launch the deploy agent, approve, get the reply."""

from __future__ import annotations

from bot.embedded import EmbeddedRedis
from tests.harness import Harness


async def test_launch_approve_done(redis_server: EmbeddedRedis, redis: object) -> None:
    async with Harness(redis_server.url) as h:
        r = await h.api.post(
            "/threads",
            json={"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"},
        )
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        await h.drain()
        (req,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
        assert req["tool"] == "deploy" and req["args"]["environment"] == "production"

        r = await h.api.post(
            f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
        )
        assert r.status_code == 200, r.text
        await h.drain()
        thread = (await h.api.get(f"/threads/{tid}")).json()
        assert thread["status"] == "done"
        assert "-> 1.5.0 on production" in thread["last_reply"]
