"""How fast ``POST /slack/events`` answers Slack, with many signed events in flight.

A real web process (``python -m bot web``, its own process, as in production)
against a real Redis (the embedded binary) and the local Slack Web API
stand-in. Each round sends ``--in-flight`` signed ``app_mention`` events at
once, each starting a conversation (the heaviest path: users.info, a new
thread, a queue entry). No worker runs: answering Slack never waits for the
agent. Prints JSON with the answer times in milliseconds; the target is a
p99 of at most 50 ms (issue 8), far inside Slack's 3 seconds.

    python -m bench.slack_events [--in-flight 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes
from tests.standins.slack_api import SlackAPI, SlackUser

SECRET = "bench-signing-secret"
USERS = [SlackUser(f"U0BENCH{i:03d}", f"user{i}", f"user{i}@example.com") for i in range(8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mention(n: int) -> bytes:
    ts = f"1720{n:06d}.000100"
    user = USERS[n % len(USERS)].id
    payload = {
        "token": "bench",
        "team_id": "T0BENCH001",
        "api_app_id": "A0BENCH001",
        "type": "event_callback",
        "event_id": f"Ev0BENCH{n:08d}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": "T0BENCH001",
                "user_id": "U0BOT0001",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "event": {
            "type": "app_mention",
            "user": user,
            "ts": ts,
            "event_ts": ts,
            "team": "T0BENCH001",
            "channel": "C0BENCH001",
            "text": f"<@U0BOT0001> deploy api 1.5.0 to production ({n})",
        },
    }
    return json.dumps(payload).encode()


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or "",
    }


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def to_request(host: str, body: bytes, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 ``POST /slack/events``, as bytes on the wire (the connection kept open)."""
    lines = [f"POST /slack/events HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    return "".join(lines).encode() + b"\r\n" + body


async def send(conn: Connection, request: bytes) -> tuple[float, int]:
    """Send one request and read its answer: the milliseconds it took, and its status."""
    reader, writer = conn
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"),
        None,
    )
    if length is None:
        raise RuntimeError(f"an answer without content-length: {head[:200]!r}")
    await reader.readexactly(length)
    return (time.perf_counter() - start) * 1000, int(head[9:12])


async def burst(conns: list[Connection], host: str, first: int) -> list[tuple[float, int]]:
    """One signed event on each connection at once; built and signed before the clock starts."""
    bodies = [mention(first + i) for i in range(len(conns))]
    requests = [to_request(host, body, signed(body)) for body in bodies]
    return await asyncio.gather(*(send(c, r) for c, r in zip(conns, requests, strict=True)))


@contextlib.asynccontextmanager
async def web_process(redis_url: str, api: SlackAPI, data: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))},
        "REDIS_URL": redis_url,
        "SLACK_BOT_TOKEN": api.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": api.url,
        "API_TOKEN": "bench",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data),
        "LOG_LEVEL": "WARNING",
        "APPROVER_GROUPS": '{"deployers": ["bob"], "finance": ["bob"]}',
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "web",
        env=env,
        cwd=Path(__file__).parents[1],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as probe:
            for _ in range(300):  # up to 30 s to boot
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                if proc.returncode is not None:
                    raise RuntimeError(f"the web process exited with {proc.returncode}")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the web process did not come up")
        yield url, proc.pid
    finally:
        proc.terminate()
        await proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(in_flight: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        server.start()
        redis = Redis.from_url(server.url, decode_responses=True)
        try:
            async with (
                SlackAPI(users=USERS) as api,
                web_process(server.url, api, Path(tmp)) as (url, pid),
            ):
                # Plain HTTP/1.1 on asyncio streams: aiohttp's client spent about 0.3 ms of
                # CPU per request (httpx more), as much as the server, on the same 2 cores.
                where = urlsplit(url)
                host = where.netloc
                conns = [
                    await asyncio.open_connection(where.hostname, where.port)
                    for _ in range(in_flight)
                ]
                try:
                    n = 0
                    for _ in range(2):  # warm-up: connections, users.info cache, auth.test
                        await burst(conns, host, n)
                        n += in_flight
                    answers: list[tuple[float, int]] = []
                    cpu, driver = cpu_seconds(pid), time.process_time()
                    for _ in range(rounds):
                        answers += await burst(conns, host, n)
                        n += in_flight
                    cpu, driver = cpu_seconds(pid) - cpu, time.process_time() - driver
                finally:
                    for _reader, writer in conns:
                        writer.close()
                times = [ms for ms, _ in answers]
                statuses = [status for _, status in answers]
            threads = (await Indexes(redis).threads(offset=0, limit=1))[1]
        finally:
            await redis.aclose()
            server.stop()
    return {
        "benchmark": "slack_events",
        "in_flight": in_flight,
        "rounds": rounds,
        "requests": len(times),
        "non_200": sum(1 for s in statuses if s != 200),
        "threads_recorded": threads,
        "p50_ms": round(statistics.median(times), 1),
        "p90_ms": round(percentile(times, 0.90), 1),
        "p99_ms": round(percentile(times, 0.99), 1),
        "max_ms": round(max(times), 1),
        "web_cpu_ms_per_event": round(cpu * 1000 / len(times), 2),
        "driver_cpu_ms_per_event": round(driver * 1000 / len(times), 2),
        "target_p99_ms": 50,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(main(ns.in_flight, ns.rounds)), indent=2))
