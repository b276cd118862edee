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
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from bot.domain.ids import thread_of_request
from bot.domain.reducer import Request, ThreadState
from bot.domain.waiting import Waiting, to_waiting
from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.encoding import to_compact_json
from bot.storage.script import Script

_CHANGED = """
local function changed(waiting_v)
  local was = redis.call('GET', waiting_v)
  local count = tonumber(was and string.match(was, '^%d+') or 0) + 1
  local now = redis.call('TIME')
  redis.call('SET', waiting_v, count .. ':' .. now[1] .. '.' .. now[2])
end
"""
"""A shard's ``waiting`` changed: its version becomes one no process has seen. A count, and
the server's time: Redis that lost writes (a restart within its fsync window, a failover to
a replica that was behind) counts again from where it was, and a process that read the
lost version would take the next change for what it had read."""

REINDEX = (
    _CHANGED
    + """
local function reindex(agents, agent, old_agent, old_status, new_status, open, waiting,
                       waiting_v, tid, agent_name, created, now, is_new, stored_before,
                       opened, closed, summaries)
  if is_new or agent ~= old_agent then
    if not is_new then redis.call('ZREM', old_agent, tid) end
    redis.call('ZADD', agent, created, tid)
  end
  if is_new or agent ~= old_agent or stored_before then
    redis.call('ZADD', agents, 'NX', created, agent_name)
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
  if summaries ~= '' or closed ~= '' then changed(waiting_v) end
end
"""
)
"""Keys and arguments of one append: see ``bot.storage.threadlog``; ``stored_before``: the
thread was stored before the ``agents`` set, which may not name its agent yet; ``summaries``
is a JSON object of the open requests the append opened or changed (``summaries``)."""

UNINDEX = (
    _CHANGED
    + """
local function unindex(threads, agent, status, open, waiting, waiting_v, tid, requests)
  redis.call('ZREM', threads, tid)  -- the index threads were first listed by
  redis.call('ZREM', agent, tid)
  redis.call('ZREM', status, tid)
  for rid in string.gmatch(requests, '%S+') do
    redis.call('ZREM', open, rid)
    redis.call('HDEL', waiting, rid)
  end
  changed(waiting_v)
end
"""
)
"""Removes a thread from every index (``bot.storage.threadlog`` forgets archived threads)."""

_SUMMARISE = Script(
    """
if redis.call('ZSCORE', K.open, A.rid) and redis.call('HSETNX', K.waiting, A.rid, A.summary) == 1
then
  changed(K.waiting_v)
  return 1
end
return 0
""",
    keys=("open", "waiting", "waiting_v"),
    args=("rid", "summary"),
    fragments=(_CHANGED,),
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
        "agents": keys.agents(shard),
        "agent": keys.by_agent(shard, agent),
        "old_agent": keys.by_agent(shard, old_agent),
        "old_status": keys.by_status(shard, old_status),
        "new_status": keys.by_status(shard, new_status),
        "open": keys.open_requests(shard),
        "waiting": keys.waiting(shard),
        "waiting_v": keys.waiting_version(shard),
    }


def summaries(old: ThreadState, new: ThreadState, opened: Sequence[Request]) -> str:
    """The summaries an append must store: open requests it opened or changed, as one JSON
    object (empty when none); ``opened``: ``new``'s open requests, which the append has
    read already. The reducer copies only the requests an event touches, so an unchanged
    request is the same object before and after."""
    changed = {
        r.id: to_stored(to_waiting(new, r)) for r in opened if old.requests.get(r.id) is not r
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
"""Fields summaries stored as JSON objects (before ``_ORDER``) left out at these values."""

_ORDER: tuple[tuple[str, Any], ...] = (
    ("agent", ""),
    ("title", ""),
    ("urgency", "normal"),
    ("channel", ""),
    ("approvers", []),
    ("expires_at", None),
    ("own", []),
    ("requester", None),
    ("kind", "approval"),
    ("needed", 1),
    ("approved", 0),
    ("heard", []),
    ("voted", []),
    ("thread", None),
)
"""A summary is stored as a JSON array of these fields in this order, without those at the
end that hold the value beside them; ``requester`` and ``thread`` are null where derived
(from ``own`` and from the request id). Never reorder or change one: append new fields."""


def to_stored(item: Waiting) -> str:
    """A summary as the ``waiting`` hash keeps it: the values of ``_ORDER`` without the
    request id (its field name), when it was opened (its score in the ``open`` index), the
    thread id where the request id names it, and the requester where it is the id of who
    may not approve their own request (``own``)."""
    fields = dict(vars(item))  # not ``asdict``: it deep-copies every list, for nothing here
    if thread_of_request(item.request) == item.thread:
        fields["thread"] = None
    if item.own and item.requester == _id_of(item.own):
        fields["requester"] = None
    values = [fields[name] for name, _ in _ORDER]
    while values and values[-1] == _ORDER[len(values) - 1][1]:
        values.pop()
    return to_compact_json(values)


def from_stored(request_id: str, raw: str | bytes, *, opened_at: float) -> Waiting:
    """A stored summary (in this shape, as a JSON object of the fields not at
    ``_LEFT_OUT`` or whole, as summaries were kept before), with ``opened_at``, the
    request's score in the ``open`` index."""
    stored = json.loads(raw)
    fields: dict[str, Any] = {"request": request_id, "opened_at": opened_at}
    if isinstance(stored, list):
        values = stored + [default for _, default in _ORDER[len(stored) :]]
        fields |= {name: value for (name, _), value in zip(_ORDER, values, strict=True)}
    else:
        fields |= _LEFT_OUT | stored
    if fields.get("thread") is None:
        fields["thread"] = thread_of_request(request_id) or ""
    if fields.get("requester") is None:
        fields["requester"] = _id_of(fields["own"])
    copied: dict[str, Any] = {k: list(v) if isinstance(v, list) else v for k, v in fields.items()}
    return Waiting(**copied)  # no list shared with the defaults


def _id_of(names: list[str]) -> str:
    """The id in the first of a person's names (``api:ann`` -> ``ann``, ``to_person``)."""
    return names[0].partition(":")[2] if names else ""


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
            return await self._page(lambda s: [keys.by_agent(s, agent)], offset, limit, newest=True)
        if status:
            return await self._page(
                lambda s: [keys.by_status(s, status)], offset, limit, newest=True
            )
        names = await self._agents()
        return await self._page(
            lambda s: [keys.by_agent(s, a) for a in sorted(names[s])], offset, limit, newest=True
        )

    async def _agents(self) -> list[set[str]]:
        """Each shard's agents. A shard whose threads were listed by the ``threads`` index of
        before has that index's agents added (from each thread's meta), and it deleted."""
        pipe = self.redis.pipeline(transaction=False)
        for s in range(keys.SHARDS):
            pipe.zrange(keys.agents(s), 0, -1)
            pipe.exists(keys.threads(s))
        got = await pipe.execute()
        names = [{str(n) for n in members} for members in got[::2]]
        for s in [s for s, old in enumerate(got[1::2]) if old]:
            tids = await self.redis.zrange(keys.threads(s), 0, -1)
            pipe = self.redis.pipeline(transaction=False)
            for tid in tids:
                pipe.hget(keys.meta(str(tid)), "agent")
            found = {str(a) for a in await pipe.execute() if a}
            if found:  # by when they first had a thread here: the oldest one listed
                oldest = float(
                    (await self.redis.zrange(keys.threads(s), 0, 0, withscores=True))[0][1]
                )
                await self.redis.zadd(keys.agents(s), dict.fromkeys(found, oldest), nx=True)
            await self.redis.delete(keys.threads(s))
            names[s] |= found
        return names

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
        return await self._page(lambda s: [keys.open_requests(s)], offset, limit, newest=False)

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
                pipe.zrange(keys.open_requests(s), 0, -1, withscores=True)
            # Read after the version: a change in between is read again next time. A
            # summary whose request left ``open`` between the two reads was closed: not listed.
            got = await pipe.execute()
            for s, rows, opened in zip(stale, got[::2], got[1::2], strict=True):
                when = {str(rid): float(at) for rid, at in opened}
                found = [
                    from_stored(str(rid), raw, opened_at=when[str(rid)])
                    for rid, raw in rows.items()
                    if str(rid) in when
                ]
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

    async def _page(
        self, keys_of: Callable[[int], list[str]], offset: int, limit: int, *, newest: bool
    ) -> Page:
        """A page of the sorted sets ``keys_of`` each shard, merged by score (a member is
        in one of a shard's sets)."""
        end = offset + limit - 1

        async def shard(s: int) -> tuple[list[tuple[str, float]], int]:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys_of(s):
                if newest:
                    pipe.zrevrange(key, 0, end, withscores=True)
                else:
                    pipe.zrange(key, 0, end, withscores=True)
                pipe.zcard(key)
            got = await pipe.execute() if len(pipe) else []
            rows = [[(str(m), float(score)) for m, score in found] for found in got[::2]]
            return list(_merged(rows, newest)), sum(int(total) for total in got[1::2])

        shards = await asyncio.gather(*(shard(s) for s in range(keys.SHARDS)))
        merged = _merged([rows for rows, _ in shards], newest)
        ids = [member for member, _ in merged][offset : offset + limit]
        return ids, sum(total for _, total in shards)


def _merged(rows: list[list[tuple[str, float]]], newest: bool) -> Iterator[tuple[str, float]]:
    return heapq.merge(*rows, key=lambda row: -row[1] if newest else row[1])
