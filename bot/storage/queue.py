"""The work queue: a Redis Stream with a consumer group, thread leases and timers.

At-least-once: an entry is acknowledged only after its thread was stepped;
entries of a dead consumer are reclaimed. One worker steps a thread at a time
(a lease); a worker that finds the lease taken acknowledges its entry, because
the holder re-checks the thread's version before letting go, and sets the
thread's timer to the lease's expiry in case the holder died.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.storage import keys

# Take the lease and read the events after ARGV[7] and how far delivery got,
# or, if another worker holds it, make sure the thread is looked at again when
# that lease runs out (its holder may have died), and acknowledge.
_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('LRANGE', KEYS[4], ARGV[7], -1), redis.call('GET', KEYS[5]) or '0'}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = tonumber(ARGV[2]) end
redis.call('ZADD', KEYS[2], 'LT', tonumber(ARGV[3]) + ttl / 1000, ARGV[5])
redis.call('XACK', KEYS[3], ARGV[6], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return {0, {}, '0'}
"""

# Let go only if the thread did not change since the holder last looked;
# otherwise keep the lease and tell the holder to step again. On release,
# record how far delivery got, re-arm the thread's timer, acknowledge the entry.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local v = redis.call('HGET', KEYS[2], 'version')
if (v or '0') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[5], ARGV[7])
if ARGV[3] == '' then redis.call('ZREM', KEYS[3], ARGV[6])
else redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6]) end
if ARGV[4] ~= '' then
  redis.call('XACK', KEYS[4], ARGV[5], ARGV[4])
  redis.call('XDEL', KEYS[4], ARGV[4])
end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# Move due timers into the queue, pushing each forward so a lost step retries.
_SWEEP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, tid in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], tid)
  redis.call('XADD', KEYS[2], '*', 't', tid)
end
return #due
"""


@dataclass(eq=False)
class Lease:
    """A worker's hold on one thread, taken for one queue entry."""

    thread_id: str
    holder: str
    entry_id: str
    delivered: int = 0
    """How many of the thread's events the channels have been handed."""
    held: bool = True
    """False once let go."""


class Queue:
    """Queue operations for one consumer.

    Args:
        redis: a client with ``decode_responses=True``.
        consumer: this worker's unique name.
        lease_ms: how long a thread lease lives without renewal.
        timer_retry: seconds after which a swept timer fires again if unhandled.
    """

    def __init__(
        self, redis: Redis, consumer: str, *, lease_ms: int = 30_000, timer_retry: float = 30.0
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.timer_retry = timer_retry
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._sweep = redis.register_script(_SWEEP)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.queue(), keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int | None) -> list[tuple[str, str]]:
        """New entries for this consumer: (entry id, thread id) pairs."""
        got: Any = await self.redis.xreadgroup(
            keys.GROUP, self.consumer, {keys.queue(): ">"}, count=count, block=block_ms
        )
        return [(eid, f["t"]) for _, entries in got or [] for eid, f in entries]

    async def reclaim(self, min_idle_ms: int, count: int = 100) -> list[tuple[str, str]]:
        """Entries another consumer took and never acknowledged (it died)."""
        result: Any = await self.redis.xautoclaim(
            keys.queue(), keys.GROUP, self.consumer, min_idle_ms, "0-0", count=count
        )
        return [(eid, f["t"]) for eid, f in result[1] if f]

    async def take(
        self, thread_id: str, entry_id: str, known: int
    ) -> tuple[Lease, list[str]] | None:
        """Lease the thread and return the lease and its events after the first ``known`` ones.

        None when another worker holds it: the entry is then acknowledged and
        the thread's timer set to the lease's expiry, in case the holder died.
        """
        got, events, delivered = await self._take(
            keys=[
                keys.lease(thread_id),
                keys.timers(),
                keys.queue(),
                keys.events(thread_id),
                keys.outbox(thread_id),
            ],
            args=[
                self.consumer,
                self.lease_ms,
                time.time(),
                entry_id,
                thread_id,
                keys.GROUP,
                known,
            ],
        )
        if int(got) != 1:
            return None
        return Lease(thread_id, self.consumer, entry_id, int(delivered)), list(events)

    async def renew(self, leases: list[Lease]) -> list[Lease]:
        """Extend the leases still held, in one round trip; returns those that were lost."""
        pipe = self.redis.pipeline(transaction=False)
        for lease in leases:
            await self._renew(
                keys=[keys.lease(lease.thread_id)], args=[lease.holder, self.lease_ms], client=pipe
            )
        kept = await pipe.execute()
        return [lease for lease, ok in zip(leases, kept, strict=True) if not int(ok)]

    async def release(self, lease: Lease, version: int, next_due: float | None) -> bool:
        """Let go of the thread and acknowledge; False when it changed meanwhile."""
        tid = lease.thread_id
        done = await self._release(
            keys=[keys.lease(tid), keys.meta(tid), keys.timers(), keys.queue(), keys.outbox(tid)],
            args=[
                lease.holder,
                version,
                "" if next_due is None else next_due,
                lease.entry_id,
                keys.GROUP,
                tid,
                lease.delivered,
            ],
        )
        if int(done) == 0:
            return False
        lease.held = False
        return True

    async def sweep_timers(self, limit: int = 100) -> int:
        """Queue threads whose timers are due; returns how many."""
        return int(
            await self._sweep(
                keys=[keys.timers(), keys.queue()],
                args=[time.time(), self.timer_retry, limit],
            )
        )

    async def heartbeat(self) -> None:
        await self.redis.zadd(keys.workers(), {self.consumer: time.time()})
