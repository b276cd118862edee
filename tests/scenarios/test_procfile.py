"""The Procfile's processes: ``greenlight web`` and ``greenlight worker`` against one Redis.

Two real child processes share a Redis server and nothing else: the web one
answers HTTP and never steps a thread, the worker one steps them. A deploy
goes from request to approval to done across both, then SIGTERM stops each
cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.settings import Settings
from bot.storage.embedded import EmbeddedRedis, free_port
from tests.harness import DEMO_GROUPS
from tests.scenarios.processes import wait_for

T = TypeVar("T")
TOKEN = "procfile-token"


class Processes:
    """The children started by a test, each logging to its own file."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, kind: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{kind}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", kind],
                cwd=self.tmp,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[kind] = process
        return process

    def logs(self) -> str:
        return "\n".join(
            f"--- {kind} (exit {p.poll()}):\n{(self.tmp / f'{kind}.log').read_text()[-3000:]}"
            for kind, p in self.running.items()
        )

    def wait_for(self, probe: Callable[[], T | None], what: str) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the logs otherwise."""
        return wait_for(probe, what, self.running.values(), self.logs)

    def kill_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def procs(tmp_path: Path, redis_url: str) -> Iterator[Processes]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= {"REDIS_URL": redis_url, "API_TOKEN": TOKEN, "PORT": str(free_port()),
            "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "INFO",
            "APPROVER_GROUPS": json.dumps(DEMO_GROUPS)}  # fmt: skip
    started = Processes(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()


def test_web_and_worker_processes_run_a_deploy_and_stop_on_sigterm(procs: Processes) -> None:
    web = procs.start("web")
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{procs.env['PORT']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )

    def get(path: str) -> Any:
        r = http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    with http:
        procs.wait_for(lambda: http.get("/healthz").status_code == 200, "the web process")
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503 and "no worker" in not_ready.json()["detail"]

        worker = procs.start("worker")
        procs.wait_for(lambda: http.get("/readyz").status_code == 200, "the worker's heartbeat")

        r = http.post("/threads", json={"agent": "deploy", "user": "ann",
                                        "text": "deploy api 1.5.0 to production"})  # fmt: skip
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        (req,) = procs.wait_for(lambda: get("/requests")["items"], "the approval request")
        assert (req["thread_id"], req["tool"]) == (tid, "deploy")

        r = http.post(f"/requests/{req['id']}/decision",
                      json={"decision": "approve", "by": "bob"})  # fmt: skip
        assert r.status_code == 200, r.text
        done = procs.wait_for(
            lambda: (t := get(f"/threads/{tid}"))["status"] == "done" and t, "the deploy to run"
        )
        assert "-> 1.5.0 on production" in done["last_reply"]

    for process in (web, worker):
        process.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=15) for p in (web, worker)]
    assert codes == [0, 0], procs.logs()
    assert "Traceback" not in procs.logs()


def test_the_web_process_logs_no_request_path(procs: Processes) -> None:
    # Paths can carry secrets: an email decision link's token is in its path.
    web = procs.start("web")
    with httpx.Client(base_url=f"http://127.0.0.1:{procs.env['PORT']}", timeout=5) as http:
        procs.wait_for(lambda: http.get("/healthz").status_code == 200, "the web process")
        http.get("/email/decide/secrettokensecrettoken?a=ann@example.com")
        http.get("/threads/th_0000000000000000beef", headers={"Authorization": "Bearer x"})
    web.send_signal(signal.SIGTERM)
    assert web.wait(timeout=15) == 0
    log = (procs.tmp / "web.log").read_text()
    assert "secrettoken" not in log and "th_0000000000000000beef" not in log, log
