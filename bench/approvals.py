"""Approvals from agents that run elsewhere, through real processes and real HTTP.

A web process and a worker process on the embedded server. 32 clients each
create an approval (``POST /approvals``) and decide it (``POST
/requests/{id}/decision``), over and over: approvals created and decided per
second. Then the MCP round trip: the official MCP client calls
``request_approval`` at ``/mcp`` while another task approves the request as
soon as it is listed; p50 and p99 of the whole call.

    python -m bench.approvals [--approvals 2000] [--clients 32] [--mcp 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench.measure import percentiles
from bench.web_workers import TOKEN, fleet
from bot.serve import run_loop
from bot.storage.embedded import EmbeddedRedis

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
POLICY = {"approvers": ["bob"], "expires_in": 3600}


async def approve_once(http: aiohttp.ClientSession, api: str, n: int) -> None:
    body = {"tool": "deploy", "arguments": {"n": n}, "summary": "bench", "policy": POLICY}
    async with http.post(f"{api}/approvals", json=body, headers=HEADERS) as r:
        assert r.status == 201, await r.text()
        made = await r.json()
    decision = {"decision": "approve", "by": "bob"}
    url = f"{api}/requests/{made['id']}/decision"
    async with http.post(url, json=decision, headers=HEADERS) as r:
        assert r.status == 200, await r.text()


async def throughput(api: str, total: int, clients: int) -> dict[str, Any]:
    counter = iter(range(total))

    async def client(http: aiohttp.ClientSession) -> None:
        for n in counter:
            await approve_once(http, api, n)

    async with aiohttp.ClientSession() as http:
        counter = iter(range(-100, 0))  # warm up
        await asyncio.gather(*(client(http) for _ in range(clients)))
        started = time.perf_counter()
        counter = iter(range(total))
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, "approvals": total, "per_s": round(total / elapsed, 1)}


async def mcp_round_trips(api: str, count: int) -> dict[str, Any]:
    times: list[float] = []
    async with (
        httpx.AsyncClient(base_url=api, headers=HEADERS, timeout=10) as rest,
        httpx.AsyncClient(headers=HEADERS, timeout=60) as http,
        streamable_http_client(f"{api}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()

        async def approve_when_listed(n: int) -> None:
            while True:
                for item in (await rest.get("/requests")).json()["items"]:
                    if item.get("args") == {"n": n}:
                        decision = {"decision": "approve", "by": "bob"}
                        await rest.post(f"/requests/{item['id']}/decision", json=decision)
                        return
                await asyncio.sleep(0.002)  # polls the stand-in approver; not a test

        for n in range(count):
            summary = f"mcp bench {n}"
            arguments = {"tool": "deploy", "arguments": {"n": n}, "summary": summary,
                         "policy": "bench"}  # fmt: skip
            deciding = asyncio.create_task(approve_when_listed(n))
            started = time.perf_counter()
            await session.call_tool("request_approval", arguments)
            times.append(time.perf_counter() - started)
            await deciding
    return {"calls": count, "round_trip_ms": percentiles(times)}


async def main(total: int, clients: int, mcp_calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        server.start()
        try:
            policies = json.dumps({"bench": POLICY})
            extra = {"APPROVAL_POLICIES": policies}
            async with fleet(
                server.url, Path(tmp), workers=1, concurrency=32, extra=extra
            ) as running:
                result = {
                    "benchmark": "approvals",
                    "rest": await throughput(running.api, total, clients),
                    "mcp": await mcp_round_trips(running.api, mcp_calls),
                }
        finally:
            server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--approvals", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--mcp", type=int, default=50)
    ns = parser.parse_args()
    run_loop(main(ns.approvals, ns.clients, ns.mcp))
