"""HITL cycles per second, suspend/resume latency, CPU per cycle and Redis bytes per thread.

One cycle: a new thread with a user message -> the (offline) model picks a gated
tool -> the thread is suspended durably -> a decision through the public decision
path -> the tool runs -> the model replies -> done. Real Redis servers (the
embedded binary, AOF everysec unless ``--appendfsync always``). Three sections,
each on its own fresh server:

- ``one_process``: the driver, inbox, decisions and a worker in this process,
  on one Redis; also Redis bytes per suspended thread.
- ``web_and_2_workers``: ``python -m bot web`` and two ``python -m bot worker``
  processes on one Redis, driven over HTTP (see ``bench.web_workers``).
- ``cluster``: as ``one_process``, on a 3-primary Redis Cluster.

Each run reports the CPU milliseconds per cycle of every process involved,
since wall-clock figures drift on a shared machine. Prints one JSON document on
stdout; progress goes to stderr.

    python -m bench.cycles [--cycles N] [--in-flight 32] [--only one_process,cluster]
                           [--appendfsync everysec|always]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench import web_workers
from bench.measure import (
    CpuMeter,
    compact_sorted_set_limit,
    idle_polling,
    load_average,
    memory_by_family,
    percentiles,
    server_version,
    traffic,
    used_memory,
)
from bot.domain import ids
from bot.domain.agents import load_agents
from bot.domain.events import Actor, Decision, Origin
from bot.domain.policy import Groups
from bot.domain.reducer import Status, ThreadState
from bot.models.offline import OfflineModel
from bot.runtime import Runtime, build_runtime
from bot.serve import run_loop
from bot.settings import Settings
from bot.storage import keys
from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis
from bot.storage.embedded_cluster import EmbeddedCluster
from channels import build_channels

log = logging.getLogger("bench.cycles")

ANN = Actor(channel="api", id="ann")
BOB = Actor(channel="api", id="bob")
TEXT = "deploy api 1.5.0 to production"
SECTIONS = ("one_process", "web_and_2_workers", "cluster")
"""In this order: ``side_by_side.sh`` takes the first 32-in-flight figure it meets."""


class Waiter:
    """Futures resolved by the worker's on_step hook when a thread reaches a status."""

    def __init__(self) -> None:
        self.wanted: dict[str, tuple[Status, asyncio.Future[ThreadState]]] = {}

    def on_step(self, state: ThreadState) -> None:
        want = self.wanted.get(state.id)
        if want and state.status is want[0] and not want[1].done():
            want[1].set_result(state)
            del self.wanted[state.id]

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


async def run(
    rt: Runtime,
    waiter: Waiter,
    cycles: int,
    in_flight: int,
    *,
    redis_pids: Sequence[int],
    nodes: Sequence[str],
) -> dict[str, Any]:
    """``cycles`` cycles, ``in_flight`` at a time: throughput, latency, CPU and Redis
    traffic per cycle."""
    lat: dict[str, list[float]] = {"suspend": [], "resume": []}
    before = await traffic(nodes)
    cpu = CpuMeter({"redis": redis_pids}, own="process")
    t0 = time.perf_counter()
    await _many(lambda: cycle(rt, waiter, lat), cycles, in_flight)
    elapsed = time.perf_counter() - t0
    cpu_ms = cpu.ms_per(cycles)
    after = await traffic(nodes)
    return {
        "in_flight": in_flight,
        "cycles": cycles,
        "cycles_per_s": round(cycles / elapsed, 1),
        "suspend_ms": percentiles(lat["suspend"]),
        "resume_ms": percentiles(lat["resume"]),
        "cpu_ms_per_cycle": cpu_ms,
        "redis_per_cycle": {k: round((after[k] - before[k]) / cycles, 1) for k in after},
    }


async def bytes_per_suspended(
    rt: Runtime, waiter: Waiter, nodes: Sequence[str], n: int
) -> dict[str, Any]:
    """Growth of the servers' ``used_memory`` per thread left suspended, and of each key
    family's ``MEMORY USAGE`` (the thread's own keys, the shards' indexes and timers).

    Measured over ``n`` threads suspended after enough others that every shard's sorted
    sets (its indexes and timers) are past the compact encoding Redis gives small sets:
    as they are once a deployment has a few thousand threads waiting, where an entry costs
    about twice as much.

    ``process_memory``: what this process allocated meanwhile and still holds, per thread
    (``tracemalloc``): the suspended threads its cache keeps (``THREAD_CACHE_EVENTS``), and
    a little that replaced entries of bounded caches (texts, key names) made before."""
    already = keys.SHARDS * await compact_sorted_set_limit(nodes[0]) * 3 // 2
    await suspend(rt, waiter, already)
    held: list[int] = []

    async def traced() -> None:
        gc.collect()
        tracemalloc.start()
        await suspend(rt, waiter, n)
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()

    grown = await bytes_per_thread(nodes, n, traced)
    return {"suspended_before": already, **grown, "process_memory": round(held[0] / n, 1)}


async def bytes_per_finished(
    rt: Runtime, waiter: Waiter, nodes: Sequence[str], n: int
) -> dict[str, Any]:
    """As ``bytes_per_suspended``, per thread taken through the whole cycle: what a finished
    thread holds until retention archives it (``RETAIN_FINISHED_DAYS``), its decision's
    audit record included."""
    already = keys.SHARDS * await compact_sorted_set_limit(nodes[0]) * 3 // 2
    await finish(rt, waiter, already)
    grown = await bytes_per_thread(nodes, n, lambda: finish(rt, waiter, n))
    return {"finished_before": already, **grown}


async def bytes_per_thread(
    nodes: Sequence[str], n: int, add: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """What ``add`` (``n`` threads) grows the servers by, per thread: ``used_memory``, and
    each key family's ``MEMORY USAGE`` (exact, whatever the allocator)."""
    before, keys_before = await used_memory(nodes), await memory_by_family(nodes)
    await add()
    after, keys_after = await used_memory(nodes), await memory_by_family(nodes)
    grown = {
        name: round((used - keys_before.get(name, 0)) / n, 1)
        for name, used in sorted(keys_after.items())
        if used != keys_before.get(name, 0)
    }
    return {
        "used_memory": round((after - before) / n, 1),
        "memory_usage": round(sum(grown.values()), 1),
        "by_key": grown,
    }


async def suspend(rt: Runtime, waiter: Waiter, n: int, in_flight: int = 32) -> None:
    """Start ``n`` threads and leave each suspended for approval, ``in_flight`` at a time."""
    await _many(lambda: start(rt, waiter), n, in_flight)


async def finish(rt: Runtime, waiter: Waiter, n: int, in_flight: int = 32) -> None:
    """Take ``n`` threads through the whole cycle, ``in_flight`` at a time."""
    lat: dict[str, list[float]] = {"suspend": [], "resume": []}
    await _many(lambda: cycle(rt, waiter, lat), n, in_flight)


async def _many(one: Callable[[], Awaitable[object]], n: int, in_flight: int) -> None:
    slots = asyncio.Semaphore(in_flight)

    async def slot() -> None:
        async with slots:
            await one()

    await asyncio.gather(*(slot() for _ in range(n)))


async def in_process(
    url: str,
    nodes: Sequence[str],
    redis_pids: Sequence[int],
    cycles: int,
    in_flight: int,
    *,
    fsync: str,
) -> dict[str, Any]:
    """The one-process figures against the server (or cluster) at ``url``."""
    redis = await connect(url)
    agents = load_agents()
    groups = Groups({"deployers": ("bob",), "finance": ("bob",)})
    settings = Settings(_env_file=None)
    # The channels production always has (the webhook channel), so every
    # step pays for delivery as it would there.
    rt = build_runtime(
        redis,
        agents,
        OfflineModel(agents),
        channels=lambda ports: build_channels(settings, ports),
        groups=groups,
    )
    gc.freeze()  # as a served process does once its runtime is built (bot.serve)
    stop = asyncio.Event()
    serving: asyncio.Task[None] | None = None
    try:
        for channel in rt.channels:
            await channel.start(inbound=False)
        waiter = Waiter()
        worker = rt.worker(concurrency=max(in_flight, 1), block_ms=100, on_step=waiter.on_step)
        serving = asyncio.create_task(worker.run(stop))
        on = {"redis_pids": redis_pids, "nodes": nodes}
        await run(rt, waiter, 200, 8, **on)  # warm up
        return {
            "redis": f"embedded {await server_version(nodes[0])}, appendfsync {fsync}",
            "event_loop": type(asyncio.get_running_loop()).__module__,
            "model": "offline",
            "sequential": await run(rt, waiter, max(cycles // 4, 100), 1, **on),
            "concurrent": await run(rt, waiter, cycles, in_flight, **on),
            "redis_bytes_per_finished_thread": await bytes_per_finished(rt, waiter, nodes, 1000),
            "redis_bytes_per_suspended_thread": await bytes_per_suspended(rt, waiter, nodes, 1000),
        }
    finally:
        stop.set()
        if serving is not None:
            await serving
        for channel in rt.channels:
            await channel.stop()
        await redis.aclose()


async def one_process(tmp: Path, cycles: int, in_flight: int, fsync: str) -> dict[str, Any]:
    """Driver, inbox and worker in this process, on one embedded Redis."""
    server = EmbeddedRedis(tmp / "redis", appendfsync=fsync)
    server.start()
    try:
        pids = [server.process.pid] if server.process else []
        return await in_process(server.url, [server.url], pids, cycles, in_flight, fsync=fsync)
    finally:
        server.stop()


async def cluster(tmp: Path, cycles: int, in_flight: int, fsync: str) -> dict[str, Any]:
    """As ``one_process``, on a real 3-primary cluster of the embedded binary."""
    nodes = EmbeddedCluster(tmp / "cluster", primaries=3, appendfsync=fsync)
    nodes.start()
    try:
        pids = [p.pid for p in nodes.processes if p is not None]
        figures = await in_process(nodes.url, nodes.urls, pids, cycles, in_flight, fsync=fsync)
        return {**figures, "redis": f"{figures['redis']}, 3-primary cluster"}
    finally:
        nodes.stop()


async def web_and_workers(tmp: Path, cycles: int, in_flight: int, fsync: str) -> dict[str, Any]:
    """A web process and 2 worker processes on one embedded Redis, driven over HTTP."""
    server = EmbeddedRedis(tmp / "redis", appendfsync=fsync)
    server.start()
    try:
        pids = [server.process.pid] if server.process else []
        figures = await web_workers.section(
            server.url, pids, tmp, cycles=cycles, in_flight=in_flight
        )
        return {
            "redis": f"embedded {await server_version(server.url)}, appendfsync {fsync}",
            **figures,
        }
    finally:
        server.stop()


Section = Callable[[Path, int, int, str], Awaitable[dict[str, Any]]]
"""A section: its temporary folder, cycles, cycles in flight, and the servers' appendfsync."""
RUNNERS: dict[str, Section] = {
    "one_process": one_process,
    "web_and_2_workers": web_and_workers,
    "cluster": cluster,
}


async def main(
    cycles: int, in_flight: int, only: Sequence[str], fsync: str = "everysec"
) -> dict[str, Any]:
    """Run the chosen sections in turn; a section that fails reports its error."""
    figures: dict[str, Any] = {}
    before = load_average()
    for name in SECTIONS:
        if name not in only:
            continue
        log.info("%s: %d cycles, %d in flight", name, cycles, in_flight)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            try:
                figures[name] = await RUNNERS[name](Path(tmp), cycles, in_flight, fsync)
            except Exception as exc:
                log.exception("%s failed", name)
                figures[name] = {"error": repr(exc)}
        log.info("%s: done in %.1f s", name, time.monotonic() - started)
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "load_average": {"before": before, "after": load_average()},
        "idle": idle_polling(),
    }
    return figures


def _sections(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--cycles", type=int, default=2000, help="cycles of each in-flight run (sequential: 1/4)"
    )
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--appendfsync",
        choices=("everysec", "always"),
        default="everysec",
        help="the servers' fsync policy: always puts every write on disk before it is "
        "acknowledged (README: Redis durability)",
    )
    ns = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    result: dict[str, Any] = {}

    async def go() -> None:
        result.update(await main(ns.cycles, ns.in_flight, ns.only, ns.appendfsync))

    run_loop(go())
    print(json.dumps(result, indent=2))
    if any(isinstance(v, dict) and "error" in v for v in result.values()):
        sys.exit(1)


if __name__ == "__main__":
    cli()
