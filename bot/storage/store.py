"""The Redis event store: append-only thread logs with compare-and-append.

One Lua script appends events at the version the writer read, drops a
duplicate inbound delivery, refreshes the derived indexes and enqueues the
thread for a worker, all in one round trip, so an event is never recorded
without the work it implies being queued.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from bot.domain.errors import ConflictError, NotFoundError, StoreError, VersionConflict
from bot.domain.events import EVENT, Event, to_json
from bot.domain.reducer import ThreadState, reduce
from bot.storage import keys

log = logging.getLogger(__name__)

# KEYS: events meta seen threads old_status new_status open_requests timers queue agent
# ARGV: expected delivery now seen_ttl status agent created due enqueue
#       n_opened opened... n_closed closed... events...
_APPEND = """
local expected = tonumber(ARGV[1])
local delivery = ARGV[2]
local now = tonumber(ARGV[3])
if delivery ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
  if redis.call('ZSCORE', KEYS[3], delivery) then
    return {2, redis.call('LLEN', KEYS[1])}
  end
end
local len = redis.call('LLEN', KEYS[1])
if len ~= expected then return {0, len} end
local i = 10
local opened = tonumber(ARGV[i]); i = i + 1
local opened_at = i; i = i + opened
local closed = tonumber(ARGV[i]); i = i + 1
local closed_at = i; i = i + closed
local newlen = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, #ARGV))
if delivery ~= '' then redis.call('ZADD', KEYS[3], now, delivery) end
local tid = string.match(KEYS[1], '{(.-)}')
redis.call('HSET', KEYS[2], 'version', newlen, 'status', ARGV[5], 'agent', ARGV[6],
  'updated', now, 'created', ARGV[7])
if expected == 0 then
  redis.call('ZADD', KEYS[4], ARGV[7], tid)
  redis.call('ZADD', KEYS[10], ARGV[7], tid)
end
if KEYS[5] ~= KEYS[6] then redis.call('ZREM', KEYS[5], tid) end
redis.call('ZADD', KEYS[6], now, tid)
for j = opened_at, opened_at + opened - 1 do redis.call('ZADD', KEYS[7], now, ARGV[j]) end
for j = closed_at, closed_at + closed - 1 do redis.call('ZREM', KEYS[7], ARGV[j]) end
if ARGV[8] == '' then redis.call('ZREM', KEYS[8], tid)
else redis.call('ZADD', KEYS[8], ARGV[8], tid) end
if ARGV[9] == '1' then redis.call('XADD', KEYS[9], '*', 't', tid) end
return {1, newlen}
"""


class DuplicateDelivery(ConflictError):
    """The inbound delivery was recorded before; the caller answers success."""


class Store:
    """Thread logs in Redis.

    Args:
        redis: a client with ``decode_responses=True``.
        seen_ttl: how long (seconds) an inbound delivery key is remembered.
    """

    def __init__(
        self, redis: Redis, *, seen_ttl: float = 86400.0, cache_size: int = 10_000
    ) -> None:
        self.redis = redis
        self.seen_ttl = seen_ttl
        self.cache_size = cache_size
        self._append = redis.register_script(_APPEND)
        # Logs are append-only, so a cached prefix stays true: reads fetch only what is new.
        self._cache: OrderedDict[str, tuple[ThreadState, list[Event]]] = OrderedDict()

    async def load(self, thread_id: str) -> ThreadState:
        """The thread's current state (version 0 when it does not exist)."""
        return (await self._read(thread_id))[0]

    def known(self, thread_id: str) -> int:
        """How many of the thread's events this process has cached."""
        cached = self._cache.get(thread_id)
        return cached[0].version if cached else 0

    async def absorb(self, thread_id: str, raw: Sequence[str], start: int) -> ThreadState:
        """The state after ``raw``, the thread's events from index ``start`` on (read elsewhere)."""
        if self.known(thread_id) < start:  # evicted from the cache meanwhile
            return await self.load(thread_id)
        return self._absorb(thread_id, raw, start)[0]

    async def _read(self, thread_id: str) -> tuple[ThreadState, list[Event]]:
        while True:
            start = self.known(thread_id)
            raw = await self.redis.lrange(keys.events(thread_id), start, -1)  # type: ignore[misc]
            if self.known(thread_id) >= start:  # else evicted meanwhile: read it all
                return self._absorb(thread_id, raw, start)

    def _absorb(
        self, thread_id: str, raw: Sequence[str | bytes], start: int
    ) -> tuple[ThreadState, list[Event]]:
        state, events = self._cache.get(thread_id) or (ThreadState(id=thread_id), [])
        # Another coroutine may have cached some of these while we were reading.
        raw = raw[state.version - start :]
        if raw:
            new = [self.decode(thread_id, r) for r in raw]
            for event in new:
                state = reduce(state, event)
            events = events + new
            self._remember(state, events)
        return state, events

    def _remember(self, state: ThreadState, events: list[Event]) -> None:
        if self.known(state.id) > state.version:
            return  # a newer read got there first
        self._cache[state.id] = (state, events)
        self._cache.move_to_end(state.id)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def get(self, thread_id: str) -> ThreadState:
        """Like ``load`` but a missing thread is a ``NotFoundError``."""
        state = await self.load(thread_id) if keys.is_thread_id(thread_id) else None
        if state is None or not state.exists:
            raise NotFoundError(f"no thread {thread_id!r}", thread_id=thread_id)
        return state

    async def events(self, thread_id: str, *, version: int | None = None) -> list[Event]:
        """The thread's events; with ``version``, without a round trip when it is cached."""
        cached = self._cache.get(thread_id)
        if version is not None and cached and cached[0].version == version:
            return list(cached[1])
        return list((await self._read(thread_id))[1])

    async def append(
        self,
        state: ThreadState,
        events: Sequence[Event],
        *,
        delivery: str | None = None,
        enqueue: bool = True,
    ) -> ThreadState:
        """Append ``events`` if the thread is still at ``state.version``.

        Returns the new state. Raises ``VersionConflict`` when another writer
        got there first (re-read and retry) and ``DuplicateDelivery`` when
        ``delivery`` was already recorded on this thread.
        """
        new = state
        for event in events:
            new = reduce(new, event)
        before = {r.id for r in state.open_requests()}
        after = {r.id for r in new.open_requests()}
        due = new.next_due()
        tid = state.id
        argv: list[Any] = [
            state.version,
            delivery or "",
            time.time(),
            self.seen_ttl,
            new.status.value,
            new.agent,
            new.created_at,
            "" if due is None else due,
            "1" if enqueue else "0",
            len(after - before),
            *sorted(after - before),
            len(before - after),
            *sorted(before - after),
            *(to_json(e) for e in events),
        ]
        keys_ = [
            keys.events(tid),
            keys.meta(tid),
            keys.seen(tid),
            keys.threads(),
            keys.by_status(state.status.value if state.exists else new.status.value),
            keys.by_status(new.status.value),
            keys.open_requests(),
            keys.timers(),
            keys.queue(),
            keys.by_agent(new.agent),
        ]
        code, length = await self._append(keys=keys_, args=argv)
        if code == 2:
            raise DuplicateDelivery(f"delivery {delivery} already recorded", thread_id=tid)
        if code == 0:
            if int(length) < self.known(tid):
                # Redis lost writes (a restart within its fsync window): the log
                # is shorter than our copy, so our copy is no longer the truth.
                self._cache.pop(tid, None)
            raise VersionConflict(tid, state.version, int(length))
        cached = self._cache.get(tid)
        if cached and cached[0].version == state.version:
            self._remember(new, cached[1] + list(events))
        elif not state.exists:
            self._remember(new, list(events))
        log.info(
            "thread %s v%d %s (+%s)",
            tid,
            new.version,
            new.status.value,
            ",".join(e.type for e in events),
        )
        return new

    async def seen(self, thread_id: str, delivery: str) -> bool:
        """Whether an inbound delivery was already recorded on this thread."""
        return await self.redis.zscore(keys.seen(thread_id), delivery) is not None

    async def thread_ids(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[str], int]:
        """Thread ids, newest first, and how many there are in all.

        Status and agent each have an index; both at once filter the agent's
        threads by status.
        """
        if status and agent:
            ids, _ = await self.thread_ids(agent=agent, limit=2**31)
            metas = await self.metas(ids)
            found = [t for t, m in zip(ids, metas, strict=True) if m.get("status") == status]
            return found[offset : offset + limit], len(found)
        if agent:
            key = keys.by_agent(agent)
        else:
            key = keys.by_status(status) if status else keys.threads()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(key, offset, offset + limit - 1)
        pipe.zcard(key)
        ids, total = await pipe.execute()
        return list(ids), int(total)

    async def metas(self, thread_ids: Sequence[str]) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for tid in thread_ids:
            pipe.hgetall(keys.meta(tid))
        return list(await pipe.execute())

    async def open_request_ids(self, *, offset: int = 0, limit: int = 50) -> tuple[list[str], int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(keys.open_requests(), offset, offset + limit - 1)
        pipe.zcard(keys.open_requests())
        ids, total = await pipe.execute()
        return list(ids), int(total)

    async def link(self, channel: str, key: str, thread_id: str) -> None:
        """Remember that an external id (an email Message-ID) belongs to a thread."""
        await self.redis.set(keys.alias(channel, key), thread_id)

    async def resolve(self, channel: str, key: str) -> str | None:
        found = await self.redis.get(keys.alias(channel, key))
        return str(found) if found else None

    def decode(self, thread_id: str, raw: str | bytes) -> Event:
        """Parse one stored event; an unreadable one is a ``StoreError``."""
        try:
            return EVENT.validate_json(raw)
        except ValidationError as exc:
            raise StoreError(f"thread {thread_id} has an unreadable event: {exc}") from exc
