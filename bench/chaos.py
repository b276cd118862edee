"""A chaos soak: hundreds of approval cycles over HTTP while Redis, web and workers are SIGKILLed.

Runs the embedded Redis (AOF, ``appendfsync always``), ``python -m bot web``
and two ``python -m bot worker`` processes on loopback (``bench.chaos_fleet``).
Each of ``--threads`` threads asks the deploy agent for a production deploy
through ``POST /threads``, waits until it is suspended for approval, stays
suspended for a random time (up to ``--think`` seconds, so kills find many
threads waiting), and is decided by bob: most once, some by two concurrent
POSTs of the same or of opposite decisions, of which exactly one must win. A thread whose deploy was
cut by a crash asks a human what happened; the soak answers it. Meanwhile a
random process is SIGKILLed every few seconds and restarted (Redis on the same
port and folder, so its AOF is replayed); a third of the worker kills come
just after an approval was accepted, while the deploy is about to run.
Client calls that failed because a process was down are retried; every POST
carries an ``Idempotency-Key``, so a retry never doubles anything.

Progress is learned from webhook callbacks to a receiver in this process, and
by polling ``GET /threads/{id}`` when a callback is late. At the end every
thread is read back and its log audited (``bench.chaos_audit``): lost (created,
then gone or never suspended), stuck (not done by the deadline), doubled tool
runs and doubled decisions. Prints one JSON document; exits 1 if any thread
was lost, stuck or doubled. Progress goes to stderr.

    python -m bench.chaos [--threads 500] [--seconds 270] [--seed 1] [--kill-every 2]
        [--launch-seconds 120] [--in-flight 100] [--think 10] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.chaos_audit import Audit, from_thread
from bench.chaos_fleet import AUTH, Fleet, Kill, Tuning, revision
from bench.measure import load_average, server_version
from bot.domain import ids
from bot.serve import run_loop
from bot.storage.embedded import HOST

log = logging.getLogger("bench.chaos")

TEXT = "deploy api 1.5.0 to production"
PLANS = {"approve": 60, "reject": 10, "race-same": 15, "race-opposite": 15}
"""How threads are decided, by weight: once, or by two concurrent POSTs."""
RETRIED = {500, 502, 503, 504}
"""Statuses a client retries: the process or Redis behind it was down."""
POLL = 2.0
"""Seconds a driver waits for a callback before it reads the thread itself."""
VERIFY = 25.0
"""Seconds of ``--seconds`` kept to read every thread back at the end."""
ANSWER = "Checked: it did not take effect. Leave it for now."
"""The human's answer when a deploy's outcome is unknown (no version in it: no new deploy)."""


class Unavailable(Exception):
    """A call kept failing until the deadline."""


class Api:
    """The REST API, retried while the processes behind it restart."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.retries: Counter[str] = Counter()
        """Failed attempts that were retried, by cause: a status or an exception."""
        self._jitter = random.Random()

    async def call(
        self, method: str, path: str, *, until: float, body: Any = None, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The first answer that is not a retried status; retried until ``until`` (monotonic).

        Raises:
            Unavailable: still failing at ``until``.
        """
        headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
        delay, last = 0.1, ""
        while True:
            try:
                async with self.http.request(
                    method, self.base + path, json=body, headers=headers
                ) as r:
                    status, raw = r.status, await r.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__
            else:
                try:
                    out = json.loads(raw)
                except ValueError:
                    out, why = {"raw": raw[:200].decode(errors="replace")}, f"{status}-not-json"
                else:
                    why = str(status)
                if status not in RETRIED:
                    return status, out
                last = str(out.get("detail", out))[:300]
            self.retries[why] += 1
            if time.monotonic() + delay > until:
                raise Unavailable(f"{method} {path}: still {why} at the deadline: {last}")
            await asyncio.sleep(delay * (0.5 + self._jitter.random()))
            delay = min(delay * 2, 2.0)


class Callbacks:
    """Receives the workers' webhook callbacks; each wakes the driver of its thread."""

    def __init__(self) -> None:
        self.url = ""
        self.received: Counter[str] = Counter()
        self.final: set[str] = set()
        """Threads whose final reply was called back."""
        self._nudges: dict[str, asyncio.Event] = {}

    def nudge(self, thread_id: str) -> asyncio.Event:
        return self._nudges.setdefault(thread_id, asyncio.Event())

    async def receive(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.received[body["type"]] += 1
        if body["type"] == "agent_reply" and body["data"].get("final"):
            self.final.add(body["thread_id"])
        self.nudge(body["thread_id"]).set()
        return web.Response()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Callbacks]:
        """Listen on a free loopback port until the block ends."""
        app = web.Application()
        app.router.add_post("/callbacks", self.receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind((HOST, 0))
        self.url = f"http://{HOST}:{sock.getsockname()[1]}/callbacks"
        try:
            await web.SockSite(runner, sock).start()
            yield self
        finally:
            await runner.cleanup()
            sock.close()


@dataclass
class Trace:
    """What the driver did to one thread and what it was told."""

    key: str
    plan: str
    think: float
    """Seconds the human takes to decide once the thread is suspended."""
    created: bool = False
    suspended: bool = False
    votes: list[tuple[str, int, str]] = field(default_factory=list)
    """Each decision POST: the decision, the final HTTP status, the request status it returned."""
    answered: int = 0
    error: str | None = None

    @property
    def thread_id(self) -> str:
        return ids.thread_id_for("api", self.key)  # a key names its thread (POST /threads)


class Driver:
    """Takes threads from creation to done through the REST API alone."""

    def __init__(self, api: Api, callbacks: Callbacks, until: float) -> None:
        self.api = api
        self.callbacks = callbacks
        self.until = until
        self.active = 0
        """Threads being driven now: how much load a kill lands in."""
        self.approved = asyncio.Event()
        """Set whenever an approval is accepted: a worker is about to run the tool."""

    async def drive(self, t: Trace) -> None:
        """One thread, start to end; what went wrong is kept in ``t.error``."""
        self.active += 1
        try:
            await self._drive(t)
        except Unavailable as exc:
            t.error = str(exc)
        except Exception as exc:
            log.exception("driver of %s failed", t.thread_id)
            t.error = repr(exc)
        finally:
            self.active -= 1

    async def _drive(self, t: Trace) -> None:
        new = {"agent": "deploy", "text": TEXT, "user": "ann", "callback_url": self.callbacks.url}
        status, out = await self.api.call("POST", "/threads", body=new, key=t.key, until=self.until)
        if status not in (200, 201) or out.get("id") != t.thread_id:
            t.error = f"POST /threads answered {status}: {out}"
            return
        t.created = True
        thread = await self._wait(t.thread_id, lambda s: s["status"] != "running")
        if thread is None:
            return
        if thread["status"] != "awaiting_approval":
            t.error = f"never suspended: {thread['status']}"
            return
        t.suspended = True
        await asyncio.sleep(min(t.think, max(0.0, self.until - time.monotonic())))
        await self._decide(t, thread["open_requests"][0]["id"])
        for _ in range(3):  # a cut run asks what happened; asked again only after another cut
            thread = await self._wait(
                t.thread_id, lambda s: s["status"] not in ("running", "awaiting_approval")
            )
            if thread is None or thread["status"] != "awaiting_human":
                return
            for req in thread["open_requests"]:
                if req["kind"] == "question":
                    answer = {"text": ANSWER, "by": "bob"}
                    path = f"/requests/{req['id']}/answer"
                    key = f"{t.key}:{req['id']}:answer"
                    await self.api.call("POST", path, body=answer, key=key, until=self.until)
                    t.answered += 1

    async def _decide(self, t: Trace, request_id: str) -> None:
        decisions = {
            "approve": ["approve"],
            "reject": ["reject"],
            "race-same": ["approve", "approve"],
            "race-opposite": ["approve", "reject"],
        }[t.plan]

        async def post(i: int, decision: str) -> None:
            body = {"decision": decision, "by": "bob", "reason": f"chaos {t.plan}"}
            path = f"/requests/{request_id}/decision"
            key = f"{t.key}:decision:{i}"  # two POSTs, two deliveries: exactly one may win
            status, out = await self.api.call("POST", path, body=body, key=key, until=self.until)
            t.votes.append((decision, status, str(out.get("status", out.get("error", "")))))
            if status == 200 and decision == "approve":
                self.approved.set()

        await asyncio.gather(*(post(i, d) for i, d in enumerate(decisions)))

    async def _wait(
        self, thread_id: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """The thread once ``done`` holds for it; None if it does not by the deadline."""
        nudge = self.callbacks.nudge(thread_id)
        while time.monotonic() < self.until:
            nudge.clear()
            status, thread = await self.api.call("GET", f"/threads/{thread_id}", until=self.until)
            if status == 200 and done(thread):
                return thread
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nudge.wait(), POLL)
        return None


@dataclass
class Chaos:
    """Kills a random process every few seconds while threads are driven.

    A third of the worker kills are aimed: they come a few milliseconds after
    an approval was accepted, when a worker is about to run (or is running) the
    deploy, the window invariant 6 is about. The rest land anywhere.
    """

    fleet: Fleet
    driver: Driver
    rng: random.Random
    every: float
    aimed: int = 0
    load: list[int] = field(default_factory=list)
    """Threads in flight at each kill."""

    async def run(self, over: asyncio.Event, until: float) -> None:
        """Kill until ``over`` is set or ``until`` (monotonic); one kill at a time."""
        roles = ["redis", "redis", "web", "web", *self.fleet.workers]
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), self.rng.uniform(0.5, 1.5) * self.every)
            if over.is_set() or time.monotonic() >= until:
                return
            role = self.rng.choice(roles)
            if role.startswith("worker") and self.rng.random() < 1 / 3:
                await self._aim()
            self.load.append(self.driver.active)
            await self.fleet.kill(role, down_s=round(self.rng.uniform(0.0, 1.5), 2))
            # The next kill comes once the fleet answers again.
            if not await self.fleet.ready(30):
                log.warning("fleet not ready 30 s after a kill")

    async def _aim(self) -> None:
        """Wait (at most 5 s) for the next accepted approval, then a few milliseconds more."""
        self.driver.approved.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.driver.approved.wait(), 5)
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))
            self.aimed += 1


Read = tuple[int, dict[str, Any]]
"""A thread read back: the HTTP status (0: no answer at all) and the body."""


async def read_back(api: Api, traces: list[Trace], until: float) -> dict[str, Read]:
    """Every thread as the API returns it now, each retried for at most 10 s."""
    out: dict[str, Read] = {}
    slots = asyncio.Semaphore(16)

    async def one(tid: str) -> None:
        async with slots:
            try:
                out[tid] = await api.call(
                    "GET", f"/threads/{tid}", until=min(until, time.monotonic() + 10)
                )
            except Unavailable as exc:
                out[tid] = (0, {"detail": str(exc)})

    await asyncio.gather(*(one(t.thread_id) for t in traces))
    return out


def report(
    traces: list[Trace], read: dict[str, Read], kills: list[Kill], t0: float
) -> tuple[dict[str, Any], bool]:
    """The figures, and whether the soak passed (nothing lost, stuck or doubled)."""
    created = [t for t in traces if t.created or read[t.thread_id][0] != 404]
    audits = {t.thread_id: from_thread(read[t.thread_id][1]) for t in created}
    audits = {tid: a for tid, a in audits.items() if read[tid][0] == 200}
    gone = [t.thread_id for t in created if read[t.thread_id][0] == 404]
    unreadable = {
        t.thread_id: read[t.thread_id] for t in created if read[t.thread_id][0] not in (200, 404)
    }
    never = [tid for tid, a in audits.items() if a.asked == 0]
    stuck = [tid for tid, a in audits.items() if a.asked and a.status != "done"]
    doubled_runs = [tid for tid, a in audits.items() if a.doubled_runs]
    doubled_decisions = [tid for tid, a in audits.items() if a.doubled_decisions]
    races = [t for t in traces if t.plan.startswith("race") and t.votes]
    bad_races = [t.thread_id for t in races if not _one_winner(t, audits.get(t.thread_id))]
    singles = [t for t in traces if not t.plan.startswith("race") and t.votes]
    refused = [t.thread_id for t in singles if [s for _, s, _ in t.votes] != [200]]
    statuses = Counter(a.status for a in audits.values())
    bad = {*gone, *never, *stuck, *doubled_runs, *doubled_decisions, *bad_races, *refused}
    anomalies = [
        {"thread": tid, "http": status, "error": str(body.get("detail", body))[:300]}
        for tid, (status, body) in unreadable.items()
    ][:6]
    anomalies += [_anomaly(tid, audits.get(tid), kills, t0) for tid in sorted(bad)[:12]]
    runs = sum(a.runs for a in audits.values())
    figures = {
        "threads": {
            "launched": len(traces),
            "created": len(created),
            "finished": statuses["done"],
            "lost": len(gone) + len(unreadable) + len(never),
            "lost_by_kind": {
                "gone": len(gone),
                "unreadable": len(unreadable),
                "never_suspended": len(never),
            },
            "stuck": len(stuck),
            "not_created": len(traces) - len(created),
            "status_at_end": dict(statuses),
        },
        "tool_runs": {
            "deploy_runs": runs,
            "approved_threads": sum(a.approved for a in audits.values()),
            "doubled": len(doubled_runs),
            "outcome_unknown": sum(a.unknown for a in audits.values()),
        },
        "decisions": {
            "plans": dict(Counter(t.plan for t in traces)),
            "races": len(races),
            "race_not_exactly_one_winner": len(bad_races),
            "single_not_accepted": len(refused),
            "doubled": len(doubled_decisions),
            "unknown_outcomes_answered": sum(t.answered for t in traces),
        },
        "kills": dict(Counter(k.role.split("-")[0] for k in kills)),
        "driver_errors": Counter(
            (t.error or "").split(":")[0] for t in traces if t.error
        ).most_common(5),
        "anomalies": anomalies,
    }
    failed = bool(gone or unreadable or never or stuck or doubled_runs or doubled_decisions)
    failed = failed or bool(bad_races)
    failed = failed or bool(refused)
    failed = failed or len(created) < len(traces)
    return figures, not failed


def _spread(values: list[int]) -> dict[str, int]:
    ordered = sorted(values) or [0]
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def _one_winner(t: Trace, audit: Audit | None) -> bool:
    """Of two racing decisions exactly one won, and the one recorded is the one told it won."""
    won = [d for d, status, _ in t.votes if status == 200]
    lost = [status for _, status, _ in t.votes if status != 200]
    if len(won) != 1 or lost != [409] or audit is None:
        return False
    recorded = [d for ds in audit.decisions.values() for d in ds]
    return recorded == won


def _anomaly(tid: str, audit: Audit | None, kills: list[Kill], t0: float) -> dict[str, Any]:
    """A thread that broke a rule: its events and the kill that came just before."""
    if audit is None:
        return {"thread": tid, "status": "gone"}
    at = audit.first_doubled_at or audit.last_at
    before = [k for k in kills if k.at <= at]
    return {
        "thread": tid,
        "status": audit.status,
        "decisions": audit.decisions,
        "deploy_runs": audit.runs,
        "events": audit.trail,
        "at_s": round(at - t0, 2),
        "kill_before": (
            {"role": before[-1].role, "at_s": round(before[-1].at - t0, 2)} if before else None
        ),
    }


async def soak(opts: argparse.Namespace, data: Path) -> tuple[dict[str, Any], bool]:
    """Run the soak in ``data``; the figures and whether it passed."""
    rng = random.Random(opts.seed)
    tuning = Tuning()
    fleet = Fleet(data, tuning)
    code = revision()  # before the copy: the copy is of the tree as it is now
    started, wall = time.monotonic(), time.time()
    until = started + opts.seconds - VERIFY
    plans = rng.choices(list(PLANS), weights=list(PLANS.values()), k=opts.threads)
    traces = [
        Trace(f"chaos-{opts.seed}-{n}", plan, round(rng.uniform(0, opts.think), 2))
        for n, plan in enumerate(plans)
    ]
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=2 * opts.in_flight + 16)
    async with (
        Callbacks().serving() as callbacks,
        fleet.running(),
        aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
    ):
        redis = await server_version(fleet.redis.url)
        api = Api(http, fleet.api)
        driver = Driver(api, callbacks, until)
        slots = asyncio.Semaphore(opts.in_flight)
        over = asyncio.Event()

        gap = opts.launch_seconds / max(opts.threads, 1)

        async def one(n: int, t: Trace) -> None:
            # Spread over the launch window, so the kills land while threads are in every state.
            await asyncio.sleep(max(0.0, started + n * gap - time.monotonic()))
            async with slots:
                await driver.drive(t)

        log.info("%d threads, %d in flight, data in %s", len(traces), opts.in_flight, data)
        chaos = Chaos(fleet, driver, rng, opts.kill_every)
        killer = asyncio.create_task(chaos.run(over, until - 30))
        try:
            await asyncio.gather(*(one(n, t) for n, t in enumerate(traces)))
        except BaseException:
            killer.cancel()  # interrupted: no more kills, and no waiting for a restart
            raise
        finally:
            over.set()  # done: the kill in hand finishes with its restart
            with contextlib.suppress(asyncio.CancelledError):
                await killer
        driven = time.monotonic() - started
        log.info("driven in %.1f s; reading every thread back", driven)
        await fleet.ready(15)
        threads = await read_back(api, traces, started + opts.seconds)
        figures, ok = report(traces, threads, fleet.kills, wall)
        done = {tid for tid, (st, th) in threads.items() if st == 200 and th["status"] == "done"}
        figures["callbacks"] = {
            "received": sum(callbacks.received.values()),
            "final_reply_missing": len(done - callbacks.final),
        }
        figures["kills"]["aimed_after_an_approval"] = chaos.aimed
        figures["kills"]["threads_in_flight_at_kill"] = _spread(chaos.load)
        figures["kills"]["unexpected_exits"] = dict(fleet.exits)
        figures["client_retries"] = dict(api.retries)
        figures["setup"] = {
            "code": code,
            "redis": f"embedded {redis}, appendonly yes, appendfsync always",
            "processes": f"python -m bot web + {tuning.workers} x python -m bot worker",
            "threads": opts.threads,
            "in_flight": opts.in_flight,
            "think_s": opts.think,
            "worker_concurrency": tuning.concurrency,
            "seed": opts.seed,
            "launch_seconds": opts.launch_seconds,
            "kill_every_s": opts.kill_every,
            "lease_ms": tuning.lease_ms,
            "claim_idle_ms": tuning.claim_idle_ms,
        }
        figures["wall_s"] = {"driving": round(driven, 1), "total": round(time.time() - wall, 1)}
        return figures, ok


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument(
        "--seconds", type=float, default=270, help="bound on the whole run, start to report"
    )
    parser.add_argument("--seed", type=int, default=1, help="picks the plans and the kills")
    parser.add_argument("--in-flight", type=int, default=100, help="threads driven at once")
    parser.add_argument(
        "--think", type=float, default=10, help="most seconds a thread waits to be decided"
    )
    parser.add_argument(
        "--launch-seconds", type=float, default=120, help="threads are started evenly over this"
    )
    parser.add_argument("--kill-every", type=float, default=2.0, help="mean seconds between kills")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    opts = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    data = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    result: dict[str, Any] = {}

    async def go() -> None:
        # SIGTERM stops the soak as Ctrl-C does: everything it started is stopped first.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        before = load_average()
        figures, ok = await soak(opts, data)
        figures["machine"] = {"load_average": {"before": before, "after": load_average()}}
        result.update(figures, ok=ok)

    try:
        run_loop(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.warning("interrupted; logs kept in %s", data)
        sys.exit(130)
    finally:
        if result.get("ok") and not opts.keep:
            shutil.rmtree(data, ignore_errors=True)
        elif result:
            log.warning("logs kept in %s", data)
    print(json.dumps(result, indent=2))
    if not result.get("ok"):
        sys.exit(1)


if __name__ == "__main__":
    cli()
