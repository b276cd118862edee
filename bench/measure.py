"""What the benchmarks read off the machine: latency percentiles, CPU time, Redis memory."""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from redis.asyncio import Redis


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of durations in seconds, as milliseconds."""
    qs = statistics.quantiles(seconds, n=100)
    return {"p50": round(qs[49] * 1000, 3), "p99": round(qs[98] * 1000, 3)}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` used so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used during a run by this process and by named child processes.

    ``/proc`` counts in clock ticks (10 ms here), so per-cycle figures need a
    run of a few hundred cycles or more to mean anything.

    Args:
        children: a name per group of pids, e.g. ``{"redis": [pid]}``; a
            group's CPU is the sum over its pids.
        own: the name this process's CPU is reported under.
    """

    def __init__(
        self, children: Mapping[str, Sequence[int]] | None = None, *, own: str = "bench"
    ) -> None:
        self.children = dict(children or {})
        self.own = own
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        now = {self.own: time.process_time()}
        for name, pids in self.children.items():
            now[name] = sum(cpu_seconds(pid) for pid in pids)
        return now

    def ms_per(self, cycles: int) -> dict[str, float]:
        """Milliseconds of CPU per cycle for each process group since the meter started."""
        end = self._read()
        return {name: round((end[name] - self._start[name]) * 1000 / cycles, 3) for name in end}


async def used_memory(urls: Sequence[str]) -> int:
    """Bytes of memory the Redis servers at ``urls`` use together (``INFO memory``)."""
    total = 0
    for url in urls:
        node: Redis = Redis.from_url(url)
        try:
            total += int((await node.info("memory"))["used_memory"])
        finally:
            await node.aclose()
    return total


async def compact_sorted_set_limit(url: str) -> int:
    """How many entries a sorted set holds in Redis's compact encoding (a listpack; a
    ziplist before Redis 7) before it takes its larger one (a skiplist and a hash table),
    as the server at ``url`` is configured."""
    node: Redis = Redis.from_url(url, decode_responses=True)
    try:
        for name in ("zset-max-listpack-entries", "zset-max-ziplist-entries"):
            found = await node.config_get(name)
            if found.get(name):
                return int(found[name])
    finally:
        await node.aclose()
    raise RuntimeError(f"{url} says neither zset-max-listpack-entries nor ziplist-entries")


_TAG = re.compile(r"\{[^}]*\}")
_THREAD = re.compile(r"th_[0-9a-f]{20}")


def family(key: str) -> str:
    """A key's family: its name without hash tag and thread id (``gl::<thread>:log``)."""
    return _THREAD.sub("<thread>", _TAG.sub("", key))


async def memory_by_family(urls: Sequence[str]) -> dict[str, int]:
    """Bytes the keys of each family hold on the servers at ``urls`` together, by ``MEMORY
    USAGE`` (exact: ``SAMPLES 0``), which does not move with allocator or load as
    ``used_memory`` does."""
    total: dict[str, int] = {}
    for url in urls:
        node: Redis = Redis.from_url(url, decode_responses=True)
        try:
            names = [k async for k in node.scan_iter(match="gl:*", count=1000)]
            pipe = node.pipeline(transaction=False)
            for name in names:
                pipe.memory_usage(name, samples=0)
            for name, used in zip(names, await pipe.execute(), strict=True):
                total[family(name)] = total.get(family(name), 0) + int(used or 0)
        finally:
            await node.aclose()
    return total


TRAFFIC = {
    "commands": "total_commands_processed",
    "bytes_in": "total_net_input_bytes",
    "bytes_out": "total_net_output_bytes",
}
"""What ``traffic`` reads from ``INFO stats``, by the name the benchmarks report it under."""


async def traffic(urls: Sequence[str]) -> dict[str, int]:
    """Commands the Redis servers at ``urls`` ran so far (those inside scripts included)
    and the bytes they read from clients and wrote to them, summed over the servers."""
    total = dict.fromkeys(TRAFFIC, 0)
    for url in urls:
        node: Redis = Redis.from_url(url)
        try:
            stats = await node.info("stats")
        finally:
            await node.aclose()
        for name, field in TRAFFIC.items():
            total[name] += int(stats[field])
    return total


async def server_version(url: str) -> str:
    """``valkey 8.1.1`` or ``redis 7.2.4``: what the server at ``url`` says it is."""
    node: Redis = Redis.from_url(url, decode_responses=True)
    try:
        info = await node.info("server")
    finally:
        await node.aclose()
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info['redis_version']}"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def idle_polling() -> dict[str, str | int]:
    """How an idle core waits here: the cpuidle driver, and the longest a VM guest polls
    before it halts (the haltpoll governor's ``guest_halt_poll_ns``), where Linux says.

    This decides what latency one cycle at a time shows on a VM: each round trip to
    Redis wakes an idle core, and a guest that halts at once (0 ns) pays tens of
    microseconds per wake-up that one that polls first does not.
    """
    found: dict[str, str | int] = {}
    driver = Path("/sys/devices/system/cpu/cpuidle/current_driver")
    if driver.exists():
        found["cpuidle_driver"] = driver.read_text().strip()
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if poll.exists():
        found["guest_halt_poll_ns"] = int(poll.read_text())
    return found
