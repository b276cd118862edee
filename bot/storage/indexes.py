"""Derived indexes: threads by creation, by agent and by status, and open requests.

Each shard keeps its own; the thread log's append script calls ``reindex`` so
an index never lags its log. Listings merge the shards: a page at ``offset``
reads the first ``offset + limit`` of each shard and merges them by score.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from bot.storage import keys
from bot.storage.connection import Client

REINDEX = """
local function reindex(threads, agent, old_agent, old_status, new_status, open, tid, created,
                       now, is_new, opened, closed)
  if is_new then
    redis.call('ZADD', threads, created, tid)
    redis.call('ZADD', agent, created, tid)
  elseif agent ~= old_agent then
    redis.call('ZREM', old_agent, tid)
    redis.call('ZADD', agent, created, tid)
  end
  if old_status ~= new_status then redis.call('ZREM', old_status, tid) end
  redis.call('ZADD', new_status, now, tid)
  for rid in string.gmatch(opened, '%S+') do redis.call('ZADD', open, now, rid) end
  for rid in string.gmatch(closed, '%S+') do redis.call('ZREM', open, rid) end
end
"""
"""Keys and arguments of one append: see ``bot.storage.threadlog``."""

UNINDEX = """
local function unindex(threads, agent, status, open, tid, requests)
  redis.call('ZREM', threads, tid)
  redis.call('ZREM', agent, tid)
  redis.call('ZREM', status, tid)
  for rid in string.gmatch(requests, '%S+') do redis.call('ZREM', open, rid) end
end
"""
"""Removes a thread from every index (``bot.storage.threadlog`` forgets archived threads)."""

Page = tuple[list[str], int]
"""Ids on the page, and how many there are in all."""


def reindex_keys(
    thread_id: str, agent: str, old_status: str, new_status: str, old_agent: str | None = None
) -> dict[str, str]:
    """The index keys one append of ``thread_id`` touches, all in its shard.

    ``old_agent``: the agent before the append, when triage chose another.
    """
    shard = keys.shard_of(thread_id)
    return {
        "threads": keys.threads(shard),
        "agent": keys.by_agent(shard, agent),
        "old_agent": keys.by_agent(shard, old_agent or agent),
        "old_status": keys.by_status(shard, old_status),
        "new_status": keys.by_status(shard, new_status),
        "open": keys.open_requests(shard),
    }


class Indexes:
    """Reads the indexes across shards."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis

    async def threads(
        self, *, status: str | None = None, agent: str | None = None, offset: int, limit: int
    ) -> Page:
        """Thread ids, newest first (by creation; by last update with ``status``)."""
        if agent:
            return await self._page(lambda s: keys.by_agent(s, agent), offset, limit, newest=True)
        if status:
            return await self._page(lambda s: keys.by_status(s, status), offset, limit, newest=True)
        return await self._page(keys.threads, offset, limit, newest=True)

    async def finished_before(
        self, statuses: tuple[str, ...], cutoff: float, limit: int
    ) -> list[str]:
        """Threads in one of ``statuses`` last updated before ``cutoff``: ``limit`` a shard."""

        async def shard(s: int) -> list[str]:
            found: list[str] = []
            for status in statuses:
                rows = await self.redis.zrangebyscore(
                    keys.by_status(s, status), "-inf", cutoff, start=0, num=limit
                )
                found.extend(str(r) for r in rows)
            return found

        every = await asyncio.gather(*(shard(s) for s in range(keys.SHARDS)))
        return [tid for found in every for tid in found]

    async def open_requests(self, *, offset: int, limit: int) -> Page:
        """Open request ids, oldest first."""
        return await self._page(keys.open_requests, offset, limit, newest=False)

    async def all_open_requests(self) -> list[str]:
        """Every open request id, in no particular order (for gauges read at scrape time)."""
        pipe = self.redis.pipeline(transaction=False)
        for s in range(keys.SHARDS):
            pipe.zrange(keys.open_requests(s), 0, -1)
        return [str(rid) for rows in await pipe.execute() for rid in rows]

    async def _page(
        self, key_of: Callable[[int], str], offset: int, limit: int, *, newest: bool
    ) -> Page:
        end = offset + limit - 1

        async def shard(s: int) -> tuple[list[tuple[str, float]], int]:
            key = key_of(s)
            pipe = self.redis.pipeline(transaction=False)
            if newest:
                pipe.zrevrange(key, 0, end, withscores=True)
            else:
                pipe.zrange(key, 0, end, withscores=True)
            pipe.zcard(key)
            rows, total = await pipe.execute()
            return [(str(m), float(score)) for m, score in rows], int(total)

        shards = await asyncio.gather(*(shard(s) for s in range(keys.SHARDS)))
        merged = heapq.merge(
            *(rows for rows, _ in shards),
            key=lambda row: -row[1] if newest else row[1],
        )
        ids = [member for member, _ in merged][offset : offset + limit]
        return ids, sum(total for _, total in shards)
