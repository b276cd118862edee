"""The ``greenlight`` client commands against the real app on a real port, with a worker.

The CLI is synchronous; it runs in a thread (``asyncio.to_thread``) so the
harness keeps serving on the test's event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from bot.cli.commands import app
from bot.storage.embedded import EmbeddedRedis
from tests.harness import TOKEN, Harness, eventually
from tests.harness import test_settings as settings_with

DEPLOY = {"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"}


@pytest.fixture
async def h(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[Harness]:
    # ann may approve deploys, but never her own.
    groups = {"deployers": ["ann", "bob"], "finance": ["bob"]}
    settings = settings_with(approver_groups=groups)
    async with Harness(redis_server.url, settings=settings, background_worker=True) as harness:
        yield harness


async def cli(h: Harness, *args: str, stdin: str = "", **env: str) -> Result:
    """Run ``greenlight <args>`` against the harness, as a user's shell would."""
    environ = {"GREENLIGHT_URL": h.url, "API_TOKEN": TOKEN, "COLUMNS": "200", **env}
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), input=stdin, env={k: v or None for k, v in environ.items()}
    )


async def open_request(h: Harness) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        items = (await h.api.get("/requests")).json()["items"]
        return items[0] if items else None

    return await h.wait_for(probe)


async def thread_status(h: Harness, thread_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        thread: dict[str, Any] = (await h.api.get(f"/threads/{thread_id}")).json()
        return thread if thread["status"] == status else None

    return await h.wait_for(probe)


async def test_requests_json_lists_the_open_request(h: Harness) -> None:
    tid = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
    req = await open_request(h)

    got = await cli(h, "requests", "--json")
    assert got.exit_code == 0, got.output
    (item,) = json.loads(got.stdout)["items"]
    assert (item["id"], item["thread_id"], item["tool"]) == (req["id"], tid, "deploy")

    table = await cli(h, "requests")
    assert req["id"] in table.stdout and "deploy(service='api'" in table.stdout


async def test_requests_say_in_full_what_is_asked_on_an_80_column_terminal(h: Harness) -> None:
    await h.api.post("/threads", json=DEPLOY)
    req = await open_request(h)

    table = await cli(h, "requests", COLUMNS="80")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # The id is whole on one line (to copy), and the call is whole, wrapped between its
    # arguments, with who asked and when it expires under the id.
    assert any(req["id"] in line for line in lines)
    text = " ".join(" ".join(line.strip("│ ").split()) for line in lines)
    assert "deploy(service='api', version='1.5.0'," in text
    assert "environment='production')" in text
    assert "approval · expires in 59m" in text or "approval · expires in 1h" in text
    assert "asked by ann" in text


async def test_approve_resumes_and_a_second_decision_fails_clearly(h: Harness) -> None:
    tid = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
    req = await open_request(h)

    got = await cli(h, "approve", req["id"], "--as", "bob", "--reason", "LGTM")
    assert got.exit_code == 0, got.output
    assert f"{req['id']}: approved by bob" in got.stdout
    thread = await thread_status(h, tid, "done")
    assert "1.5.0 on production" in thread["last_reply"]

    again = await cli(h, "reject", req["id"], "--as", "ann", "--reason", "too late")
    assert again.exit_code == 1
    assert "already approved by bob" in again.stderr and "HTTP 409" in again.stderr
    # Someone the policy does not name is told that, as while it was open: not who decided.
    stranger = await cli(h, "reject", req["id"], "--as", "carol", "--reason", "too late")
    assert stranger.exit_code == 1 and "HTTP 403" in stranger.stderr
    assert "carol may not decide" in stranger.stderr and "already" not in stranger.stderr

    shown = await cli(h, "show", tid)
    assert shown.exit_code == 0 and "approved by bob: LGTM" in shown.stdout
    listed = await cli(h, "threads", "--status", "done", "--json")
    assert [t["id"] for t in json.loads(listed.stdout)["items"]] == [tid]


async def test_approve_says_how_many_more_approvals_an_n_of_m_request_needs(h: Harness) -> None:
    policy = {"approvers": ["group:deployers"], "min_approvals": 2}
    asked = {"agent": "release-bot", "requester": "release-bot", "tool": "deploy"}
    asked |= {"arguments": {"version": "1.5.0"}, "summary": "Release 1.5.0", "policy": policy}
    req = (await h.api.post("/approvals", json=asked)).json()

    first = await cli(h, "approve", req["id"], "--as", "ann")
    assert first.exit_code == 0, first.output
    assert f"{req['id']}: 1 of 2 approvals (ann), still open" in first.stdout
    second = await cli(h, "approve", req["id"], "--as", "bob")
    assert f"{req['id']}: approved by ann, bob" in second.stdout


async def test_answer_command_and_a_wrong_choice(h: Harness) -> None:
    tid = (await h.api.post("/threads", json={**DEPLOY, "text": "deploy web to staging"})).json()
    question = await open_request(h)
    assert question["kind"] == "question"

    got = await cli(h, "answer", question["id"], "2.1.0", "--as", "ann", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["status"] == "answered"
    thread = await thread_status(h, tid["id"], "done")  # staging needs no approval
    assert "2.1.0 on staging" in thread["last_reply"]


async def test_token_comes_from_the_data_dir_and_errors_say_what_to_do(
    h: Harness, tmp_path: Path
) -> None:
    (tmp_path / "api_token").write_text(TOKEN + "\n")
    got = await cli(h, "threads", API_TOKEN="", DATA_DIR=str(tmp_path))
    assert got.exit_code == 0 and "0 of 0 threads" in got.stdout

    (tmp_path / "api_token").write_text("stale")
    got = await cli(h, "threads", API_TOKEN="", DATA_DIR=str(tmp_path))
    assert got.exit_code == 1
    assert "bearer token" in got.stderr and "--token" in got.stderr

    gone = await cli(h, "requests", "--url", "http://127.0.0.1:9")
    assert gone.exit_code == 1 and "cannot reach Greenlight" in gone.stderr
    missing = await cli(h, "show", "th_" + "0" * 20)
    assert missing.exit_code == 1 and "no thread" in missing.stderr


async def test_a_malformed_url_is_an_error_message_not_a_traceback(h: Harness) -> None:
    got = await cli(h, "requests", "--url", "http://[::1")
    assert got.exit_code == 1 and isinstance(got.exception, SystemExit), got.output
    assert "error:" in got.stderr and "http://[::1" in got.stderr


async def test_an_id_or_name_with_url_characters_is_one_path_segment(h: Harness) -> None:
    # Unescaped, these reached other endpoints (GET /tokens, GET /, DELETE /) or dropped
    # what followed "?" or "#"; each names no thread, request or token: the API says so.
    # (The server decodes an escaped "/" before routing: "../tokens" is a plain 404.)
    for given in ("../tokens", "..", ".", "th_a?b=1", "th_a#b"):
        got = await cli(h, "show", given)
        assert got.exit_code == 1 and isinstance(got.exception, SystemExit), (given, got.output)
        assert "HTTP 404" in got.stderr, (given, got.stderr)
        if "/" not in given:
            assert f"no thread {given!r}" in got.stderr, (given, got.stderr)
    for given in ("../tokens", "rq_a?b", ".."):
        got = await cli(h, "approve", given, "--as", "bob")
        assert got.exit_code == 1 and isinstance(got.exception, SystemExit), (given, got.output)
        assert "HTTP 404" in got.stderr, (given, got.stderr)
    got = await cli(h, "tokens", "revoke", "..")
    assert got.exit_code == 1 and "HTTP 422" in got.stderr, got.output  # not a token's name


async def test_chat_answers_a_question_then_approves_with_a_key(h: Harness) -> None:
    keys = "deploy api to production\n1.5.0\na"
    got = await cli(h, "chat", "deploy", "--user", "ann", "--as", "bob", stdin=keys)
    assert got.exit_code == 0, got.output
    out = got.stdout
    assert "question: Which version of api should I deploy?" in out
    assert "approval: deploy(service='api', version='1.5.0', environment='production')" in out
    assert "agent: Done: api" in out and "-> 1.5.0 on production" in out
    assert out.rstrip().endswith("bye")

    (thread,) = (await h.api.get("/threads")).json()["items"]
    events = (await h.api.get(f"/threads/{thread['id']}")).json()["events"]
    answer = next(e for e in events if e["type"] == "human_answer")
    decision = next(e for e in events if e["type"] == "approval_decision")
    assert (answer["by"]["id"], answer["text"]) == ("ann", "1.5.0")
    assert (decision["by"]["id"], decision["decision"]) == ("bob", "approve")


async def test_chat_reject_asks_for_a_reason_the_agent_hears(h: Harness) -> None:
    keys = "deploy api 1.5.0 to production\nrchange freeze\n"
    got = await cli(h, "chat", "deploy", "--user", "ann", "--as", "bob", stdin=keys)
    assert got.exit_code == 0, got.output
    assert "agent: Not done. Rejected by bob: change freeze" in got.stdout


async def test_chat_refuses_self_approval_and_says_who_can(h: Harness) -> None:
    keys = "deploy api 1.5.0 to production\na"  # then the input ends: the user leaves
    got = await cli(h, "chat", "deploy", "--user", "ann", stdin=keys)
    assert got.exit_code == 0, got.output
    req = await open_request(h)
    assert "ann asked for this and may not approve it themselves" in got.stdout
    assert f"greenlight approve {req['id']} --as NAME" in got.stdout
    assert req["status"] == "open" and req["approvals"] == []


def _chat_process(h: Harness, **io: Any) -> Any:
    """``greenlight chat deploy`` as its own process, with no controlling terminal."""
    env = {**os.environ, "GREENLIGHT_URL": h.url, "API_TOKEN": TOKEN, "COLUMNS": "200"}
    args = ("-m", "bot", "chat", "deploy", "--user", "ann", "--as", "bob")
    return asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, start_new_session=True, **io
    )


async def test_chat_from_a_pipe_takes_each_key_from_a_line(h: Harness) -> None:
    proc = await _chat_process(
        h, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(
        proc.communicate(b"deploy api 1.5.0 to production\na\n"), timeout=60
    )
    assert proc.returncode == 0, err.decode()
    assert "agent: Done: api" in out.decode() and out.decode().rstrip().endswith("bye")
    (thread,) = (await h.api.get("/threads")).json()["items"]
    events = (await h.api.get(f"/threads/{thread['id']}")).json()["events"]
    decision = next(e for e in events if e["type"] == "approval_decision")
    assert (decision["by"]["id"], decision["decision"]) == ("bob", "approve")


async def test_chat_in_a_terminal_approves_with_one_key_press(h: Harness) -> None:
    main, side = pty.openpty()
    proc = await _chat_process(h, stdin=side, stdout=side, stderr=side)
    os.close(side)
    seen, looked = bytearray(), 0  # all the output, and where the next look starts

    async def until(text: str) -> None:
        nonlocal looked
        try:
            async with asyncio.timeout(20):
                while (at := seen.find(text.encode(), looked)) < 0:
                    seen.extend(await asyncio.to_thread(os.read, main, 4096))
        except TimeoutError:
            raise AssertionError(f"waited for {text!r}; seen {bytes(seen)!r}") from None
        looked = at + len(text)

    try:
        await until("you>")
        os.write(main, b"deploy api 1.5.0 to production\r")
        await until("[w]ait for someone else?")

        # A key press, no Enter, once the terminal is in raw mode: going raw drops what
        # was typed before (termios' TCSAFLUSH), as it would drop a key typed ahead.
        async def raw() -> bool:
            return not termios.tcgetattr(main)[3] & termios.ICANON

        await eventually(raw, timeout=20)
        os.write(main, b"a")
        await until("Done: api ")  # (the terminal has colours between the words)
        await until("you>")
        os.write(main, b"\x04")  # Ctrl-D leaves
        await until("bye")
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(main)
    (thread,) = (await h.api.get("/threads")).json()["items"]
    assert (await h.api.get(f"/threads/{thread['id']}")).json()["status"] == "done"


async def test_someone_with_no_user_name_is_asked_for_one(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.api.post("/threads", json=DEPLOY)
    req = await open_request(h)
    # As in a container run under a uid with no passwd entry and no USER set.
    monkeypatch.setattr(os, "getuid", lambda: 2**31 - 7)
    unset = dict.fromkeys(("LOGNAME", "USER", "LNAME", "USERNAME", "GREENLIGHT_USER"), "")

    got = await cli(h, "approve", req["id"], **unset)
    assert got.exit_code == 2, got.output
    assert "cannot tell who you are: pass --as NAME" in got.stderr
    assert (await h.api.get(f"/requests/{req['id']}")).json()["status"] == "open"


async def test_pause_resume_cancel(h: Harness) -> None:
    tid = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
    req = await open_request(h)

    paused = await cli(h, "pause", tid, "--as", "ann", "--reason", "freeze")
    assert paused.exit_code == 0 and f"{tid}: paused" in paused.stdout
    await h.api.post(f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"})
    await h.drain()
    assert (await h.api.get(f"/threads/{tid}")).json()["status"] == "paused"  # nothing ran

    resumed = await cli(h, "resume", tid, "--as", "ann")
    assert resumed.exit_code == 0, resumed.output
    await thread_status(h, tid, "done")

    again = await cli(h, "resume", tid, "--as", "ann")
    assert again.exit_code == 1 and "not paused" in again.stderr
    cancelled = await cli(h, "cancel", tid, "--as", "ann", "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"

    # The history says each of these in words, in order.
    shown = (await cli(h, "show", tid)).stdout
    said = ["paused by ann: freeze", "approved by bob", "resumed by ann", "▶ tool started"]
    said += ["← ok: api ", "cancelled by ann"]
    at = [shown.find(line) for line in said]
    assert -1 not in at and at == sorted(at), shown


async def test_tokens_create_list_revoke_round_trip(h: Harness) -> None:
    made = await cli(h, "tokens", "create", "bob-laptop", "--scope", "approver", "--as", "bob")
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("glt_") and "shown once" in made.output

    listed = await cli(h, "tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert "bob-laptop" in listed.output and "approver" in listed.output
    assert token not in listed.output
    as_json = json.loads((await cli(h, "tokens", "list", "--json")).output)
    assert [(t["name"], t["identity"]) for t in as_json["items"]] == [("bob-laptop", "bob")]

    # The approver token works from the CLI: it approves as bob without --as.
    thread = (await h.api.post("/threads", json=DEPLOY)).json()
    request = await open_request(h)
    approved = await cli(h, "approve", request["id"], "--json", API_TOKEN=token)
    assert approved.exit_code == 0, approved.output
    assert [a["id"] for a in json.loads(approved.output)["approvals"]] == ["bob"]
    assert thread["id"] == request["thread_id"]

    refused = await cli(h, "tokens", "list", API_TOKEN=token)
    assert refused.exit_code == 1 and "needs admin" in refused.output

    revoked = await cli(h, "tokens", "revoke", "bob-laptop")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    gone = await cli(h, "requests", API_TOKEN=token)
    assert gone.exit_code == 1 and "HTTP 401" in gone.output
    again = await cli(h, "tokens", "revoke", "bob-laptop")
    assert again.exit_code == 1 and "no token named" in again.output
