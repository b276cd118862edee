"""A hosted agent on Claude asks for a typed answer: the schema is checked when it asks, the
answer when it is given, and the agent resumes once with the answer as JSON."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from bot.domain.events import ErrorEvent, HumanAnswer
from bot.models.anthropic import AnthropicModel
from bot.storage.embedded import EmbeddedRedis
from tests.harness import Harness
from tests.standins.anthropic_api import AnthropicAPI

PLAN = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "regions": {"type": "array", "items": {"enum": ["eu", "us"]}, "uniqueItems": True},
        "start": {"type": "string", "format": "date"},
    },
    "required": ["replicas", "regions"],
}


async def test_agent_asks_with_a_schema_and_resumes_once_with_the_json_value(
    redis_server: EmbeddedRedis, redis: Redis, claude: tuple[AnthropicAPI, AnthropicModel]
) -> None:
    api, model = claude
    free_list = {"type": "array", "items": {"type": "string"}}
    api.push_tool_use([("ask_human", {"question": "Which regions?", "answer_schema": free_list})])
    api.push_tool_use([("ask_human", {"question": "How should web scale?", "answer_schema": PLAN})])
    async with Harness(redis_server.url, model=model) as h:
        r = await h.api.post(
            "/threads", json={"agent": "deploy", "user": "ann", "text": "scale web for launch"}
        )
        tid = r.json()["id"]
        await h.drain()

        # The unsupported schema was the model's mistake: it reads why, and asks again.
        (error,) = [e for e in await h.rt.log.events(tid) if isinstance(e, ErrorEvent)]
        assert "an array must be several choices" in error.message
        seen = api.requests[1].body["messages"][0]["content"]
        assert "an array must be several choices" in seen
        tools = {t["name"]: t for t in api.requests[0].body["tools"]}
        assert "answer_schema" in tools["ask_human"]["input_schema"]["properties"]

        (req,) = (await h.api.get("/requests")).json()["items"]
        assert (req["question"], req["answer_schema"]) == ("How should web scale?", PLAN)

        async def answer(text: str) -> int:
            url = f"/requests/{req['id']}/answer"
            return (await h.api.post(url, json={"text": text, "by": "bob"})).status_code

        assert await answer("three in eu") == 422  # not JSON
        r = await h.api.post(
            f"/requests/{req['id']}/answer",
            json={"text": '{"replicas": 0, "regions": ["eu"]}', "by": "bob"},
        )
        assert r.status_code == 422 and "less than the minimum of 1" in r.json()["detail"]

        api.push_tool_use([("reply", {"text": "Scaling to 3 in eu and us.", "final": True})])
        value = {"replicas": 3, "regions": ["eu", "us"], "start": "2026-12-01"}
        other = {"replicas": 5, "regions": ["us"]}
        # Two people answer at once: one answer lands, the agent resumes once.
        codes = await asyncio.gather(answer(json.dumps(value)), answer(json.dumps(other)))
        assert sorted(codes) == [200, 409]
        await h.drain()

        answers = [e for e in await h.rt.log.events(tid) if isinstance(e, HumanAnswer)]
        assert len(answers) == 1
        got = json.loads(answers[0].text)
        assert got in (value, other)
        thread = (await h.api.get(f"/threads/{tid}")).json()
        assert (thread["status"], thread["last_reply"]) == ("done", "Scaling to 3 in eu and us.")
        last = api.requests[-1].body["messages"][0]["content"]
        # The agent receives the value as JSON, marked so, not a quoted string.
        assert f'<human_answer from="bob" format="json">\n{json.dumps(got, sort_keys=True)}' in last
        assert len(api.requests) == 3 and api.pending == 0
