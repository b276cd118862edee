"""Outbound deliveries to retry: per shard, a sorted set of jobs scored by due time.

A job names its thread, so it lives in that thread's shard. Claiming a due job
pushes it forward instead of removing it: a worker that dies mid-delivery
leaves the job to fire again; the claimant removes or reschedules it.
"""

from __future__ import annotations

import asyncio

from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.script import Script

_CLAIM = Script(
    """
local due = redis.call('ZRANGEBYSCORE', K.retries, '-inf', A.now, 'LIMIT', 0, A.limit)
for _, job in ipairs(due) do redis.call('ZADD', K.retries, A.now + A.hold, job) end
return due
""",
    keys=("retries",),
    args=("now", "hold", "limit"),
)


class Retries:
    """The durable retry schedule of outbound deliveries.

    Args:
        hold: seconds a claimed job waits before it may be claimed again.
    """

    def __init__(self, redis: Client, *, hold: float = 60.0) -> None:
        self.redis = redis
        self.hold = hold
        self._claim = _CLAIM.bind(redis)

    async def schedule(self, thread_id: str, job: str, due: float) -> None:
        await self.redis.zadd(keys.retries(keys.shard_of(thread_id)), {job: due})

    async def claim_due(self, now: float, limit: int = 50) -> list[str]:
        """Jobs due at ``now``, held for ``hold`` seconds while the caller tries them."""
        args = {"now": now, "hold": self.hold, "limit": limit}
        claimed = await asyncio.gather(
            *(self._claim(keys={"retries": keys.retries(s)}, args=args) for s in range(keys.SHARDS))
        )
        return [str(job) for jobs in claimed for job in jobs]

    async def done(self, thread_id: str, job: str) -> None:
        await self.redis.zrem(keys.retries(keys.shard_of(thread_id)), job)

    async def count(self) -> int:
        """Jobs scheduled in every shard."""
        sizes = await asyncio.gather(
            *(self.redis.zcard(keys.retries(s)) for s in range(keys.SHARDS))
        )
        return sum(int(n) for n in sizes)
