"""Outbound deliveries to retry: per shard, a sorted set of jobs scored by due time.

A job is JSON that names its thread under ``t``, and lives in that thread's
shard. Claiming a due job pushes it forward instead of removing it: a worker
that dies mid-delivery leaves the job to fire again; the claimant removes or
reschedules it. A thread's jobs leave with it when retention forgets it
(``unschedule``, in the thread log's forget script).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

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

UNSCHEDULE = """
local function unschedule(retries, tid)
  for _, job in ipairs(redis.call('ZRANGE', retries, 0, -1)) do
    if string.find(job, tid, 1, true) then
      local ok, found = pcall(cjson.decode, job)
      if ok and type(found) == 'table' and found.t == tid then
        redis.call('ZREM', retries, job)
      end
    end
  end
end
"""
"""Remove the thread's jobs from its shard's schedule. It reads the whole schedule, which
holds only deliveries failing now (each given up on within the outbox's give-up time)."""


class Claimed(NamedTuple):
    """A job claimed for a try, and the shard whose schedule holds it."""

    shard: int
    job: str


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
        """Schedule ``job`` (JSON naming ``thread_id`` under ``t``) for ``due``."""
        await self.redis.zadd(keys.retries(keys.shard_of(thread_id)), {job: due})

    async def claim_due(self, now: float, limit: int = 50) -> list[Claimed]:
        """Jobs due at ``now``, held for ``hold`` seconds while the caller tries them."""
        args = {"now": now, "hold": self.hold, "limit": limit}
        claimed = await asyncio.gather(
            *(self._claim(keys={"retries": keys.retries(s)}, args=args) for s in range(keys.SHARDS))
        )
        return [Claimed(shard, str(job)) for shard, jobs in enumerate(claimed) for job in jobs]

    async def done(self, claimed: Claimed) -> None:
        """Remove a claimed job: tried (and rescheduled as another if it failed), or dropped."""
        await self.redis.zrem(keys.retries(claimed.shard), claimed.job)

    async def count(self) -> int:
        """Jobs scheduled in every shard."""
        sizes = await asyncio.gather(
            *(self.redis.zcard(keys.retries(s)) for s in range(keys.SHARDS))
        )
        return sum(int(n) for n in sizes)
