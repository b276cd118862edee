"""CPU the web app spends per REST request, in process: no HTTP server, no client.

The app (``bot.web.app.create_app``, as ``python -m bot web`` builds it) is called
directly through ASGI, one request at a time, against the embedded Redis; the
process's CPU time (``time.process_time``) is summed around each call only, so
neither the driver nor the worker that steps threads between the two phases is
counted. The cycle runs twice: with ``API_TOKEN`` (found without Redis), then with
an agent token creating and an approver token deciding, tokens such as ``greenlight
tokens create`` makes, found by their digest in Redis. Signed Slack ``app_mention``
events (``POST /slack/events``) are measured the same way, against the local Slack
Web API stand-in. Wall-clock figures on a shared
machine are noisy, and so is CPU time when other processes compete for the caches:
each figure is the lowest of ``--rounds``.

    python -m bench.web_cpu [--requests 200] [--rounds 5] [--profile out.prof]

``--profile`` writes a cProfile of the measured calls (read with ``pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import slack_events
from bot.serve import run_loop
from bot.storage.embedded import EmbeddedRedis
from bot.storage.tokens import Tokens
from tests.harness import TOKEN, Harness, test_settings
from tests.standins.slack_api import SlackAPI


async def call(
    app: Any, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request through the app's ASGI interface; its status and body. ``headers``
    may name another ``Authorization`` than the admin token's."""
    given = {k.lower(): v for k, v in (headers or {}).items()}
    given.setdefault("authorization", f"Bearer {TOKEN}")
    extra = [(k.encode(), v.encode()) for k, v in given.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a disconnect never comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


Requests = list[tuple[str, str, bytes, dict[str, str]]]


async def measure(
    app: Any, requests: Requests, profiler: cProfile.Profile | None
) -> tuple[float, list[bytes]]:
    """CPU seconds the app spent on ``requests`` (sent one after another); their bodies."""
    cpu = 0.0
    bodies: list[bytes] = []
    for method, path, body, headers in requests:
        start = time.process_time()
        if profiler is not None:
            profiler.enable()
        status, out = await call(app, method, path, body, headers)
        if profiler is not None:
            profiler.disable()
        cpu += time.process_time() - start
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {out[:200]!r}")
        bodies.append(out)
    return cpu, bodies


def mentions(first: int, n: int) -> Requests:
    """Signed ``app_mention`` events, each starting a conversation (as ``bench.slack_events``)."""
    bodies = [slack_events.mention(first + i) for i in range(n)]
    return [("POST", "/slack/events", b, slack_events.signed(b)) for b in bodies]


@dataclass(frozen=True)
class Scoped:
    """The headers of an agent token and of bob's approver token, made in Redis."""

    agent: dict[str, str]
    approver: dict[str, str]

    @staticmethod
    async def make(h: Harness) -> Scoped:
        tokens, now = Tokens(h.redis), h.rt.clock.now()
        agent, _ = await tokens.create("bench-agent", "agent", None, now=now)
        approver, _ = await tokens.create("bench-bob", "approver", "bob", now=now)
        return Scoped({"Authorization": f"Bearer {agent}"}, {"Authorization": f"Bearer {approver}"})


async def cycle(
    h: Harness, n: int, profiler: cProfile.Profile | None, tokens: Scoped | None = None
) -> tuple[float, float]:
    """CPU seconds for ``n`` thread creations, and for the ``n`` decisions that follow;
    with ``tokens``, created by its agent token and decided by its approver token."""
    create = json.dumps({"agent": "deploy", "text": "deploy api 1.5.0 to production"})
    as_agent = tokens.agent if tokens else {}
    cpu_create, made = await measure(
        h.app, [("POST", "/threads", create.encode(), as_agent)] * n, profiler
    )
    await h.drain()  # the worker suspends every thread on its approval: not measured
    decision = json.dumps({"decision": "approve", "by": "bob"}).encode()
    requests = []
    for raw in made:
        state = await h.thread(json.loads(raw)["id"])
        req = next(iter(state.requests.values()))
        requests.append(
            ("POST", f"/requests/{req.id}/decision", decision, tokens.approver if tokens else {})
        )
    cpu_decide, _ = await measure(h.app, requests, profiler)
    return cpu_create, cpu_decide


async def main(n: int, rounds: int, profile: str | None) -> dict[str, Any]:
    profiler = cProfile.Profile() if profile else None
    creates: list[float] = []
    decides: list[float] = []
    scoped: list[tuple[float, float]] = []
    events: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        server.start()
        try:
            async with SlackAPI(users=slack_events.USERS) as api:
                settings = test_settings(
                    slack_bot_token=api.bot_token,
                    slack_signing_secret=slack_events.SECRET,
                    slack_api_url=api.url,
                )
                async with Harness(server.url, settings=settings) as h:
                    gc.freeze()  # as ``python -m bot web`` does once it is built (bot.serve)
                    tokens = await Scoped.make(h)
                    await cycle(h, 20, None)  # warm-up
                    await cycle(h, 20, None, tokens)
                    await measure(h.app, mentions(10**7, 20), None)
                    for i in range(rounds):
                        c, d = await cycle(h, n, profiler)
                        creates.append(c * 1000 / n)
                        decides.append(d * 1000 / n)
                        c, d = await cycle(h, n, profiler, tokens)
                        scoped.append((c * 1000 / n, d * 1000 / n))
                        e, _ = await measure(h.app, mentions((i + 1) * n, n), profiler)
                        events.append(e * 1000 / n)
        finally:
            server.stop()
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    return {
        "benchmark": "web_cpu",
        "requests": n,
        "rounds": rounds,
        "create_thread_cpu_ms": round(min(creates), 3),
        "decision_cpu_ms": round(min(decides), 3),
        "slack_event_cpu_ms": round(min(events), 3),
        # The same with an agent token (POST /threads) and an approver token (decisions),
        # which are looked up in Redis; API_TOKEN is not.
        "create_thread_agent_token_cpu_ms": round(min(c for c, _ in scoped), 3),
        "decision_approver_token_cpu_ms": round(min(d for _, d in scoped), 3),
        "per_round": {
            "create": [round(c, 3) for c in creates],
            "decide": [round(d, 3) for d in decides],
            "create_agent_token": [round(c, 3) for c, _ in scoped],
            "decide_approver_token": [round(d, 3) for _, d in scoped],
            "slack_event": [round(e, 3) for e in events],
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default=None)
    ns = parser.parse_args()

    async def go() -> None:
        print(json.dumps(await main(ns.requests, ns.rounds, ns.profile), indent=2))

    run_loop(go())  # the event loop and collector settings the web process runs with
