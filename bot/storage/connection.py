"""Connecting to Redis: one server or a Redis Cluster, told apart by asking the server.

``REDIS_URL`` names any node. The server says whether it runs in cluster mode
(``INFO cluster``); ``?cluster=yes`` or ``?cluster=no`` in the URL says it
instead, for servers that refuse ``INFO``. Either way the same keys and
scripts are used: every script touches one slot (see ``bot.storage.keys``).
"""

from __future__ import annotations

from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import DataError, RedisError

Client = Redis | RedisCluster

StorageFailure = RedisError
"""What a Redis call raises when Redis is down, restarting or refusing: the engine
catches this name, so it needs no Redis import of its own."""

# redis-py's default socket_timeout (5 s since 6.0) runs every command under
# asyncio.wait_for, a task per command: about 15% of a worker's CPU on our cycle
# (bench/cycles.py). Dead peers are found by TCP keepalive instead; blocking
# reads set their own timeout (BLOCK).
#
# A pooled connection that Redis closed (a restart, a failover) is retried on
# a fresh one, a few times with a short backoff; from_url alone retries nothing.
_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
    # Resolved once: redis-py otherwise reads its version from the package metadata for
    # every new connection (about 1 ms each, 100 of them when 100 requests arrive at once).
    "driver_info": DriverInfo(),
}


def is_cluster(client: Client) -> TypeGuard[RedisCluster]:
    return isinstance(client, RedisCluster)


async def connect(url: str) -> Client:
    """A client for ``url`` with ``decode_responses=True``: a cluster client when it is one."""
    plain, said = _cluster_param(url)
    if said is None:
        probe: Redis = Redis.from_url(plain)
        try:
            info: dict[str, Any] = await probe.info("cluster")
        finally:
            await probe.aclose()
        said = bool(info.get("cluster_enabled"))
    if said:
        cluster: RedisCluster = RedisCluster.from_url(plain, **_OPTIONS)
        await cluster.initialize()  # learn the slot map now: a bad cluster fails at start
        return cluster
    options = _OPTIONS
    if urlsplit(plain).scheme == "unix":  # no TCP: no keepalive (the connection refuses it)
        options = {k: v for k, v in _OPTIONS.items() if k != "socket_keepalive"}
    single: Redis = Redis.from_url(plain, **options)
    pool = single.connection_pool
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    return single


def _cluster_param(url: str) -> tuple[str, bool | None]:
    """The URL without ``cluster=``, and what that parameter said (None: not given)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    said = [v.lower() for k, v in query if k == "cluster"]
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    plain = urlunsplit(parts._replace(query=rest))
    if not said:
        return plain, None
    return plain, said[-1] in ("1", "yes", "true", "on")


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis (C): redis-py's asyncio client packs in Python,
    about 10% of a worker's CPU (bench/cycles.py). The cluster client fixes its
    connection class, so it packs in Python."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # 'SCRIPT LOAD' is two words on the wire
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


class _Tcp(_HiredisPacking, Connection):
    pass


class _Tls(_HiredisPacking, SSLConnection):
    pass


class _Unix(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Tcp,
    SSLConnection: _Tls,
    UnixDomainSocketConnection: _Unix,
}
