"""The HITL cycle through real processes: one web process and worker processes on one Redis.

The driver (this process) starts threads and decides over HTTP, as any client
of the REST API does (``POST /threads``, ``POST /requests/{id}/decision``);
``python -m bot worker`` processes step the threads. Nothing polls: each thread
carries a ``callback_url`` naming a small HTTP receiver in this process, and
the workers' webhook channel POSTs the thread's events to it. Suspend latency
runs from ``POST /threads`` to the ``approval_requested`` callback; resume
latency from ``POST /requests/{id}/decision`` to the final ``agent_reply``
callback. Both include the callback's own HTTP hop, which production pays too
whenever a client asked for callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.measure import CpuMeter, percentiles
from bot.settings import Settings
from bot.storage.embedded import HOST, die_with_parent

TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXT = "deploy api 1.5.0 to production"
WAIT = 30.0
"""Seconds a cycle may wait for a callback before the run is declared broken."""
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fleet:
    """The running processes: the web process's address and every pid to meter."""

    api: str
    web_pid: int
    worker_pids: tuple[int, ...]


class Callbacks:
    """Receives the workers' webhook callbacks; a future per thread and milestone.

    A callback may arrive before the driver asked for it (the worker can
    suspend a thread before ``POST /threads`` has answered), so either side
    creates the future and the other finds it.
    """

    def __init__(self) -> None:
        self.url = ""
        self.received = 0
        """Callbacks received so far, of every type."""
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    def expect(self, thread_id: str, milestone: str) -> asyncio.Future[dict[str, Any]]:
        """The future of ``approval_requested`` or ``done`` for ``thread_id``."""
        key = (thread_id, milestone)
        fut = self._waiting.get(key)
        if fut is None:
            fut = self._waiting[key] = asyncio.get_running_loop().create_future()
        return fut

    def forget(self, thread_id: str) -> None:
        for milestone in ("approval_requested", "done"):
            self._waiting.pop((thread_id, milestone), None)

    async def receive(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.received += 1
        kind, tid = body["type"], body["thread_id"]
        if kind == "agent_reply" and body["data"].get("final"):
            self._settle(self.expect(tid, "done"), body)
        elif kind == "approval_requested":
            self._settle(self.expect(tid, kind), body)
        elif kind == "thread_failed":
            failed = RuntimeError(f"thread {tid} failed: {body['data']}")
            for milestone in ("approval_requested", "done"):
                fut = self.expect(tid, milestone)
                if not fut.done():
                    fut.set_exception(failed)
        return web.Response()

    @staticmethod
    def _settle(fut: asyncio.Future[dict[str, Any]], body: dict[str, Any]) -> None:
        if not fut.done():  # delivery is at least once: a repeat changes nothing
            fut.set_result(body)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Callbacks]:
        """Listen on a free local port until the block ends."""
        app = web.Application()
        app.router.add_post("/callbacks", self.receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind((HOST, 0))
        self.url = f"http://{HOST}:{sock.getsockname()[1]}/callbacks"
        await web.SockSite(runner, sock).start()
        try:
            yield self
        finally:
            await runner.cleanup()
            sock.close()


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
    """What a run needs: the HTTP client, the web process, the receiver, the pids to meter."""

    http: aiohttp.ClientSession
    api: str
    callbacks: Callbacks
    pids: dict[str, Sequence[int]]

    async def cycle(self, lat: dict[str, list[float]]) -> None:
        """One cycle over HTTP; appends its suspend and resume latency to ``lat``."""
        cb = self.callbacks
        t0 = time.perf_counter()
        new = {"agent": "deploy", "text": TEXT, "user": "ann", "callback_url": cb.url}
        async with self.http.post(f"{self.api}/threads", json=new, headers=AUTH) as r:
            if r.status != 201:
                raise RuntimeError(f"POST /threads answered {r.status}: {await r.text()}")
            tid = (await r.json())["id"]
        asked = await asyncio.wait_for(cb.expect(tid, "approval_requested"), WAIT)
        t1 = time.perf_counter()
        done = cb.expect(tid, "done")
        decision = {"decision": "approve", "by": "bob"}
        path = f"/requests/{asked['data']['request_id']}/decision"
        async with self.http.post(f"{self.api}{path}", json=decision, headers=AUTH) as r:
            if r.status != 200:
                raise RuntimeError(f"POST {path} answered {r.status}: {await r.text()}")
            await r.read()
        await asyncio.wait_for(done, WAIT)
        t2 = time.perf_counter()
        cb.forget(tid)
        lat["suspend"].append(t1 - t0)
        lat["resume"].append(t2 - t1)

    async def run(self, cycles: int, in_flight: int) -> dict[str, Any]:
        """``cycles`` cycles, ``in_flight`` at a time: throughput, latency, CPU per cycle."""
        lat: dict[str, list[float]] = {"suspend": [], "resume": []}
        slots = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with slots:
                await self.cycle(lat)

        cpu = CpuMeter(self.pids, own="driver")
        received = self.callbacks.received
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(cycles)))
        elapsed = time.perf_counter() - t0
        return {
            "in_flight": in_flight,
            "cycles": cycles,
            "cycles_per_s": round(cycles / elapsed, 1),
            "suspend_ms": percentiles(lat["suspend"]),
            "resume_ms": percentiles(lat["resume"]),
            "cpu_ms_per_cycle": cpu.ms_per(cycles),
            "callbacks_per_cycle": round((self.callbacks.received - received) / cycles, 2),
        }


async def section(
    redis_url: str, redis_pids: Sequence[int], data: Path, *, cycles: int, in_flight: int
) -> dict[str, Any]:
    """The web + 2 workers figures: sequential and ``in_flight`` at a time."""
    async with (
        Callbacks().serving() as cb,
        fleet(redis_url, data, workers=2, concurrency=max(in_flight, 1)) as procs,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(in_flight, 1))) as http,
    ):
        pids = {"web": [procs.web_pid], "workers": procs.worker_pids, "redis": redis_pids}
        driver = Driver(http, procs.api, cb, pids)
        await driver.run(4 * in_flight, in_flight)  # warm up
        return {
            "processes": "python -m bot web + 2 x python -m bot worker, one Redis",
            "latency": (
                "suspend: POST /threads to the approval_requested callback; resume: POST"
                " /requests/{id}/decision to the final agent_reply callback (webhook"
                " callbacks to a receiver in the driver, no polling)"
            ),
            "sequential": await driver.run(max(cycles // 4, 100), 1),
            "concurrent": await driver.run(cycles, in_flight),
        }
