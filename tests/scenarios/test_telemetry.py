"""Operations end to end: /metrics after a flow, one trace per approval cycle, JSON logs.

A real Greenlight (Redis, HTTP, the Slack stand-in, a webhook receiver) with the
OpenTelemetry SDK exporting to memory. Metrics are this process's, so the
counters are compared before and after; the gauges are read from Redis.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bot.engine import tracing
from bot.models.anthropic import AnthropicModel
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.telemetry import log_handler
from tests.channels.slack.conftest import ANN, BOB, USERS, slack_settings
from tests.channels.slack.slack import Slack
from tests.harness import TOKEN, Harness
from tests.harness import test_settings as make_settings
from tests.standins.anthropic_api import AnthropicAPI
from tests.standins.receiver import Receiver
from tests.standins.slack_api import SlackAPI

DEPLOY = "deploy api 1.5.0 to production"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """The SDK, installed once for the session (OpenTelemetry allows one provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # exported as each span ends
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
async def api() -> AsyncIterator[SlackAPI]:
    async with SlackAPI(users=USERS) as stand_in:
        yield stand_in


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI, spans: InMemorySpanExporter
) -> AsyncIterator[Harness]:
    settings = slack_settings(
        api, approver_groups={"deployers": ["bob", f"slack:{BOB}"], "finance": ["bob"]}
    )
    async with Harness(redis_server.url, settings=settings) as harness:
        yield harness


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the root logger writes with LOG_FORMAT=json, as the entry points set it up."""
    out = io.StringIO()
    handler = log_handler(make_settings(log_format="json"), out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


async def scrape(h: Harness) -> tuple[str, Samples]:
    r = await h.api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    return r.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def launch(h: Harness, callback_url: str) -> tuple[str, str]:
    """A thread over REST that asks for approval: its id and its request's id."""
    body = {"agent": "deploy", "user": "ann", "text": DEPLOY, "callback_url": callback_url}
    r = await h.api.post("/threads", json=body)
    assert r.status_code == 201, r.text
    await h.drain()
    thread = (await h.api.get(f"/threads/{r.json()['id']}")).json()
    (req,) = thread["open_requests"]
    return thread["id"], req["id"]


async def test_metrics_show_the_decision_its_latency_and_the_open_request_closing(
    h: Harness, receiver: Receiver
) -> None:
    r = await h.http.get("/metrics")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert (
        await h.http.get("/metrics", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    _, before = await scrape(h)
    assert value(before, "greenlight_open_requests", agent="deploy", kind="approval") == 0

    tid, rid = await launch(h, receiver.url)
    _, waiting = await scrape(h)
    assert value(waiting, "greenlight_open_requests", agent="deploy", kind="approval") == 1
    assert value(waiting, "greenlight_queue_depth") == 0

    r = await h.api.post(f"/requests/{rid}/decision", json={"decision": "approve", "by": "bob"})
    assert r.status_code == 200, r.text
    await h.drain()
    assert (await h.thread(tid)).status == "done"
    text, after = await scrape(h)

    assert value(after, "greenlight_open_requests", agent="deploy", kind="approval") == 0

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    decided = {"agent": "deploy", "kind": "approval", "outcome": "approved"}
    assert grew("greenlight_time_to_decision_seconds_count", **decided) == 1
    assert value(after, "greenlight_time_to_decision_seconds_bucket", **decided, le="+Inf") >= 1
    assert grew("greenlight_decisions_total", outcome="approve", channel="api") == 1
    assert grew("greenlight_cycles_total", agent="deploy") == 1
    assert grew("greenlight_steps_total", agent="deploy") >= 2
    assert grew("greenlight_tool_runs_total", tool="deploy", outcome="ok") == 1
    assert grew("greenlight_model_seconds_count", model="offline") >= 2
    assert grew("greenlight_deliveries_total", channel="webhook", result="ok") >= 2
    assert grew("greenlight_http_requests_total", method="POST", route="/threads", status="201")
    assert TOKEN not in text and h.settings.slack_bot_token is not None
    assert h.settings.slack_bot_token.get_secret_value() not in text


async def test_a_queue_waiting_shows_its_depth_and_lag(h: Harness, receiver: Receiver) -> None:
    body = {"agent": "deploy", "user": "ann", "text": DEPLOY}
    assert (await h.api.post("/threads", json=body)).status_code == 201
    _, samples = await scrape(h)
    assert value(samples, "greenlight_queue_depth") == 1
    assert value(samples, "greenlight_queue_lag_seconds") >= 0
    await h.drain()
    _, samples = await scrape(h)
    assert value(samples, "greenlight_queue_depth") == 0
    assert value(samples, "greenlight_queue_lag_seconds") == 0


def trace_of(spans: InMemorySpanExporter, root: ReadableSpan) -> list[ReadableSpan]:
    assert root.context is not None
    return [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and s.context.trace_id == root.context.trace_id
    ]


def child_of(found: list[ReadableSpan], parent: ReadableSpan, name: str) -> ReadableSpan:
    assert parent.context is not None
    children = [
        s
        for s in found
        if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    assert children, (name, [(s.name, s.parent) for s in found])
    return children[0]


async def test_one_approval_cycle_is_one_trace_from_the_http_request_to_each_delivery(
    h: Harness, receiver: Receiver, spans: InMemorySpanExporter, api: SlackAPI
) -> None:
    tid, rid = await launch(h, receiver.url)
    spans.clear()

    r = await h.api.post(f"/requests/{rid}/decision", json={"decision": "approve", "by": "bob"})
    assert r.status_code == 200, r.text
    await h.drain()

    (ingress,) = [
        s for s in spans.get_finished_spans() if s.name == "POST /requests/{request_id}/decision"
    ]
    assert ingress.kind is SpanKind.SERVER and ingress.parent is None
    assert ingress.attributes is not None
    assert ingress.attributes[tracing.REQUEST_ID] == rid
    assert ingress.attributes[tracing.THREAD_ID] == tid
    assert ingress.attributes["http.response.status_code"] == 200
    found = trace_of(spans, ingress)
    step = child_of(found, ingress, "step")  # across the queue, carried in its entry
    assert step.kind is SpanKind.CONSUMER
    assert step.attributes is not None and step.attributes[tracing.THREAD_ID] == tid
    tool = child_of(found, step, "tool deploy")
    model = child_of(found, step, "model")
    deliveries = {
        (s.attributes or {}).get("greenlight.event"): s
        for s in found
        if s.name == "deliver webhook" and s.parent and s.parent.span_id == step.context.span_id
    }
    assert {"approval_decision", "tool_result", "agent_reply"} <= set(deliveries)
    decision, delivery = deliveries["approval_decision"], deliveries["agent_reply"]
    assert tool.attributes is not None and tool.attributes["greenlight.outcome"] == "ok"
    assert model.attributes is not None and model.attributes[tracing.THREAD_ID] == tid
    assert delivery.attributes is not None and delivery.attributes[tracing.THREAD_ID] == tid
    # In that order: the decision goes out, the approved tool runs, the model reads its
    # result, the reply goes out.
    assert tool.start_time is not None and model.start_time is not None
    assert delivery.start_time is not None and decision.start_time is not None
    assert decision.start_time < tool.start_time < model.start_time < delivery.start_time

    # The callback for the reply carried the thread; nothing in the trace carries a secret.
    assert any(req.json().get("thread_id") == tid for req in receiver.requests)
    dumped = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert TOKEN not in dumped and api.bot_token not in dumped


async def test_a_slack_click_traces_to_the_slack_delivery(
    h: Harness, api: SlackAPI, spans: InMemorySpanExporter
) -> None:
    slack = Slack(h.http, api)
    root = await slack.mention(DEPLOY, ANN)
    await h.drain()
    (card,) = [k for k, m in api.messages.items() if m.get("thread_ts") == root and m.get("blocks")]
    spans.clear()

    assert (await slack.click(card, "gl_approve", BOB)).status_code == 200
    await h.drain()

    (ingress,) = [s for s in spans.get_finished_spans() if s.name == "POST /slack/events"]
    found = trace_of(spans, ingress)
    step = child_of(found, ingress, "step")
    child_of(found, step, "tool deploy")
    child_of(found, step, "model")
    slack_delivery = child_of(found, step, "deliver slack")
    assert slack_delivery.attributes is not None
    assert slack_delivery.attributes["greenlight.event"] in {"approval_decision", "agent_reply"}
    dumped = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert api.bot_token not in dumped and "test-signing-secret" not in dumped


async def test_open_requests_are_counted_by_agent_and_kind_from_their_summaries(
    h: Harness, receiver: Receiver, redis: Redis
) -> None:
    tid, rid = await launch(h, receiver.url)
    body = {"agent": "planner", "question": "Which region first?"}
    r = await h.api.post("/questions", json=body)
    assert r.status_code == 201, r.text
    # An older deployment opened the approval: in the open index, with no summary beside it.
    assert await redis.hdel(keys.waiting(keys.shard_of(tid)), rid) == 1

    _, samples = await scrape(h)
    assert value(samples, "greenlight_open_requests", agent="deploy", kind="approval") == 1
    assert value(samples, "greenlight_open_requests", agent="planner", kind="question") == 1
    assert value(samples, "greenlight_open_requests", agent="deploy", kind="question") == 0
    assert await redis.hexists(keys.waiting(keys.shard_of(tid)), rid)  # built once

    r = await h.api.post(f"/requests/{r.json()['id']}/answer", json={"text": "eu", "by": "bob"})
    assert r.status_code == 200, r.text
    _, samples = await scrape(h)
    assert value(samples, "greenlight_open_requests", agent="planner", kind="question") == 0
    assert value(samples, "greenlight_open_requests", agent="deploy", kind="approval") == 1


async def test_json_logs_carry_the_thread_and_no_secret(
    h: Harness, receiver: Receiver, logs: io.StringIO, api: SlackAPI
) -> None:
    tid, rid = await launch(h, receiver.url)
    r = await h.api.post(f"/requests/{rid}/decision", json={"decision": "approve", "by": "bob"})
    assert r.status_code == 200
    await h.drain()

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    # Greenlight's lines about the thread, not the test client's own (it calls h.url).
    about = [line for line in lines if tid in line["message"] and h.url not in line["message"]]
    assert [line for line in about if line.get("thread_id") != tid] == []
    # A line each change of the thread's status, and each delivery to the callback.
    said = [line["message"].split()[3] for line in about if line["logger"].endswith("threadlog")]
    assert said == ["running", "awaiting_approval", "running", "done"]
    assert len([line for line in about if "sent to the callback" in line["message"]]) == 3
    assert any(line.get("request_id") == rid for line in lines)
    assert all("trace_id" in line for line in about)
    assert TOKEN not in logs.getvalue() and api.bot_token not in logs.getvalue()


def test_tracing_is_off_without_an_endpoint_and_named_with_one() -> None:
    from bot.telemetry import tracer_provider

    assert tracer_provider(make_settings(), "web") is None
    provider = tracer_provider(
        make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318"), "worker"
    )
    assert provider is not None
    attributes: dict[str, Any] = dict(provider.resource.attributes)
    assert attributes["service.name"] == "greenlight"
    assert attributes["greenlight.process"] == "worker"
    provider.shutdown()


async def test_claude_turns_count_their_tokens_latency_and_errors(
    redis_server: EmbeddedRedis, redis: Redis, spans: InMemorySpanExporter
) -> None:
    async with AnthropicAPI() as claude:
        model = AnthropicModel(
            api_key="sk-ant-secret-key", model="claude-test", base_url=claude.url, max_retries=0
        )
        claude.push_error(500)  # no retries left: the turn fails, and the loop records it
        claude.push_tool_use([("reply", {"text": "Which version?", "final": False})])
        async with Harness(redis_server.url, model=model) as h:
            _, before = await scrape(h)
            r = await h.api.post("/threads", json={"agent": "deploy", "user": "ann", "text": "hi"})
            await h.drain()
            text, after = await scrape(h)
        await model.aclose()
    tid = r.json()["id"]

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("greenlight_model_errors_total", model="claude-test") == 1
    assert grew("greenlight_model_seconds_count", model="claude-test") == 2
    # The stand-in reports 10 input and 5 output tokens a message, as the API's usage does.
    assert grew("greenlight_model_tokens_total", model="claude-test", direction="input") == 10
    assert grew("greenlight_model_tokens_total", model="claude-test", direction="output") == 5
    turns = [
        s
        for s in spans.get_finished_spans()
        if s.name == "model" and (s.attributes or {}).get(tracing.THREAD_ID) == tid
    ]
    assert len(turns) == 2 and turns[1].attributes is not None
    assert turns[1].attributes["gen_ai.usage.input_tokens"] == 10
    dumped = json.dumps([json.loads(s.to_json()) for s in turns])
    assert "sk-ant-secret-key" not in dumped and "sk-ant-secret-key" not in text


async def test_a_callers_traceparent_is_continued_and_the_path_is_not_recorded(
    h: Harness, spans: InMemorySpanExporter
) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await h.api.get("/threads/th_00000000000000000000", headers={"traceparent": caller})
    assert r.status_code == 404
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET /threads/{thread_id}"][-1:]
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 404
    assert span.attributes[tracing.THREAD_ID] == "th_00000000000000000000"
    assert "url.path" not in span.attributes and "url.query" not in span.attributes


async def test_a_static_files_path_is_counted_by_its_mount_not_by_the_file_asked_for(
    h: Harness,
) -> None:
    """Anyone may ask for any path under /static: each must not become a new series."""
    assert (await h.http.get("/static/inbox.css")).status_code == 200
    assert (await h.http.get("/static/made-up-7f3a9c.css")).status_code == 404
    text, samples = await scrape(h)
    assert "made-up-7f3a9c" not in text and "inbox.css" not in text
    static = {"method": "GET", "route": "/static/{path}"}
    assert value(samples, "greenlight_http_requests_total", **static, status="200") >= 1
    assert value(samples, "greenlight_http_requests_total", **static, status="404") >= 1
