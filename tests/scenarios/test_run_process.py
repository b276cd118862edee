"""``greenlight run`` as a real process: embedded Redis, SIGKILL, restart, the thread resumes.

What a newcomer does: start the bot on a fresh data folder, launch a thread, and
lose the process in the worst way. The suspended thread must still be there
when it starts again, and resume when approved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.storage.embedded import EmbeddedRedis, free_port, is_ours, stop_stale
from tests.harness import DEMO_GROUPS
from tests.scenarios.processes import wait_for

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
TOKEN = "t"
_FOREIGN = ("REDIS_", "ANTHROPIC_", "SLACK_", "SMTP_", "EMAIL_", "WEBHOOK_", "API_TOKEN", "PORT")


class Bot:
    """One ``python -m bot run`` child process, its log kept in a file."""

    def __init__(self, data_dir: Path, port: int, log: Path, *, within: Sequence[str] = ()) -> None:
        """``within``: a command that runs ``python -m bot run`` (``unshare``, ``nsenter``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        # If the kill lands mid-step, the dead worker's lease and queue entry are what
        # recover the thread: short values keep that to a second, not a minute.
        env |= {"DATA_DIR": str(data_dir), "PORT": str(port), "API_TOKEN": TOKEN,
                "LEASE_MS": "500", "CLAIM_IDLE_MS": "1500", "LOG_LEVEL": "INFO",
                "APPROVER_GROUPS": json.dumps(DEMO_GROUPS)}  # fmt: skip
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*within, sys.executable, "-m", "bot", "run"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )

    def wait_for(self, probe: Callable[[], T | None], what: str, timeout: float = 30) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the log otherwise."""
        return wait_for(probe, what, [self.process], self.tail, timeout)

    def tail(self) -> str:
        """The end of the log, without the access lines of our own polling."""
        lines = [x for x in self.log.read_text().splitlines() if "uvicorn.access" not in x]
        return "\n".join(lines[-40:])

    def ready(self) -> None:
        self.wait_for(lambda: self.http.get("/readyz").status_code == 200, "/readyz")

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.http.close()
        return self.process.wait(timeout=15)


@pytest.fixture
def bots(tmp_path: Path) -> Iterator[list[Bot]]:
    started: list[Bot] = []
    yield started
    for bot in started:
        bot.stop()


def wait_gone(pid: int, timeout: float = 10) -> None:
    """Wait until ``pid`` exited (a zombie nobody reaped counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return
        except OSError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # do not leave it behind
    pytest.fail(f"process {pid} is still running after {timeout}s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PDEATHSIG")
def test_killed_bot_restarts_with_the_suspended_thread(tmp_path: Path, bots: list[Bot]) -> None:
    data, log = tmp_path / "data", tmp_path / "greenlight.log"
    port = free_port()
    first = Bot(data, port, log)
    bots.append(first)
    first.ready()

    r = first.http.post("/threads", json={"agent": "deploy", "user": "ann",
                                          "text": "deploy api 1.5.0 to production"})  # fmt: skip
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    req = first.wait_for(lambda: first.get("/requests")["items"], "the approval request")[0]
    assert req["thread_id"] == tid and req["tool"] == "deploy"

    redis_pid = int((data / "redis" / "redis.pid").read_text())
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The embedded Redis follows its parent (PR_SET_PDEATHSIG) and flushes its AOF.
    wait_gone(redis_pid)

    second = Bot(data, port, log)
    bots.append(second)
    second.ready()
    thread = second.get(f"/threads/{tid}")
    assert thread["status"] == "awaiting_approval"
    assert [r["id"] for r in thread["open_requests"]] == [req["id"]]

    r = second.http.post(f"/requests/{req['id']}/decision",
                         json={"decision": "approve", "by": "bob"})  # fmt: skip
    assert r.status_code == 200, r.text
    done = second.wait_for(
        lambda: (t := second.get(f"/threads/{tid}"))["status"] == "done" and t, "the deploy to run"
    )
    assert "-> 1.5.0 on production" in done["last_reply"]

    # Ctrl-C (SIGTERM here) stops it cleanly, Redis included.
    redis_pid = int((data / "redis" / "redis.pid").read_text())
    assert second.stop(signal.SIGTERM) == 0, second.tail()
    wait_gone(redis_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_a_second_bot_on_the_same_data_folder_is_refused_and_the_first_serves_on(
    tmp_path: Path, bots: list[Bot]
) -> None:
    data = tmp_path / "data"
    first = Bot(data, free_port(), tmp_path / "first.log")
    bots.append(first)
    first.ready()
    redis_pid = int((data / "redis" / "redis.pid").read_text())

    # Started again by mistake (`make run` in a second terminal): it must not take the
    # folder's Redis from under the first, nor run a second server on the same AOF.
    second = Bot(data, free_port(), tmp_path / "second.log")
    bots.append(second)
    assert second.process.wait(timeout=30) == 2, second.tail()
    said = second.tail()
    assert f"is in use by process {first.process.pid}" in said and "DATA_DIR" in said
    assert int((data / "redis" / "redis.pid").read_text()) == redis_pid

    first.ready()
    r = first.http.post("/threads", json={"agent": "deploy", "user": "ann",
                                          "text": "deploy api 1.4.2 to staging"})  # fmt: skip
    assert r.status_code == 201, r.text


def _namespaces_allowed() -> bool:
    """Whether this user may start a process in PID and mount namespaces of its own."""
    try:
        probe = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
        done = subprocess.run(probe, check=False, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _namespaces_allowed(),
    reason="needs PID namespaces (unshare, as root)",
)
def test_a_second_bot_beside_one_that_is_process_1_is_refused(
    tmp_path: Path, bots: list[Bot]
) -> None:
    """A container's first process is ``greenlight run``; a second is started with
    ``docker exec``. The server's parent is then process 1, as it is for an orphan that
    init adopted: the second must still tell that it is in use, and leave it serving."""
    data = tmp_path / "data"
    container = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    first = Bot(data, free_port(), tmp_path / "first.log", within=container)
    bots.append(first)
    first.ready()
    redis_pid = int((data / "redis" / "redis.pid").read_text())  # as process 1 sees it

    # ``docker exec``: the same PID namespace and /proc, entered through its process 1.
    init = Path(f"/proc/{first.process.pid}/task/{first.process.pid}/children").read_text()
    exec_ = ["nsenter", "--target", init.split()[0], "--pid", "--mount"]
    second = Bot(data, free_port(), tmp_path / "second.log", within=exec_)
    bots.append(second)
    assert second.process.wait(timeout=30) == 2, second.tail()
    assert "is in use by process 1 " in second.tail()
    assert int((data / "redis" / "redis.pid").read_text()) == redis_pid

    first.ready()
    r = first.http.post("/threads", json={"agent": "deploy", "user": "ann",
                                          "text": "deploy api 1.4.2 to staging"})  # fmt: skip
    assert r.status_code == 201, r.text


def test_a_pid_file_naming_another_folders_server_leaves_that_server_running(
    tmp_path: Path,
) -> None:
    """A pid file a crash left can name a pid another server has since: it is not stopped."""
    other = EmbeddedRedis(tmp_path / "other")
    other.start()
    try:
        left = tmp_path / "left"
        left.mkdir()
        (left / "redis.pid").write_text(f"{other.process.pid if other.process else 0}\n")
        stop_stale(left / "redis.pid", None)
        assert other.process is not None and other.process.poll() is None
        assert is_ours(other.port, other.process.pid)
    finally:
        other.stop()


_ORPHAN = """
import os, subprocess, sys, time
from pathlib import Path
from bot.storage.embedded import HOST, _alive, _parent, free_port, server_binary, stop_stale

# Run as process 1 of its own PID namespace. A starter writes itself down as the owner
# and dies without taking its server along (as if PR_SET_PDEATHSIG had failed): init, this
# process, adopts the server.
data = Path(sys.argv[1])
start = (
    "import os, subprocess, sys; from pathlib import Path; from bot.storage.embedded import own;"
    "own(Path(sys.argv[1]) / 'redis.pid'); subprocess.Popen(sys.argv[2:]); os._exit(0)"
)
server = [server_binary(), "--bind", HOST, "--port", str(free_port()), "--dir", str(data),
          "--pidfile", "redis.pid", "--logfile", "redis.log", "--save", "", "--appendonly", "no"]
subprocess.run([sys.executable, "-c", start, str(data), *server], check=True)
deadline = time.monotonic() + 10
while not (data / "redis.pid").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
pid = int((data / "redis.pid").read_text())
print("adopted by", _parent(pid), flush=True)
stop_stale(data / "redis.pid", None)
print("stopped" if not _alive(pid) else "still running", flush=True)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _namespaces_allowed(),
    reason="needs PID namespaces (unshare, as root)",
)
def test_a_server_whose_starter_died_is_stopped_though_init_adopted_it(tmp_path: Path) -> None:
    """The other side of the test above: init (process 1) adopted an orphan, and its
    owner, written down, was another process: the server is stale, and stopped."""
    data = tmp_path / "data"
    data.mkdir()
    container = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    done = subprocess.run(
        [*container, sys.executable, "-c", _ORPHAN, str(data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split("\n")[:2] == ["adopted by 1", "stopped"], done.stdout + done.stderr
