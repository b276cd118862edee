"""The HITL cycle through real processes: one web process and worker processes on one Redis.

The driver (this process) starts threads and decides over HTTP, as any client
of the REST API does (``POST /threads``, ``POST /requests/{id}/decision``);
``python -m bot worker`` processes step the threads. The driver learns that a
thread was suspended or finished by reading its status in Redis (``Watcher``,
one script call per millisecond for every thread it waits on), which costs
the processes measured nothing, as the one-process section's in-process hook
does not. Suspend latency runs from ``POST /threads`` to the status
``awaiting_approval``; resume latency from ``POST /requests/{id}/decision`` to
``done``. Both include up to a millisecond of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.http_client import HttpClient
from bench.measure import CpuMeter, percentiles, traffic
from bot.domain.events import stored_type
from bot.settings import Settings
from bot.storage import keys
from bot.storage.connection import Client, connect
from bot.storage.embedded import HOST, die_with_parent

TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXT = "deploy api 1.5.0 to production"
WAIT = 30.0
"""Seconds a cycle may wait for a status before the run is declared broken."""
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fleet:
    """The running processes: the web process's address and every pid to meter."""

    api: str
    web_pid: int
    worker_pids: tuple[int, ...]


_POLL = """
-- KEYS: for each thread waited on, four: its shard's index of the status it waits for,
-- of failed threads and of cancelled ones, and its log. ARGV: the threads' ids, then
-- the statuses they wait for, in the same order. Returns, per thread, the status it is
-- in of those ('' for none); for one that waits for awaiting_approval and reached it,
-- its last 16 events instead, one a line, where its approval request is.
local n = #ARGV / 2
local out = {}
for i = 1, n do
  local tid, want, k = ARGV[i], ARGV[n + i], 4 * (i - 1)
  local status = ''
  if redis.call('ZSCORE', KEYS[k + 1], tid) then status = want
  elseif redis.call('ZSCORE', KEYS[k + 2], tid) then status = 'failed'
  elseif redis.call('ZSCORE', KEYS[k + 3], tid) then status = 'cancelled' end
  out[i] = status
  if status == 'awaiting_approval' then
    out[i] = table.concat(redis.call('LRANGE', KEYS[k + 4], -16, -1), '\\n')
  end
end
return out
"""


class Watcher:
    """Learns when threads reach a status by reading the status indexes in Redis.

    The driver's completion signal, as the one-process section's ``on_step``
    hook is there: it costs the web and worker processes nothing (webhook
    callbacks cost each worker an HTTP POST per event, about 1 ms of CPU on
    this machine, three per cycle). Every waiting thread's status is read by
    one script call per poll, a poll every ``every`` seconds while any thread
    is waited on; the same call brings a suspended thread's request. One call
    rather than a pipeline of reads: redis-py spends several µs of Python on
    each command of a pipeline, and the driver shares the CPU with what it
    measures. The wait it adds (half a poll on average) is in the latencies.
    """

    def __init__(self, redis: Client, every: float = 0.001) -> None:
        self.redis = redis
        self.every = every
        self.polls = 0
        """Round trips made so far."""
        self._waiting: dict[str, tuple[str, asyncio.Future[str], list[str]]] = {}
        """Thread id -> the status awaited, who awaits it, and the keys its poll reads."""
        self._poller: asyncio.Task[None] | None = None
        self._script = redis.register_script(_POLL)

    def expect(self, thread_id: str, status: str) -> asyncio.Future[str]:
        """Resolved when the thread's status is ``status``: with its open request's id
        for ``awaiting_approval``, else with the status."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        shard = keys.shard_of(thread_id)
        names = [keys.by_status(shard, s) for s in (status, "failed", "cancelled")]
        self._waiting[thread_id] = (status, fut, [*names, keys.log(thread_id)])
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return fut

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.every)
            tids = list(self._waiting)
            waits = [self._waiting[t] for t in tids]
            names = [name for w in waits for name in w[2]]
            found = await self._script(keys=names, args=[*tids, *(w[0] for w in waits)])
            self.polls += 1
            for tid, (want, fut, _), got in zip(tids, waits, found, strict=True):
                if got == want or (want == "awaiting_approval" and got.startswith("{")):
                    del self._waiting[tid]
                    fut.set_result(await self._answer(tid, got))
                elif got in ("failed", "cancelled"):
                    del self._waiting[tid]
                    fut.set_exception(RuntimeError(f"thread {tid} is {got}"))

    async def _answer(self, thread_id: str, found: str) -> str:
        """The request id in a suspended thread's events, or the status reached."""
        if not found.startswith("{"):
            return found
        asked = _last_request(found.split("\n"))
        if asked is None:  # not among its last events: read its whole log
            asked = _last_request(await self.redis.lrange(keys.log(thread_id), 0, -1))
        if asked is None:
            raise RuntimeError(f"thread {thread_id} awaits approval without asking for one")
        return _request_id(thread_id, asked)


def _last_request(raws: list[str]) -> dict[str, Any] | None:
    """The last stored approval request among ``raws``, as stored."""
    for raw in reversed(raws):
        if stored_type(raw) == "approval_requested":
            parsed: dict[str, Any] = json.loads(raw)
            return parsed
    return None


def _request_id(thread_id: str, event: dict[str, Any]) -> str:
    """A stored approval request's id (stored without its thread when the thread names it)."""
    rid = str(event["request_id"])
    return thread_id + rid if rid.startswith(".") else rid


async def _spawn(role: str, env: dict[str, str], logs: Path) -> asyncio.subprocess.Process:
    """``python -m bot <role>``; it dies with this process, and its stderr goes to a file."""
    with (logs / f"{role}-{env['PORT']}.log").open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            role,
            env=env,
            cwd=logs,  # not the repo: a developer's .env there must not reach the bench
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=die_with_parent(os.getpid()),
        )


def _env(redis_url: str, data: Path, port: int, concurrency: int) -> dict[str, str]:
    """The environment of one process: ours minus every Greenlight setting, plus the bench's."""
    return {
        **{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "API_TOKEN": TOKEN,
        "HOST": HOST,
        "PORT": str(port),
        "DATA_DIR": str(data),
        "LOG_LEVEL": "WARNING",
        "WORKER_CONCURRENCY": str(concurrency),
        "APPROVER_GROUPS": '{"deployers": ["bob"], "finance": ["bob"]}',
    }


@contextlib.asynccontextmanager
async def fleet(
    redis_url: str,
    data: Path,
    *,
    workers: int,
    concurrency: int,
    extra: Mapping[str, str] | None = None,
) -> AsyncIterator[Fleet]:
    """A web process and ``workers`` worker processes, up and ready; all stopped on exit.

    ``extra`` adds settings to every process's environment."""
    procs: list[asyncio.subprocess.Process] = []
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    try:
        more = dict(extra or {})
        procs.append(
            await _spawn("web", {**_env(redis_url, data, port, concurrency), **more}, data)
        )
        for i in range(workers):
            # Workers listen nowhere; PORT only names their log file.
            env = {**_env(redis_url, data, port + 1 + i, concurrency), **more}
            procs.append(await _spawn("worker", env, data))
        api = f"http://{HOST}:{port}"
        await _ready(api, procs, data)
        yield Fleet(api, procs[0].pid, tuple(p.pid for p in procs[1:]))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _ready(api: str, procs: Sequence[asyncio.subprocess.Process], logs: Path) -> None:
    """Wait until the web process answers and a worker has beaten (``/readyz``)."""
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.returncode is not None:
                    tails = _tails(logs)
                    raise RuntimeError(f"a bench process exited with {proc.returncode}: {tails}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{api}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{api} was not ready within 60 s: {_tails(logs)}")


def _tails(logs: Path) -> str:
    """The end of every process's stderr, to say why one died."""
    return " | ".join(p.read_text(errors="replace")[-500:] for p in sorted(logs.glob("*.log")))


@dataclass(frozen=True)
class Driver:
    """What a run needs: the HTTP client (to the web process), the watcher, the pids to
    meter and the Redis whose traffic to count."""

    http: HttpClient
    watcher: Watcher
    pids: dict[str, Sequence[int]]
    redis_url: str

    async def cycle(self, lat: dict[str, list[float]]) -> None:
        """One cycle over HTTP; appends its suspend and resume latency to ``lat``."""
        watch = self.watcher
        t0 = time.perf_counter()
        new = {"agent": "deploy", "text": TEXT, "user": "ann"}
        status, body = await self.http.post("/threads", new)
        if status != 201:
            raise RuntimeError(f"POST /threads answered {status}: {body!r}")
        tid = json.loads(body)["id"]
        request_id = await asyncio.wait_for(watch.expect(tid, "awaiting_approval"), WAIT)
        t1 = time.perf_counter()
        decision = {"decision": "approve", "by": "bob"}
        path = f"/requests/{request_id}/decision"
        status, body = await self.http.post(path, decision)
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {body!r}")
        await asyncio.wait_for(watch.expect(tid, "done"), WAIT)
        t2 = time.perf_counter()
        lat["suspend"].append(t1 - t0)
        lat["resume"].append(t2 - t1)

    async def run(self, cycles: int, in_flight: int) -> dict[str, Any]:
        """``cycles`` cycles, ``in_flight`` at a time: throughput, latency, CPU per cycle."""
        lat: dict[str, list[float]] = {"suspend": [], "resume": []}
        slots = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with slots:
                await self.cycle(lat)

        before = await traffic([self.redis_url])
        cpu = CpuMeter(self.pids, own="driver")
        polls = self.watcher.polls
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(cycles)))
        elapsed = time.perf_counter() - t0
        cpu_ms = cpu.ms_per(cycles)
        after = await traffic([self.redis_url])
        return {
            "in_flight": in_flight,
            "cycles": cycles,
            "cycles_per_s": round(cycles / elapsed, 1),
            "suspend_ms": percentiles(lat["suspend"]),
            "resume_ms": percentiles(lat["resume"]),
            "cpu_ms_per_cycle": cpu_ms,
            # The driver's status polls included (status_polls_per_cycle of them).
            "redis_per_cycle": {k: round((after[k] - before[k]) / cycles, 1) for k in after},
            "status_polls_per_cycle": round((self.watcher.polls - polls) / cycles, 2),
        }


async def section(
    redis_url: str, redis_pids: Sequence[int], data: Path, *, cycles: int, in_flight: int
) -> dict[str, Any]:
    """The web + 2 workers figures: sequential and ``in_flight`` at a time."""
    # The project's client: it packs commands with hiredis, redis-py's own packer in Python
    # cost the driver about a millisecond per status poll of 32 threads.
    redis = await connect(redis_url)
    try:
        async with fleet(redis_url, data, workers=2, concurrency=max(in_flight, 1)) as procs:
            http = HttpClient(procs.api, AUTH)
            pids = {"web": [procs.web_pid], "workers": procs.worker_pids, "redis": redis_pids}
            driver = Driver(http, Watcher(redis), pids, redis_url)
            try:
                await driver.run(4 * in_flight, in_flight)  # warm up
                return {
                    "processes": "python -m bot web + 2 x python -m bot worker, one Redis",
                    "latency": (
                        "suspend: POST /threads to the status awaiting_approval; resume: POST"
                        " /requests/{id}/decision to the status done (the driver reads every"
                        " waited-on thread's status from Redis once a millisecond, in one"
                        " script call)"
                    ),
                    "sequential": await driver.run(max(cycles // 4, 100), 1),
                    "concurrent": await driver.run(cycles, in_flight),
                }
            finally:
                await http.aclose()
    finally:
        await redis.aclose()
