"""The Python client against a real server: the Harness on a real port, decided over REST."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.storage.embedded import EmbeddedRedis
from greenlight import (
    AsyncGreenlight,
    Expired,
    Greenlight,
    Rejected,
    RequestError,
    StillPending,
    require_approval,
    run,
)
from tests.harness import TOKEN, Harness, eventually
from tests.standins.lossy_proxy import LossyProxy, OutageProxy

ROOT = Path(__file__).resolve().parents[2]
BOB = {"approvers": ["bob"]}


class Target(BaseModel):
    region: str
    zones: list[str]


class Plan(BaseModel):
    replicas: int
    regions: list[str]


class Context:
    """Not JSON: passed through, never shown."""


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    async with Harness(redis_server.url, clock=ManualClock(time.time())) as harness:
        yield harness


async def open_request(h: Harness, count: int = 1) -> dict[str, Any]:
    """The one open request, once the client has made it (the newest of ``count``)."""

    async def probe() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await h.api.get("/requests")).json()["items"]
        return items if len(items) >= count else None

    items = await eventually(probe)
    assert len(items) == count, items
    return items[-1]


async def decide(h: Harness, rid: str, decision: str, **kw: Any) -> None:
    body = {"decision": decision, "by": "bob", **kw}
    r = await h.api.post(f"/requests/{rid}/decision", json=body)
    assert r.status_code == 200, r.text


async def threads_of(h: Harness, agent: str) -> int:
    page = (await h.api.get("/threads", params={"agent": agent})).json()
    total: int = page["total"]
    return total


async def test_approved_runs_the_function_once_with_the_edited_arguments(h: Harness) -> None:
    gl = Greenlight(h.url, TOKEN, agent="deployer")
    ran: list[tuple[str, int]] = []

    @gl.require_approval(policy=BOB, summary=lambda a: f"Release {a['version']}")
    def deploy(version: str, replicas: int = 3) -> str:
        """Deploy a version of the api."""
        ran.append((version, replicas))
        return f"deployed {version}"

    calling = asyncio.create_task(asyncio.to_thread(deploy, "1.5.0"))
    asked = await open_request(h)
    assert (asked["tool"], asked["args"]) == ("deploy", {"version": "1.5.0", "replicas": 3})
    assert not ran and not calling.done()
    shown = (await h.api.get(f"/approvals/{asked['id']}")).json()
    assert shown["summary"] == "Release 1.5.0"

    await decide(h, asked["id"], "approve", edited_args={"version": "1.5.1", "replicas": 2})
    assert await asyncio.wait_for(calling, 10) == "deployed 1.5.1"
    assert ran == [("1.5.1", 2)]
    assert await threads_of(h, "deployer") == 1

    # The same call again is a new request, never the first one's approval reused.
    again = asyncio.create_task(asyncio.to_thread(deploy, "1.5.0"))
    second = await open_request(h)
    assert second["id"] != asked["id"]
    await decide(h, second["id"], "approve")
    assert await asyncio.wait_for(again, 10) == "deployed 1.5.0"
    assert ran == [("1.5.1", 2), ("1.5.0", 3)]


async def test_a_process_started_again_with_another_policy_asks_anew(h: Harness) -> None:
    """The same call after a restart replays its approval, but not under a policy that was
    changed since: people are asked under the new one."""
    ran: list[str] = []

    def deploy(version: str) -> None:
        ran.append(version)

    first = Greenlight(h.url, TOKEN).require_approval(policy=BOB)(deploy)
    calling = asyncio.create_task(asyncio.to_thread(first, "1.5.0"))
    asked = await open_request(h)
    await decide(h, asked["id"], "approve")
    await asyncio.wait_for(calling, 10)

    # Started again (a new client: nothing of the first life), now needing two approvals.
    stricter = {"approvers": ["bob", "ann"], "min_approvals": 2}
    again = Greenlight(h.url, TOKEN).require_approval(policy=stricter)(deploy)
    calling = asyncio.create_task(asyncio.to_thread(again, "1.5.0"))
    second = await open_request(h)
    assert second["id"] != asked["id"] and second["min_approvals"] == 2
    assert ran == ["1.5.0"] and not calling.done()
    await decide(h, second["id"], "approve")
    await h.api.post(
        f"/requests/{second['id']}/decision", json={"decision": "approve", "by": "ann"}
    )
    await asyncio.wait_for(calling, 10)
    assert ran == ["1.5.0", "1.5.0"]


async def test_an_edit_outside_the_type_hints_is_refused_by_the_server(h: Harness) -> None:
    gl = Greenlight(h.url, TOKEN)

    @gl.require_approval(policy=BOB, timeout=0.5)
    def move(target: Target, dry_run: bool = False) -> Target:
        return target

    calling = asyncio.create_task(asyncio.to_thread(move, Target(region="eu", zones=["a"])))
    asked = await open_request(h)
    r = await h.api.post(
        f"/requests/{asked['id']}/decision",
        json={"decision": "approve", "by": "bob", "edited_args": {"target": {"region": 1}}},
    )
    assert r.status_code == 422, r.text
    with pytest.raises(StillPending):
        await asyncio.wait_for(calling, 10)

    edit = {"target": {"region": "us", "zones": ["b", "c"]}, "dry_run": True}
    await decide(h, asked["id"], "approve", edited_args=edit)
    # The wait cut short gave its slot back: calling again waits on the same request.
    moved = await asyncio.to_thread(move, Target(region="eu", zones=["a"]))
    assert moved == Target(region="us", zones=["b", "c"])
    assert await threads_of(h, "external") == 1


async def test_rejected_raises_the_reason_and_the_function_never_runs(h: Harness) -> None:
    gl = Greenlight(h.url, TOKEN)
    ran: list[str] = []

    @gl.require_approval("drop_table", policy=BOB)
    def drop(name: str) -> None:
        ran.append(name)

    calling = asyncio.create_task(asyncio.to_thread(drop, "users"))
    asked = await open_request(h)
    assert asked["tool"] == "drop_table"
    await decide(h, asked["id"], "reject", reason="not in prod, ever")
    with pytest.raises(Rejected) as caught:
        await asyncio.wait_for(calling, 10)
    assert caught.value.reason == "not in prod, ever"
    assert caught.value.by == ["api:bob"] and caught.value.request_id == asked["id"]
    assert ran == []


async def test_expiry_raises_expired(h: Harness) -> None:
    assert isinstance(h.clock, ManualClock)
    gl = AsyncGreenlight(h.url, TOKEN)
    ran: list[str] = []

    @gl.require_approval(policy={"approvers": ["bob"], "expires_in": 60})
    async def restart(service: str) -> None:
        ran.append(service)

    calling = asyncio.create_task(restart("api"))
    await open_request(h)
    h.clock.advance(61)
    await h.drain()
    with pytest.raises(Expired) as caught:
        await asyncio.wait_for(calling, 10)
    assert caught.value.reason == "expired" and ran == []


async def test_the_async_decorator_runs_the_coroutine_with_the_edit(h: Harness) -> None:
    os.environ["GREENLIGHT_URL"], os.environ["GREENLIGHT_TOKEN"] = h.url, TOKEN
    ran: list[dict[str, Any]] = []

    @require_approval(policy=BOB, exclude=("ctx",))
    async def refund(ctx: Context, order: str, *, amount: float, notify: bool = True) -> str:
        ran.append({"ctx": ctx, "order": order, "amount": amount, "notify": notify})
        return order

    try:
        ctx = Context()
        with run("ticket-9"):
            calling = asyncio.create_task(refund(ctx, "o-1", amount=12.5))
            asked = await open_request(h)
        assert asked["args"] == {"order": "o-1", "amount": 12.5, "notify": True}
        edit = {"order": "o-1", "amount": 10, "notify": False}
        await decide(h, asked["id"], "approve", edited_args=edit)
        assert await asyncio.wait_for(calling, 10) == "o-1"
        assert ran == [{"ctx": ctx, "order": "o-1", "amount": 10.0, "notify": False}]
    finally:
        del os.environ["GREENLIGHT_URL"], os.environ["GREENLIGHT_TOKEN"]


async def test_ask_human_returns_the_answer_typed_by_its_schema(h: Harness) -> None:
    gl = Greenlight(h.url, TOKEN)

    asking = asyncio.create_task(asyncio.to_thread(gl.ask_human, "Which plan?", answer_schema=Plan))
    asked = await open_request(h)
    r = await h.api.post(
        f"/requests/{asked['id']}/answer",
        json={"text": '{"replicas": 2, "regions": ["eu"]}', "by": "ann"},
    )
    assert r.status_code == 200, r.text
    assert await asyncio.wait_for(asking, 10) == Plan(replicas=2, regions=["eu"])

    agl = AsyncGreenlight(h.url, TOKEN)
    picking = asyncio.create_task(agl.ask_human("Which region?", choices=["eu", "us"]))
    asked = await open_request(h)
    assert asked["choices"] == ["eu", "us"]
    r = await h.api.post(f"/requests/{asked['id']}/answer", json={"text": "US", "by": "ann"})
    assert r.status_code == 200, r.text
    assert await asyncio.wait_for(picking, 10) == "us"

    lapsing = asyncio.create_task(agl.ask_human("Anyone?", yes_no=True, expires_in=30))
    await open_request(h)
    assert isinstance(h.clock, ManualClock)
    h.clock.advance(31)
    await h.drain()
    with pytest.raises(Expired):
        await asyncio.wait_for(lapsing, 10)


async def test_a_process_killed_while_waiting_and_started_again_waits_on_the_same_request(
    h: Harness, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "GREENLIGHT_URL": h.url, "GREENLIGHT_TOKEN": TOKEN}
    args = [sys.executable, "-m", "tests.greenlight.agent", str(runs), "1.5.0"]

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
        )

    async def logged(agent: asyncio.subprocess.Process, text: str) -> str:
        """The agent's next httpx log line containing ``text`` (written once answered)."""
        assert agent.stderr is not None
        while True:
            line = (await asyncio.wait_for(agent.stderr.readline(), 20)).decode()
            assert line, "the agent exited"
            if text in line:
                return line

    doomed = await start()
    assert "201 Created" in await logged(doomed, "POST")
    asked = await open_request(h)
    doomed.send_signal(signal.SIGKILL)
    assert await doomed.wait() == -signal.SIGKILL

    again = await start()
    assert "200 OK" in await logged(again, "POST")  # the request the first process made
    assert await threads_of(h, "external") == 1
    assert (await open_request(h))["id"] == asked["id"]
    assert not runs.exists()

    await decide(h, asked["id"], "approve")
    assert await asyncio.wait_for(again.wait(), 20) == 0
    assert runs.read_text() == "1.5.0 3\n"
    thread = await h.thread(asked["thread_id"])
    assert [r.id for r in thread.requests.values()] == [asked["id"]]


async def test_a_response_lost_after_the_server_asked_is_retried_into_the_same_request(
    h: Harness,
) -> None:
    """No idempotency_key given: the retry of a POST whose answer was lost (after the
    server made the request) must find that request, not ask people a second time."""
    async with LossyProxy(h.url, b"POST /approvals ") as proxy:
        gl = AsyncGreenlight(proxy.url, TOKEN, agent="lossy")
        asking = asyncio.create_task(
            gl.request_approval("deploy", {"version": "1.5.0"}, summary="Release", policy=BOB)
        )

        async def retried() -> bool:
            return proxy.matched == 2  # the first try, whose answer was lost, and the retry

        await eventually(retried)
        asked = await open_request(h)
        await decide(h, asked["id"], "approve")
        approved = await asyncio.wait_for(asking, 10)
    assert proxy.lost == 1
    assert approved.request_id == asked["id"]
    assert await threads_of(h, "lossy") == 1


@contextlib.asynccontextmanager
async def scripted(
    *answers: tuple[str, dict[str, str], bytes],
) -> AsyncIterator[tuple[str, list[tuple[str, float]]]]:
    """A local HTTP server that gives ``answers`` in turn (the last one from then on), and
    records each request it was sent (its line and when it came)."""
    seen: list[tuple[str, float]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append((head.split(b"\r\n")[0].decode(), time.monotonic()))
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        status, headers, body = answers[min(len(seen), len(answers)) - 1]
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api", seen


@contextlib.asynccontextmanager
async def answering(status: str, headers: dict[str, str], body: bytes) -> AsyncIterator[str]:
    """A local HTTP server that answers every request the same way: a server that is not
    Greenlight's (a redirect, a proxy's page, another service at a wrong url)."""
    async with scripted((status, headers, body)) as (url, _seen):
        yield url


@pytest.mark.parametrize(
    ("status", "headers", "body", "said"),
    [
        ("302 Found", {"Location": "https://sso.example.com/login"}, b"", "sso.example.com"),
        ("200 OK", {"Content-Type": "text/html"}, b"<html>Sign in</html>", "text/html"),
        ("200 OK", {"Content-Type": "application/json"}, b'{"ok": true}', "not a Greenlight"),
        ("201 Created", {"Content-Type": "application/json"}, b"[]", "not a Greenlight"),
    ],
)
async def test_an_answer_that_is_not_a_request_is_a_request_error_naming_the_url(
    status: str, headers: dict[str, str], body: bytes, said: str
) -> None:
    """A redirect, or a 2xx that is not a request, is the documented RequestError naming
    the url and the status, never a JSONDecodeError or a KeyError."""
    async with answering(status, headers, body) as url:
        with pytest.raises(RequestError) as caught:
            await AsyncGreenlight(url, TOKEN).request_approval("deploy", {}, summary="Release")
        with pytest.raises(RequestError) as asked:
            await asyncio.to_thread(Greenlight(url, TOKEN).ask_human, "Which region?")
    code = int(status[:3])
    assert caught.value.status == asked.value.status == code
    assert f"POST {url}/approvals" in str(caught.value) and said in str(caught.value)
    assert f"POST {url}/questions" in str(asked.value) and str(code) in str(asked.value)


async def test_still_pending_reports_the_calls_timeout_over_the_clients(h: Harness) -> None:
    gl = AsyncGreenlight(h.url, TOKEN, timeout=3600)
    with pytest.raises(StillPending) as caught:
        await gl.ask_human("Which region?", choices=["eu", "us"], timeout=0.5)
    asked = await open_request(h)
    assert str(caught.value) == f"{asked['id']} is still open after 0.5 s"


async def test_an_outage_while_waiting_names_the_request_to_wait_on_again(h: Harness) -> None:
    """No idempotency_key given: the server unreachable for longer than the retries while
    people decide, the error names the request and the key it was made under, and asking
    again under that key gets the decision, without asking people a second time."""
    ask = {"summary": "Release", "policy": BOB}
    async with OutageProxy(h.url, b"GET /approvals/") as proxy:
        gl = AsyncGreenlight(proxy.url, TOKEN, agent="cut-off", retries=1)
        with pytest.raises(RequestError) as caught:
            await gl.request_approval("deploy", {"version": "1.5.0"}, **ask)
        assert proxy.refused == 2  # the wait, and its one retry
        asked = await open_request(h)
        lost = caught.value
        assert lost.status is None and lost.request_id == asked["id"]
        assert lost.idempotency_key and lost.idempotency_key.startswith("gl-approval-")
        assert f"request {asked['id']} " in str(lost)

        await decide(h, asked["id"], "approve")  # decided while the agent was cut off
        proxy.restore()
        key = lost.idempotency_key
        approved = await gl.request_approval(
            "deploy", {"version": "1.5.0"}, **ask, idempotency_key=key
        )
    assert approved.request_id == asked["id"]
    assert await threads_of(h, "cut-off") == 1


async def test_the_same_call_after_an_outage_while_waiting_waits_on_the_same_request(
    h: Harness,
) -> None:
    """A decorated call, or a question, cut off while waiting is made again in the same
    process: it gives back its slot, so it asks under the same key and rejoins the request."""
    ran: list[str] = []
    async with OutageProxy(h.url, b"GET /approvals/") as proxy:
        gl = AsyncGreenlight(proxy.url, TOKEN, agent="cut-off", retries=0)

        @gl.require_approval(policy=BOB)
        async def deploy(version: str) -> None:
            ran.append(version)

        with pytest.raises(RequestError) as caught:
            await deploy("1.5.0")
        asked = await open_request(h)
        assert caught.value.request_id == asked["id"] and ran == []
        proxy.restore()
        again = asyncio.create_task(deploy("1.5.0"))
        await decide(h, asked["id"], "approve")
        await asyncio.wait_for(again, 10)
    assert ran == ["1.5.0"] and await threads_of(h, "cut-off") == 1

    async with OutageProxy(h.url, b"GET /questions/") as proxy:
        gl = AsyncGreenlight(proxy.url, TOKEN, agent="cut-off", retries=0)
        with pytest.raises(RequestError) as caught:
            await gl.ask_human("Which region?", choices=["eu", "us"])
        asked = await open_request(h)
        assert caught.value.request_id == asked["id"] and asked["id"] in str(caught.value)
        r = await h.api.post(f"/requests/{asked['id']}/answer", json={"text": "eu", "by": "ann"})
        assert r.status_code == 200, r.text
        proxy.restore()
        assert await gl.ask_human("Which region?", choices=["eu", "us"]) == "eu"
    assert await threads_of(h, "cut-off") == 2


async def test_still_pending_names_the_key_to_wait_on_again(h: Harness) -> None:
    """No idempotency_key given: the random one is on StillPending, and asking again under
    it waits on the same request instead of asking people a second time."""
    gl = AsyncGreenlight(h.url, TOKEN, agent="impatient")
    ask = {"summary": "Release", "policy": BOB}
    with pytest.raises(StillPending) as caught:
        await gl.request_approval("deploy", {"version": "1.5.0"}, **ask, timeout=0)
    asked = await open_request(h)
    assert caught.value.request_id == asked["id"] and caught.value.idempotency_key
    again = asyncio.create_task(
        gl.request_approval(
            "deploy", {"version": "1.5.0"}, **ask, idempotency_key=caught.value.idempotency_key
        )
    )
    await decide(h, asked["id"], "approve")
    assert (await asyncio.wait_for(again, 10)).request_id == asked["id"]
    assert await threads_of(h, "impatient") == 1


async def test_a_server_that_kept_failing_is_a_request_error_with_its_status() -> None:
    """5xx retried until the retries ran out: the error has the last status and what the
    server said, not the None of a server that could not be reached."""
    failing = ("503 Service Unavailable", {"Content-Type": "application/json"})
    async with answering(*failing, b'{"error": "unavailable", "detail": "failing over"}') as url:
        with pytest.raises(RequestError) as caught:
            await AsyncGreenlight(url, TOKEN, retries=0).ask_human("Which region?")
    assert caught.value.status == 503 and "failing over" in str(caught.value)


JSON = {"Content-Type": "application/json"}
UNAVAILABLE = b'{"error": "unavailable", "detail": "Redis is unavailable"}'


async def test_a_503_with_retry_after_is_retried_after_the_seconds_it_says() -> None:
    """The server's Retry-After (2 s, while Redis restarts), not the client's own first
    pause (0.5 s), sets when the client asks again; for both clients."""
    answered = b'{"id": "q_1", "status": "answered", "value": "eu"}'
    for sync in (False, True):
        failing = ("503 Service Unavailable", {**JSON, "Retry-After": "2"}, UNAVAILABLE)
        async with scripted(failing, ("200 OK", JSON, answered)) as (url, seen):
            if sync:
                got = await asyncio.to_thread(Greenlight(url, TOKEN).ask_human, "Which region?")
            else:
                got = await AsyncGreenlight(url, TOKEN).ask_human("Which region?")
        assert got == "eu"
        assert [line for line, _ in seen] == ["POST /api/questions HTTP/1.1"] * 2
        assert seen[1][1] - seen[0][1] >= 2.0


async def test_a_retry_after_past_the_calls_timeout_ends_the_wait_at_the_timeout() -> None:
    """Waiting for people with a timeout of 1 s, the server says to come back in 30 s: the
    call ends near its timeout with the outage's error naming the request, not 30 s on."""
    opened = b'{"id": "q_1", "status": "open"}'
    failing = ("503 Service Unavailable", {**JSON, "Retry-After": "30"}, UNAVAILABLE)
    async with scripted(("200 OK", JSON, opened), failing) as (url, seen):
        began = time.monotonic()
        with pytest.raises(RequestError) as caught:
            await asyncio.wait_for(
                AsyncGreenlight(url, TOKEN).ask_human("Which region?", timeout=1), 20
            )
    assert time.monotonic() - began < 5
    assert caught.value.status == 503 and caught.value.request_id == "q_1"
    assert len(seen) <= 3
