"""HITL cycles per second, suspend/resume latency, and Redis bytes per suspended thread.

One cycle: a new thread with a user message -> the (offline) model picks a gated
tool -> the thread is suspended durably -> a decision through the public decision
path -> the tool runs -> the model replies -> done. Real Redis (embedded binary,
AOF everysec), a real worker consuming the queue. Prints JSON.

    python -m bench.cycles [--cycles N] [--in-flight 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.domain import ids
from bot.domain.agents import load_agents
from bot.domain.events import Actor, Decision, Origin
from bot.domain.policy import Groups
from bot.domain.reducer import Status, ThreadState
from bot.models.offline import OfflineModel
from bot.runtime import Runtime, build_runtime
from bot.serve import run_loop
from bot.settings import Settings
from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis
from channels import build_channels

ANN = Actor(channel="api", id="ann")
BOB = Actor(channel="api", id="bob")
TEXT = "deploy api 1.5.0 to production"


class Waiter:
    """Futures resolved by the worker's on_step hook when a thread reaches a status."""

    def __init__(self) -> None:
        self.wanted: dict[str, tuple[Status, asyncio.Future[ThreadState]]] = {}

    def on_step(self, state: ThreadState) -> None:
        want = self.wanted.get(state.id)
        if want and state.status is want[0] and not want[1].done():
            want[1].set_result(state)

    def expect(self, thread_id: str, status: Status) -> asyncio.Future[ThreadState]:
        fut: asyncio.Future[ThreadState] = asyncio.get_running_loop().create_future()
        self.wanted[thread_id] = (status, fut)
        return fut


async def cycle(rt: Runtime, waiter: Waiter, lat: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    suspended = await start(rt, waiter)
    tid = suspended.id
    t1 = time.perf_counter()
    (req,) = suspended.open_requests()
    done = waiter.expect(tid, Status.DONE)
    await rt.decisions.decide(req.id, Decision.APPROVE, BOB)
    await done
    t2 = time.perf_counter()
    lat["suspend"].append(t1 - t0)
    lat["resume"].append(t2 - t1)


async def start(rt: Runtime, waiter: Waiter) -> ThreadState:
    """A new thread with a user message, returned once it is suspended for approval."""
    tid = ids.new_thread_id()
    suspended = waiter.expect(tid, Status.AWAITING_APPROVAL)
    await rt.inbox.message(
        agent="deploy", text=TEXT, by=ANN, origin=Origin(channel="api"), thread_id=tid
    )
    return await suspended


async def run(rt: Runtime, waiter: Waiter, cycles: int, in_flight: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"suspend": [], "resume": []}
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await cycle(rt, waiter, lat)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(cycles)))
    elapsed = time.perf_counter() - t0
    return {
        "in_flight": in_flight,
        "cycles": cycles,
        "cycles_per_s": round(cycles / elapsed, 1),
        "suspend_ms": _pcts(lat["suspend"]),
        "resume_ms": _pcts(lat["resume"]),
    }


def _pcts(xs: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(xs, n=100)
    return {"p50": round(qs[49] * 1000, 3), "p99": round(qs[98] * 1000, 3)}


async def bytes_per_suspended(rt: Runtime, waiter: Waiter, n: int) -> float:
    before = int((await rt.redis.info("memory"))["used_memory"])
    for _ in range(n):
        await start(rt, waiter)
    after = int((await rt.redis.info("memory"))["used_memory"])
    return round((after - before) / n, 1)


async def main(cycles: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec")
        server.start()
        try:
            redis = await connect(server.url)
            agents = load_agents()
            groups = Groups({"deployers": ("bob",), "finance": ("bob",)})
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
            # The channels production always has (the webhook channel), so every
            # step pays for delivery as it would there.
            rt = build_runtime(
                redis,
                agents,
                OfflineModel(agents),
                channels=lambda ports: build_channels(settings, ports),
                groups=groups,
            )
            for channel in rt.channels:
                await channel.start(inbound=False)
            waiter = Waiter()
            stop = asyncio.Event()
            worker = rt.worker(concurrency=max(in_flight, 1), block_ms=100, on_step=waiter.on_step)
            serving = asyncio.create_task(worker.run(stop))
            await run(rt, waiter, 200, 8)  # warm up
            results = {
                "redis": "embedded redis-server 6.2, appendonly yes, appendfsync everysec",
                "event_loop": type(asyncio.get_running_loop()).__module__,
                "model": "offline",
                "sequential": await run(rt, waiter, max(cycles // 4, 100), 1),
                "concurrent": await run(rt, waiter, cycles, in_flight),
                "redis_bytes_per_suspended_thread": await bytes_per_suspended(rt, waiter, 1000),
            }
            stop.set()
            await serving
            for channel in rt.channels:
                await channel.stop()
            await redis.aclose()
        finally:
            server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=32)
    ns = parser.parse_args()
    run_loop(main(ns.cycles, ns.in_flight))
