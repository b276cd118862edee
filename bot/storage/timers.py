"""Timers: per shard, a sorted set of thread ids scored by when the thread next needs a look.

Expiry, reminders and escalation come due here, and so does a thread whose
lease another worker holds (in case that worker died). The sweep moves due
threads into their shard's queue and pushes each timer forward, so a step
that never happens is tried again.
"""

from __future__ import annotations

import asyncio

from bot.domain.clock import Clock
from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.queue import ENQUEUE
from bot.storage.script import Script

ARM = """
local function arm(timers, tid, due)
  if due == '' then redis.call('ZREM', timers, tid) else redis.call('ZADD', timers, due, tid) end
end
local function arm_by(timers, tid, due) redis.call('ZADD', timers, 'LT', due, tid) end
"""
"""``arm`` sets (or clears, with '') a thread's timer; ``arm_by`` only brings it earlier."""

_SWEEP = Script(
    """
local due = redis.call('ZRANGEBYSCORE', K.timers, '-inf', A.now, 'LIMIT', 0, A.limit)
for _, tid in ipairs(due) do
  redis.call('ZADD', K.timers, A.now + A.retry, tid)
  enqueue(K.queue, tid)
end
return #due
""",
    keys=("timers", "queue"),
    args=("now", "retry", "limit"),
    fragments=(ENQUEUE,),
)


class Timers:
    """Sweeps every shard's due timers into its queue.

    Args:
        retry: seconds after which a swept timer fires again if nothing handled it.
    """

    def __init__(self, redis: Client, clock: Clock, *, retry: float = 30.0) -> None:
        self.clock = clock
        self.retry = retry
        self._sweep = _SWEEP.bind(redis)

    async def sweep(self, limit: int = 100) -> int:
        """Queue threads whose timers are due; returns how many."""
        now = self.clock.now()
        args = {"now": now, "retry": self.retry, "limit": limit}
        swept = await asyncio.gather(
            *(
                self._sweep(keys={"timers": keys.timers(s), "queue": keys.queue(s)}, args=args)
                for s in range(keys.SHARDS)
            )
        )
        return sum(int(n) for n in swept)
