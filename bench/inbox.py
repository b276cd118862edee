"""The web inbox: the waiting list's server time with 10,000 open requests, and how long a
decision takes to reach an open page's event stream.

On the embedded server: 10,000 approvals are created through ``POST /approvals``
(several agents, tools and expiries, half of them for the viewer). Then ``GET /inbox``
(the viewer's first page, "all", filtered by agent, and a late page) is timed inside
the process (the app through an in-process ASGI transport: server time, no network).
Then, with the app served on loopback, an event stream ``/inbox/events`` is open as a
browser's EventSource holds it, requests are approved through the REST API, and the
time from each decision's answer to its event arriving on the stream is measured.
``GET /metrics`` is timed too, on another runtime (a worker's metrics port): its first
scrape, and the next ones, which count the same open requests again.
Where Debian's Chromium is installed, the same is measured in a real browser: a
request's page open, the request approved through the REST API, and the time until the
page says "Approved" (the EventSource's event, the page's re-read and its new content).

The viewer's session cookie is signed here with the session secret, as the sign-in
would sign it: the bench measures the inbox, not the sign-in.

    python -m bench.inbox [--requests 10000] [--pages 200] [--decisions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from itsdangerous import TimestampSigner

from bench.measure import percentiles
from bot.domain.clock import SystemClock
from bot.models.offline import OfflineModel
from bot.runtime import build_runtime
from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis
from bot.web.app import create_app
from bot.web.session import COOKIE, SessionConfig
from bot.web.signin import SignInConfig
from bot.web.telemetry import create_metrics_app

TOKEN = "bench-token"
SECRET = "bench-session-secret-0123456789abcdef"
VIEWER = "ops@example.test"
AGENTS = ["deploy", "refunds", "billing", "infra", "support"]
TOOLS = ["deploy", "refund", "restart", "scale", "delete"]


def session_cookie(email: str) -> str:
    """The cookie Starlette's SessionMiddleware would set after ``email`` signed in."""
    data = {"email": email, "name": None, "elsewhere": [], "at": time.time(), "csrf": "bench"}
    raw = base64.b64encode(json.dumps(data).encode())
    return TimestampSigner(SECRET).sign(raw).decode()


async def fill(api: httpx.AsyncClient, total: int, clients: int = 32) -> None:
    counter = iter(range(total))

    async def client() -> None:
        for n in counter:
            approvers = [VIEWER] if n % 2 == 0 else ["fin@example.test"]
            body = {
                "agent": AGENTS[n % len(AGENTS)],
                "tool": TOOLS[n % len(TOOLS)],
                "arguments": {"n": n, "service": "api"},
                "summary": f"bench request {n}",
                "policy": {"approvers": approvers, "expires_in": 600 + (n * 7919) % 86400},
            }
            r = await api.post("/approvals", json=body)
            assert r.status_code == 201, r.text

    await asyncio.gather(*(client() for _ in range(clients)))


async def list_times(app: Any, pages: int) -> dict[str, dict[str, float]]:
    transport = httpx.ASGITransport(app=app)
    cookies = {COOKIE: session_cookie(VIEWER)}
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inbox", cookies=cookies
    ) as web:
        start = time.perf_counter()
        await web.get("/inbox")
        cold = round((time.perf_counter() - start) * 1000, 3)
        out["first_page_cold_once"] = {"p50": cold, "p99": cold}
        for name, params in {
            "for_me_page_1": {},
            "all_page_1": {"show": "all"},
            "all_one_agent": {"show": "all", "agent": "infra"},
            "all_page_300": {"show": "all", "page": "300"},
        }.items():
            seconds = []
            for _ in range(pages):
                start = time.perf_counter()
                r = await web.get("/inbox", params=params)
                seconds.append(time.perf_counter() - start)
                assert r.status_code == 200, r.text[:300]
            out[name] = percentiles(seconds)
    return out


async def scrape_times(redis: Any, scrapes: int) -> dict[str, float]:
    """``GET /metrics`` server time in a process that has read nothing yet (its first
    scrape), then p50/p99 of the next ``scrapes``, all counting every open request."""
    app = create_metrics_app(build_runtime(redis, {}, OfflineModel({})), api_token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://metrics",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as scraper:
        seconds = []
        for _ in range(scrapes + 1):
            start = time.perf_counter()
            r = await scraper.get("/metrics")
            seconds.append(time.perf_counter() - start)
            assert r.status_code == 200 and "greenlight_open_requests{" in r.text, r.text[:300]
    return {"first": round(seconds[0] * 1000, 3), **percentiles(seconds[1:])}


async def sse_delays(url: str, decisions: int) -> dict[str, float]:
    cookies = {COOKIE: session_cookie(VIEWER)}
    api = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    page = await api.get("/requests", params={"limit": min(200, decisions * 2)})
    mine = [a for a in page.json()["items"] if VIEWER in a.get("approvers", [])]
    open_ids = [a["id"] for a in mine][:decisions]
    arrived: dict[str, float] = {}
    ready = asyncio.Event()

    async def browser() -> None:
        async with (
            httpx.AsyncClient(base_url=url, cookies=cookies, timeout=None) as web,
            web.stream("GET", "/inbox/events") as stream,
        ):
            async for line in stream.aiter_lines():
                if line.startswith("event: ready"):
                    ready.set()
                if line.startswith("data: ") and "request" in (data := json.loads(line[6:])):
                    arrived[data["request"]] = time.perf_counter()  # "waiting" events carry none
                    if len(arrived) >= len(open_ids):
                        return

    watching = asyncio.create_task(browser())
    await asyncio.wait_for(ready.wait(), 10)
    decided: dict[str, float] = {}
    for rid in open_ids:
        body = {"decision": "approve", "by": VIEWER}
        decided[rid] = time.perf_counter()
        r = await api.post(f"/requests/{rid}/decision", json=body)
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.02)
    await asyncio.wait_for(watching, 30)
    await api.aclose()
    # From sending the decision: its own round trip is counted in (an upper bound).
    return percentiles([arrived[rid] - decided[rid] for rid in open_ids])


async def browser_delays(url: str, decisions: int) -> dict[str, float] | str:
    """From sending a decision to the open request page showing it, in Chromium."""
    from tests.browser.chromium import CHROMIUM, chromium

    if not CHROMIUM.exists():
        return f"not measured: {CHROMIUM} is missing"
    api = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    page_of = await api.get("/requests", params={"limit": 200})
    mine = [a["id"] for a in page_of.json()["items"] if VIEWER in a.get("approvers", [])]
    seconds = []
    async with chromium() as browser:
        context = await browser.new_context()
        host = httpx.URL(url).host
        await context.add_cookies(
            [{"name": COOKIE, "value": session_cookie(VIEWER), "domain": host, "path": "/"}]
        )
        page = await context.new_page()
        for rid in mine[:decisions]:
            await page.goto(f"{url}/inbox/requests/{rid}")
            # The page re-reads itself once its event stream is ready: it listens from then.
            await page.locator("#page[data-live-read]").wait_for(state="attached")
            start = time.perf_counter()
            body = {"decision": "approve", "by": VIEWER}
            r = await api.post(f"/requests/{rid}/decision", json=body)
            assert r.status_code == 200, r.text
            status = page.locator("#request-status", has_text="Approved")
            await status.wait_for(timeout=10_000)
            seconds.append(time.perf_counter() - start)
        await context.close()
    await api.aclose()
    return percentiles(seconds)


async def main(total: int, pages: int, decisions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        server.start()
        try:
            redis = await connect(server.url)
            rt = build_runtime(redis, {}, OfflineModel({}), clock=SystemClock())
            sessions = SessionConfig(SECRET, https=False, max_age=3600, admins=frozenset())
            signin = SignInConfig(sessions=sessions, public_url="http://127.0.0.1")
            app = create_app(rt, api_token=TOKEN, signin=signin)
            started = time.perf_counter()
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://inbox",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as api:
                await fill(api, total)
            report: dict[str, Any] = {
                "open_requests": total,
                "created_in_s": round(time.perf_counter() - started, 1),
                "list_server_ms": await list_times(app, pages),
                "metrics_scrape_ms": await scrape_times(redis, 20),
            }

            config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
            web = uvicorn.Server(config)
            serving = asyncio.create_task(web.serve())
            while not web.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                await asyncio.sleep(0.01)
            port = web.servers[0].sockets[0].getsockname()[1]
            url = f"http://127.0.0.1:{port}"
            report["decision_to_event_ms"] = await sse_delays(url, decisions)
            report["decision_to_browser_ms"] = await browser_delays(url, min(decisions, 20))
            print(json.dumps(report, indent=2))
            web.should_exit = True
            await serving
            await redis.aclose()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--decisions", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.pages, args.decisions))
