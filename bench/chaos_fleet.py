"""The chaos soak's processes: Redis, a web process and workers, each killable and restartable.

The processes run a copy of the code taken when the soak starts, so edits to
the working tree during a run never mix versions between a process and its
restart. Redis is the embedded server with ``appendfsync always``; a killed server comes
back on the same port and data folder, so it replays its AOF. A killed web
process comes back on the same port, so clients need no new address. A process
that exits on its own (not by our signal) is restarted too, and counted: that
is a finding, not part of the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.settings import Settings
from bot.storage.embedded import HOST, EmbeddedRedis, die_with_parent, free_port

log = logging.getLogger("bench.chaos")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "chaos"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GROUPS = '{"deployers": ["bob"], "finance": ["bob"]}'
PACKAGES = ("bot", "channels", "agents")
"""What ``python -m bot`` imports from the repository."""
RESPAWN_PAUSE = 1.0
"""Seconds before a process that exited on its own is started again (Redis may be down)."""


@dataclass(frozen=True)
class Tuning:
    """The processes' settings that decide how fast the fleet recovers from a kill.

    Attributes:
        workers: worker processes.
        concurrency: threads each worker steps at once.
        lease_ms: a dead worker's leases lapse after this long.
        claim_idle_ms: a dead worker's queue entries are reclaimed after this long.
    """

    workers: int = 2
    concurrency: int = 32
    lease_ms: int = 4_000
    claim_idle_ms: int = 8_000


@dataclass(frozen=True)
class Kill:
    """One SIGKILL we sent: when (unix time), to what, and how long it stayed down."""

    at: float
    role: str
    down_s: float


class Fleet:
    """Redis, ``python -m bot web`` and ``python -m bot worker`` processes on loopback.

    Args:
        data: the data folder: the AOF, each process's stderr log, the working directory.
        tuning: the workers' settings.
    """

    def __init__(self, data: Path, tuning: Tuning) -> None:
        self.data = data
        self.tuning = tuning
        self.redis = EmbeddedRedis(data / "redis", appendfsync="always")
        self.code = data / "code"
        self.port = free_port()
        self.api = f"http://{HOST}:{self.port}"
        self.workers = tuple(f"worker-{i}" for i in range(tuning.workers))
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.kills: list[Kill] = []
        self.exits: Counter[str] = Counter()
        """Exits we did not cause, by role."""
        self._killing: set[str] = set()

    @property
    def roles(self) -> tuple[str, ...]:
        return ("web", *self.workers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Fleet]:
        """Everything started and ready; everything stopped when the block ends, however."""
        watcher: asyncio.Task[None] | None = None
        for package in PACKAGES:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / package, self.code / package, ignore=ignore)
        try:
            self.redis.start()  # from the main thread: see die_with_parent
            for role in self.roles:
                await self._spawn(role)
            if not await self.ready(60):
                raise RuntimeError(f"{self.api} was not ready within 60 s: {self.tails()}")
            watcher = asyncio.create_task(self._watch())
            yield self
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self._stop_all()

    async def kill(self, role: str, down_s: float) -> None:
        """SIGKILL ``role`` (``redis``, ``web``, ``worker-N``), wait ``down_s``, start it again."""
        self._killing.add(role)
        try:
            self.kills.append(Kill(time.time(), role, down_s))
            log.info("kill %s (down %.1f s)", role, down_s)
            if role == "redis":
                self.redis.stop(kill=True)
                await asyncio.sleep(down_s)
                self.redis.start()  # same port, same folder: the AOF is replayed
            else:
                proc = self.procs[role]
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
                await asyncio.sleep(down_s)
                await self._spawn(role)
        finally:
            self._killing.discard(role)

    async def ready(self, seconds: float) -> bool:
        """Whether ``/readyz`` answered 200 (Redis up, a worker beating) within ``seconds``."""
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.api}/readyz") as r:
                        if r.status == 200:
                            return True
                await asyncio.sleep(0.2)
        return False

    def tails(self) -> str:
        """The end of every process's stderr, to say why one died."""
        logs = sorted(self.data.glob("*.log"))
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-400:]}" for p in logs)

    async def _spawn(self, role: str) -> None:
        """Start ``python -m bot web|worker``; it dies with us; stderr appends to its log."""
        kind = "web" if role == "web" else "worker"
        with (self.data / f"{role}.log").open("ab") as stderr:
            stderr.write(f"--- started at {time.time():.3f}\n".encode())
            stderr.flush()
            self.procs[role] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                kind,
                env=self._env(),
                cwd=self.data,  # not the repo: a developer's .env there must not reach the bench
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=die_with_parent(os.getpid()),
            )

    def _env(self) -> dict[str, str]:
        """Ours minus every Greenlight setting, plus the soak's."""
        t = self.tuning
        return {
            **{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
            "PYTHONPATH": str(self.code),
            "REDIS_URL": self.redis.url,
            "API_TOKEN": TOKEN,
            "HOST": HOST,
            "PORT": str(self.port),  # workers listen nowhere
            "DATA_DIR": str(self.data),
            "LOG_LEVEL": "WARNING",
            "WORKER_CONCURRENCY": str(t.concurrency),
            "LEASE_MS": str(t.lease_ms),
            "CLAIM_IDLE_MS": str(t.claim_idle_ms),
            "APPROVER_GROUPS": GROUPS,
            "WEBHOOK_SECRET": "whsec-chaos",  # the threads' callbacks are signed with it
        }

    async def _watch(self) -> None:
        """Restart what exited without our signal; runs until cancelled."""
        while True:
            await asyncio.sleep(0.25)
            redis = self.redis.process
            if "redis" not in self._killing and redis is not None and redis.poll() is not None:
                self.exits["redis"] += 1
                log.warning("redis exited on its own (%s): restarting", redis.returncode)
                self.redis.process = None
                self.redis.start()
            for role, proc in list(self.procs.items()):
                if role in self._killing or proc.returncode is None:
                    continue
                self.exits[role.split("-")[0]] += 1
                log.warning("%s exited on its own (%s): restarting", role, proc.returncode)
                self._killing.add(role)  # the respawn below is ours: don't count it twice
                try:
                    await asyncio.sleep(RESPAWN_PAUSE)
                    await self._spawn(role)
                finally:
                    self._killing.discard(role)

    async def _stop_all(self) -> None:
        """SIGTERM every process, SIGKILL what is still up after 10 s, then Redis."""
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.redis.stop()


def revision() -> str:
    """The commit the code was copied from, ``+dirty`` when the working tree had edits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *PACKAGES],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + ("+dirty" if dirty.strip() else "")
