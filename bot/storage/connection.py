"""Connecting to Redis: one server or a Redis Cluster, told apart by asking the server.

``REDIS_URL`` names any node. The server says whether it runs in cluster mode
(``INFO cluster``); ``?cluster=yes`` or ``?cluster=no`` in the URL says it
instead, for servers that refuse ``INFO``. Either way the same keys and
scripts are used: every script touches one slot (see ``bot.storage.keys``).
"""

from __future__ import annotations

from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

Client = Redis | RedisCluster


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
        cluster: RedisCluster = RedisCluster.from_url(plain, decode_responses=True)
        return cluster
    single: Redis = Redis.from_url(plain, decode_responses=True)
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
