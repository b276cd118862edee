"""Which request a call asked again joins: a caller's key → the thread last made for it.

``POST /approvals`` with an ``open_key`` joins the request still open for the same key
instead of asking again (``bot.engine.external.join_request``). What a key leads to is
kept here, one string per key, under the SHA-256 of the key (``keys.open_key``); it only
says where to look: whether that request is still open is read from its thread.
"""

from __future__ import annotations

import hashlib

from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.script import Script

GRACE = 86_400.0
"""Seconds a key outlives the expiry of its request: a retry after it still finds it."""
UNBOUNDED = 30 * 86_400.0
"""Seconds a key is kept for a request that never expires, from its last use."""

# Compare-and-set: two callers that found the same thread closed (or none) agree on one
# new thread, whichever set it first.
_SWAP = Script(
    """
local held = redis.call('GET', K.key) or ''
if held ~= A.expected then return held end
redis.call('SET', K.key, A.new, 'PX', A.ttl_ms)
return A.new
""",
    keys=("key",),
    args=("expected", "new", "ttl_ms"),
)


class OpenKeys:
    """Keys → threads, each kept ``ttl`` seconds from its last set.

    Args:
        redis: a client with ``decode_responses=True``.
    """

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._swap = _SWAP.bind(redis)

    async def get(self, key: str) -> str | None:
        """The thread ``key`` leads to, if any."""
        found = await self.redis.get(keys.open_key(_digest(key)))
        return str(found) if found else None

    async def swap(self, key: str, expected: str | None, new: str, ttl: float) -> str | None:
        """Lead ``key`` to ``new`` for ``ttl`` seconds if it leads to ``expected`` (None:
        nowhere); ``expected == new`` keeps it longer.

        Returns:
            the thread ``key`` leads to now: ``new``, or what another caller set first.
        """
        args = {"expected": expected or "", "new": new, "ttl_ms": max(1000, int(ttl * 1000))}
        held = await self._swap(keys={"key": keys.open_key(_digest(key))}, args=args)
        return str(held) or None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
