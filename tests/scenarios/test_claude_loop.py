"""The deploy agent on Claude: the real Anthropic adapter inside the worker, end to end.

The SDK talks to a local server speaking the Messages API; everything else is
the production path: REST in, the worker's loop, approval, the tool, the reply.
"""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from bot.models.anthropic import AnthropicModel
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.standins.anthropic_api import AnthropicAPI

PROMPT = (Path(__file__).parents[2] / "agents" / "deploy" / "prompt.md").read_text()
DEPLOY = {"service": "web", "version": "2.1.0", "environment": "production"}


async def test_deploy_on_claude_asks_approval_then_replies(
    redis_server: EmbeddedRedis, redis: Redis, claude: tuple[AnthropicAPI, AnthropicModel]
) -> None:
    api, model = claude
    api.push_error(429)  # rate-limited once: the loop never notices
    api.push_tool_use([("deploy", DEPLOY)])
    async with Harness(redis_server.url, model=model) as h:
        r = await h.api.post(
            "/threads",
            json={"agent": "deploy", "user": "ann", "text": "ship web 2.1.0 to prod please"},
        )
        tid = r.json()["id"]
        await h.drain()

        (req,) = (await h.api.get("/requests")).json()["items"]
        assert (req["tool"], req["args"]) == ("deploy", DEPLOY)
        first = api.requests[-1].body
        assert first["system"][0]["text"] == PROMPT
        assert {t["name"] for t in first["tools"]} >= {"deploy", "rollback", "ask_human", "reply"}
        context = first["messages"][0]["content"]
        assert "ship web 2.1.0 to prod please" in context
        assert '<prefetched name="services">' in context
        assert tid not in json.dumps(first)  # machine ids stay out of the model's context

        api.push_tool_use([("reply", {"text": "Deployed web 2.1.0.", "final": True})])
        r = await h.api.post(
            f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
        )
        assert r.status_code == 200
        await h.drain()

        thread = (await h.api.get(f"/threads/{tid}")).json()
        assert (thread["status"], thread["last_reply"]) == ("done", "Deployed web 2.1.0.")
        second = api.requests[-1].body["messages"][0]["content"]
        assert '<tool_result tool="deploy" outcome="ok">' in second
        assert "on production" in second
        assert len(api.requests) == 3 and api.pending == 0
