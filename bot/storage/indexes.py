"""Derived indexes: threads by creation, by agent and by status, open requests, and what
waits for people (a summary of each open request, for the web inbox).

Each shard keeps its own; the thread log's append script calls ``reindex`` so
an index never lags its log. Listings merge the shards: a page at ``offset``
reads the first ``offset + limit`` of each shard and merges them by score.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from bot.domain.ids import thread_of_request
from bot.domain.reducer import ThreadState
from bot.domain.waiting import Waiting, to_waiting
from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.encoding import to_compact_json
from bot.storage.script import Script

REINDEX = """
local function reindex(threads, agent, old_agent, old_status, new_status, open, waiting,
                       waiting_v, tid, created, now, is_new, opened, closed, summaries)
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
  for rid in string.gmatch(closed, '%S+') do
    redis.call('ZREM', open, rid)
    redis.call('HDEL', waiting, rid)
  end
  if summaries ~= '' then
    for rid, summary in pairs(cjson.decode(summaries)) do
      redis.call('HSET', waiting, rid, summary)
    end
  end
  if summaries ~= '' or closed ~= '' then redis.call('INCR', waiting_v) end
end
"""
"""Keys and arguments of one append: see ``bot.storage.threadlog``; ``summaries`` is a JSON
object of the open requests the append opened or changed (``summaries``)."""

UNINDEX = """
local function unindex(threads, agent, status, open, waiting, waiting_v, tid, requests)
  redis.call('ZREM', threads, tid)
  redis.call('ZREM', agent, tid)
  redis.call('ZREM', status, tid)
  for rid in string.gmatch(requests, '%S+') do
    redis.call('ZREM', open, rid)
    redis.call('HDEL', waiting, rid)
  end
  redis.call('INCR', waiting_v)
end
"""
"""Removes a thread from every index (``bot.storage.threadlog`` forgets archived threads)."""

_SUMMARISE = Script(
    """
if redis.call('ZSCORE', K.open, A.rid) and redis.call('HSETNX', K.waiting, A.rid, A.summary) == 1
then
  redis.call('INCR', K.waiting_v)
  return 1
end
return 0
""",
    keys=("open", "waiting", "waiting_v"),
    args=("rid", "summary"),
)
"""Stores a summary built after the fact, only while its request is open and has none: an
append that changed the request meanwhile wrote the newer one, which is kept."""

Page = tuple[list[str], int]
"""Ids on the page, and how many there are in all."""


def reindex_keys(
    thread_id: str, agent: str, old_status: str, new_status: str, old_agent: str | None = None
) -> dict[str, str]:
    """The index keys one append of ``thread_id`` touches, all in its shard.

    ``old_agent``: the agent before the append, when triage chose another.
    """
    return _index_keys(keys.shard_of(thread_id), agent, old_status, new_status, old_agent or agent)


@lru_cache(maxsize=1024)
def _index_keys(
    shard: int, agent: str, old_status: str, new_status: str, old_agent: str
) -> dict[str, str]:
    """``reindex_keys`` by shard: a few hundred combinations, each built once. Shared: never
    change the dict."""
    return {
        "threads": keys.threads(shard),
        "agent": keys.by_agent(shard, agent),
        "old_agent": keys.by_agent(shard, old_agent),
        "old_status": keys.by_status(shard, old_status),
        "new_status": keys.by_status(shard, new_status),
        "open": keys.open_requests(shard),
        "waiting": keys.waiting(shard),
        "waiting_v": keys.waiting_version(shard),
    }


def summaries(old: ThreadState, new: ThreadState) -> str:
    """The summaries an append must store: open requests it opened or changed, as one JSON
    object (empty when none). The reducer copies only the requests an event touches, so an
    unchanged request is the same object before and after."""
    changed = {
        r.id: to_stored(to_waiting(new, r))
        for r in new.open_requests()
        if old.requests.get(r.id) is not r
    }
    return to_compact_json(changed) if changed else ""


_LEFT_OUT: dict[str, Any] = {
    "needed": 1,
    "approved": 0,
    "expires_at": None,
    "heard": [],
    "own": [],
    "voted": [],
}
"""Summary fields stored only when they differ from these (never change one: summaries
stored without it read it back)."""


def to_stored(item: Waiting) -> str:
    """A summary as the ``waiting`` hash keeps it: without the request id (its field name),
    the thread id where the request id names it, and the values of ``_LEFT_OUT``."""
    fields = dict(vars(item))  # not ``asdict``: it deep-copies every list, for nothing here
    del fields["request"]
    if thread_of_request(item.request) == item.thread:
        del fields["thread"]
    kept = {k: v for k, v in fields.items() if k not in _LEFT_OUT or _LEFT_OUT[k] != v}
    return to_compact_json(kept)


def from_stored(request_id: str, raw: str | bytes) -> Waiting:
    """A stored summary (in this shape, or whole as the first summaries were kept)."""
    fields = {k: list(v) if isinstance(v, list) else v for k, v in _LEFT_OUT.items()}
    fields |= {"request": request_id, "thread": thread_of_request(request_id) or ""}
    return Waiting(**(fields | json.loads(raw)))


class Indexes:
    """Reads the indexes across shards."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._summarise = _SUMMARISE.bind(redis)
        self._shards: dict[int, tuple[str | None, list[Waiting]]] = {}

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

    async def waiting(self) -> list[Waiting]:
        """Every open request's summary, in no particular order (the inbox filters and sorts
        them). Each shard is read and decoded again only when its version moved since this
        process last read it: a page with ten thousand open requests reads sixteen counters.
        """
        versions = await self.waiting_versions()
        stale = [
            s
            for s in range(keys.SHARDS)
            if s not in self._shards or self._shards[s][0] != versions[s]
        ]
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            for s in stale:
                pipe.hgetall(keys.waiting(s))
            # Read after the version: a change in between is read again next time.
            for s, rows in zip(stale, await pipe.execute(), strict=True):
                found = [from_stored(str(rid), raw) for rid, raw in rows.items()]
                self._shards[s] = (versions[s], found)
        return [w for s in range(keys.SHARDS) for w in self._shards[s][1]]

    async def unsummarised(self) -> list[str]:
        """Open request ids with no summary (opened before summaries were kept). Costs one
        round trip of two counts a shard; only a shard whose counts differ is read."""
        pipe = self.redis.pipeline(transaction=False)
        for s in range(keys.SHARDS):
            pipe.zcard(keys.open_requests(s))
            pipe.hlen(keys.waiting(s))
        counts = await pipe.execute()
        short = [s for s in range(keys.SHARDS) if counts[2 * s] > counts[2 * s + 1]]
        if not short:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for s in short:
            pipe.zrange(keys.open_requests(s), 0, -1)
            pipe.hkeys(keys.waiting(s))
        rows = await pipe.execute()
        missing: list[str] = []
        for opened, summarised in zip(rows[::2], rows[1::2], strict=True):
            have = {str(rid) for rid in summarised}
            missing.extend(str(rid) for rid in opened if str(rid) not in have)
        return missing

    async def summarise(self, state: ThreadState, request_id: str) -> bool:
        """Store the summary of ``state``'s open request ``request_id`` unless it has one;
        False when it had one or is no longer open."""
        shard = keys.shard_of(state.id)
        summary = to_stored(to_waiting(state, state.requests[request_id]))
        stored = await self._summarise(
            {
                "open": keys.open_requests(shard),
                "waiting": keys.waiting(shard),
                "waiting_v": keys.waiting_version(shard),
            },
            {"rid": request_id, "summary": summary},
        )
        return bool(stored)

    async def waiting_versions(self) -> list[str | None]:
        """Each shard's ``waiting`` version: when one moved, what waits has changed."""
        pipe = self.redis.pipeline(transaction=False)
        for s in range(keys.SHARDS):
            pipe.get(keys.waiting_version(s))
        versions: list[str | None] = await pipe.execute()
        return versions

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
