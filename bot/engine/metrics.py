"""Every Prometheus metric Greenlight exposes, defined once.

Counters and histograms count what *this* process did (a web process records
decisions, a worker steps threads and calls the model): Prometheus scrapes
each process and ``sum()`` adds them up. What is shared by every process, the
open requests and the queue, is read from Redis when ``/metrics`` is scraped
(``read_shared``), so any process reports the same, exact figure; aggregate it
with ``max()``, not ``sum()``, when several processes are scraped.

Labels are bounded: agents, channels, tools, models, outcomes; never an id,
a text or a secret.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from bot.domain.reducer import ThreadState
from bot.engine.waiting import Summaries
from bot.storage.connection import Client
from bot.storage.queue import backlog

# Humans answer in seconds to days.
_HUMAN_BUCKETS = (
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    4 * 3600,
    12 * 3600,
    86400,
    3 * 86400,
)

OPEN_REQUESTS = Gauge(
    "greenlight_open_requests",
    "Requests waiting for a human, read from Redis at scrape time.",
    ["agent", "kind"],
)
QUEUE_DEPTH = Gauge(
    "greenlight_queue_depth",
    "Queue entries not yet acknowledged (waiting or being stepped), read at scrape time.",
)
QUEUE_LAG = Gauge(
    "greenlight_queue_lag_seconds",
    "Age of the oldest queue entry not yet acknowledged (0 when the queue is empty).",
)
DECISIONS = Counter(
    "greenlight_decisions_total",
    "Decisions recorded (one per approver's vote), by outcome (approve, reject, answer,"
    " expired) and channel.",
    ["outcome", "channel"],
)
TIME_TO_DECISION = Histogram(
    "greenlight_time_to_decision_seconds",
    "From a request's opening to the decision, answer or expiry that closed it, by the"
    " request's outcome (approved, rejected, answered, expired).",
    ["agent", "kind", "outcome"],
    buckets=_HUMAN_BUCKETS,
)
STEPS = Counter("greenlight_steps_total", "Times a worker stepped a thread it leased.", ["agent"])
CYCLES = Counter("greenlight_cycles_total", "Threads that reached done.", ["agent"])
TOOL_RUNS = Counter(
    "greenlight_tool_runs_total", "Tool runs, by tool and outcome.", ["tool", "outcome"]
)
LEASE_RECLAIMS = Counter(
    "greenlight_lease_reclaims_total",
    "Queue entries taken over from a worker that stopped acknowledging them (it died).",
)
LEASES_LOST = Counter(
    "greenlight_leases_lost_total", "Thread leases that ran out while a worker held them."
)
DELIVERIES = Counter(
    "greenlight_deliveries_total",
    "Events handed to a channel, by channel and result (ok, failed).",
    ["channel", "result"],
)
DELIVERY_RETRIES = Counter(
    "greenlight_delivery_retries_total", "Failed deliveries scheduled again.", ["channel"]
)
DELIVERY_GIVE_UPS = Counter(
    "greenlight_delivery_give_ups_total",
    "Deliveries given up on (recorded as delivery_failed).",
    ["channel"],
)
DELIVERY_RETRIES_DROPPED = Counter(
    "greenlight_delivery_retries_dropped_total",
    "Retries dropped untried, with no delivery_failed event, by channel and reason: gone (the"
    " thread or its event left Redis: archived), channel (not configured in this process),"
    " unreadable (the job; channel empty), error (failed in Greenlight past the give-up time).",
    ["channel", "reason"],
)
DELIVERY_RETRY_ERRORS = Counter(
    "greenlight_delivery_retry_errors_total",
    "Retries that failed in Greenlight itself, not in their channel (Redis unavailable, an"
    " unreadable thread): tried again after the claim's hold, other retries unharmed.",
    ["channel"],
)
MODEL_LATENCY = Histogram(
    "greenlight_model_seconds",
    "One model turn, retries included.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
MODEL_TOKENS = Counter(
    "greenlight_model_tokens_total",
    "Tokens the provider reported, by direction (input, output).",
    ["model", "direction"],
)
MODEL_ERRORS = Counter(
    "greenlight_model_errors_total", "Model turns that failed after retries.", ["model"]
)

HTTP_REQUESTS = Counter(
    "greenlight_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "greenlight_http_request_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
)


@lru_cache(maxsize=4096)
def of(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: prometheus_client checks the values and
    takes a lock on every call, about 8 µs here, several times per step. Not for a metric
    that is ``clear()``ed (``OPEN_REQUESTS``), whose children are replaced."""
    return metric.labels(*labels)


KINDS = ("approval", "question")


def decided(state: ThreadState, request_id: str, outcome: str, channel: str) -> None:
    """Count one decision (a vote, an answer, an expiry) and, if it closed its request, its time."""
    of(DECISIONS, outcome, channel).inc()
    req = state.requests.get(request_id)
    if req is not None and not req.is_open and req.closed_at is not None:
        took = max(0.0, req.closed_at - req.asked.at)
        of(TIME_TO_DECISION, state.agent, req.kind, req.status.value).observe(took)


async def read_shared(waiting: Summaries, redis: Client, agents: Iterable[str]) -> None:
    """Set the gauges every process shares from Redis: open requests and the queue.

    Open requests are counted from their summaries (agent and kind), which the process
    reads again only for the shards where something changed since its last scrape: no
    thread is loaded, however many wait, but to build, once, the summary of a request
    opened before summaries were kept. Every agent and kind is reported, 0 included, so a
    gauge falls to 0 instead of vanishing.
    """
    counts = {(agent, kind): 0 for agent in agents for kind in KINDS}
    for item in await waiting.waiting():
        counts[item.agent, item.kind] = counts.get((item.agent, item.kind), 0) + 1
    OPEN_REQUESTS.clear()
    for (agent, kind), n in counts.items():
        OPEN_REQUESTS.labels(agent, kind).set(n)
    depth, oldest = await backlog(redis)
    QUEUE_DEPTH.set(depth)
    QUEUE_LAG.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
