"""A thread's own keys: its event log, dedupe set and lease, and its delivery cursor.

Every write is a compare-and-append at the version the writer read (invariant
2), in one script that also drops a replayed inbound delivery, refreshes the
indexes, arms the thread's timer and, unless the writer holds the thread,
queues it: an event is never recorded without the work it implies being
queued. A worker takes a thread (the lease, the events it has not seen and
the delivery cursor, in one round trip) and releases it (the cursor, the
timer and the queue entry's acknowledgement, only if nothing changed since).

Logs are append-only, so this process keeps each thread's events and state in
a small cache and reads only what is new. A thread let go of once finished
leaves it (``_FINISHED``).

A thread has no hash of derived fields: listings read its status, agent and
times from the indexes (``metas``), and its delivery cursor is kept in its
shard's ``cursors`` only while the channels are behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydantic import ValidationError

from bot.domain import ids
from bot.domain.audit import anchor, to_link, to_record
from bot.domain.clock import Clock
from bot.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    VersionConflict,
)
from bot.domain.events import Event, from_log, record
from bot.domain.hashing import chain_hash
from bot.domain.reducer import Status, ThreadState, reduce
from bot.storage import keys
from bot.storage.audit import RECORD, to_stored_record
from bot.storage.channelstate import LINKED, unlink
from bot.storage.connection import Client
from bot.storage.indexes import REINDEX, UNINDEX, reindex_keys, summaries
from bot.storage.queue import ACK, ENQUEUE
from bot.storage.retries import UNSCHEDULE
from bot.storage.script import Batcher, Script
from bot.storage.timers import ARM

log = logging.getLogger(__name__)

_CURSOR = """
local function delivered(cursors, meta, tid)
  local c = redis.call('HGET', cursors, tid)
  if c then
    c = tonumber(c)
    return c, c
  end
  if redis.call('EXISTS', meta) == 1 then
    return tonumber(redis.call('HGET', meta, 'cursor') or '0'), false
  end
  return nil, false
end
local function keep_cursor(cursors, tid, c, len, was)
  if c < len then
    if c ~= was then redis.call('HSET', cursors, tid, c) end
  elseif was ~= false then
    redis.call('HDEL', cursors, tid)
  end
end
local function deliver_to(cursors, meta, tid, c, len)
  if redis.call('EXISTS', meta) == 1 then
    redis.call('HSET', meta, 'cursor', c)
  else
    keep_cursor(cursors, tid, c, len, nil)
  end
end
"""
"""How many of a thread's events the channels were handed: kept in the shard's ``cursors``
only while some were not (none: all were), or in the thread's meta hash of before, until its
next append removes that hash (whose other fields the indexes hold now). ``delivered`` gives
nil when all were (the caller knows how many there are, or asks), and also what ``cursors``
holds (false: nothing), which ``keep_cursor`` (for a thread without a meta hash) is given to
leave a field that would not change alone (nil: not known)."""

_APPEND = Script(
    """
local len = redis.call('LLEN', K.log)
local took, kept = ''
if A.take_ms ~= '' then
  if not redis.call('SET', K.lease, A.require, 'NX', 'PX', A.take_ms) then
    local ttl = redis.call('PTTL', K.lease)
    if ttl < 0 then ttl = tonumber(A.take_ms) end
    arm_by(K.timers, A.tid, tonumber(A.now) + ttl / 1000)
    ack(K.queue, A.entry)
    return {5, 0}
  end
  took, kept = delivered(K.cursors, K.meta, A.tid)
  took = took or len
elseif A.require ~= '' and redis.call('GET', K.lease) ~= A.require then
  return {4, len}
end
if A.delivery ~= '' then
  redis.call('ZREMRANGEBYSCORE', K.seen, '-inf', A.now - A.seen_ttl)
  if redis.call('ZSCORE', K.seen, A.delivery) then
    local was = redis.call('HGET', K.prints, A.delivery)
    if A.print ~= '' and was and was ~= A.print then return {3, len} end
    return {2, len}
  end
end
if len ~= tonumber(A.expected)
  or (A.last ~= '' and redis.sha1hex(redis.call('LINDEX', K.log, -1)) ~= A.last) then
  return {0, len, redis.call('LRANGE', K.log, math.max(A.expected - 1, 0), -1), took}
end
local releasing = A.holder ~= '' and redis.call('GET', K.lease) == A.holder
local cursor = took
if A.take_ms == '' and not releasing then  -- letting go, it hands every event over
  cursor, kept = delivered(K.cursors, K.meta, A.tid)
  cursor = cursor or len
end
local stored_before = redis.call('DEL', K.meta) == 1
local newlen = redis.call('RPUSH', K.log, unpack(ARGV, REST, #ARGV))
if A.delivery ~= '' then redis.call('ZADD', K.seen, A.now, A.delivery) end
if A.print ~= '' then
  redis.call('HSET', K.prints, A.delivery, A.print)
  redis.call('EXPIRE', K.prints, math.ceil(tonumber(A.seen_ttl)))
end
reindex(K.agents, K.agent, K.old_agent, K.old_status, K.new_status, K.open, K.waiting,
  K.waiting_v, A.tid, A.agent, A.created, A.now, len == 0, stored_before, A.opened, A.closed,
  A.summaries)
arm(K.timers, A.tid, A.due)
if A.enqueue == '1' then enqueue(K.queue, A.tid, A.trace) end
if A.audit ~= '' then record(K.audit, A.audit) end
local released = 0
if releasing then
  redis.call('DEL', K.lease)
  cursor = newlen
  ack(K.queue, A.entry)
  released = 1
else
  -- Still leased: looked at again when the lease runs out, in case its holder dies. Its
  -- queue entry may be gone already (another worker found the thread leased, and acked it).
  local ttl = redis.call('PTTL', K.lease)
  if ttl > 0 then arm_by(K.timers, A.tid, tonumber(A.now) + ttl / 1000) end
end
keep_cursor(K.cursors, A.tid, cursor, newlen, kept)  -- the meta hash is gone (DEL above)
return {1, newlen, released, took}
""",
    keys=(
        "log",
        "meta",
        "cursors",
        "seen",
        "lease",
        "prints",
        "timers",
        "queue",
        "audit",
        "agents",
        "agent",
        "old_agent",
        "old_status",
        "new_status",
        "open",
        "waiting",
        "waiting_v",
    ),
    args=(
        "tid",
        "expected",
        "last",
        "delivery",
        "print",
        "now",
        "seen_ttl",
        "agent",
        "created",
        "due",
        "enqueue",
        "opened",
        "closed",
        "summaries",
        "holder",
        "entry",
        "audit",
        "trace",
        "require",
        "take_ms",
    ),
    fragments=(_CURSOR, REINDEX, ARM, ENQUEUE, ACK, RECORD),
)
"""With ``take_ms``, the append first takes the lease for ``require`` (as ``_TAKE`` does; if
another holds it, the thread's timer is brought to that lease's expiry and ``entry``
acknowledged) and also returns how far delivery got (``took``)."""

# Take the lease and read what the worker has not seen and how far delivery got;
# if another worker holds it, look at the thread again when that lease runs out
# (its holder may have died), and acknowledge the entry.
_TAKE = Script(
    """
if redis.call('SET', K.lease, A.holder, 'NX', 'PX', A.lease_ms) then
  local cursor = delivered(K.cursors, K.meta, A.tid) or redis.call('LLEN', K.log)
  return {1, redis.call('LRANGE', K.log, A.since, -1), cursor}
end
local ttl = redis.call('PTTL', K.lease)
if ttl < 0 then ttl = tonumber(A.lease_ms) end
arm_by(K.timers, A.tid, tonumber(A.now) + ttl / 1000)
ack(K.queue, A.entry)
return {0, {}, '0'}
""",
    keys=("lease", "log", "meta", "cursors", "timers", "queue"),
    args=("tid", "holder", "lease_ms", "now", "entry", "since"),
    fragments=(_CURSOR, ARM, ACK),
)

# Let go only if the thread did not change since the holder last looked;
# otherwise keep the lease and tell the holder to step again.
_RELEASE = Script(
    """
if redis.call('GET', K.lease) ~= A.holder then return -1 end
local version = redis.call('LLEN', K.log)
if version ~= tonumber(A.version) then return 0 end
redis.call('DEL', K.lease)
deliver_to(K.cursors, K.meta, A.tid, tonumber(A.delivered), version)
arm(K.timers, A.tid, A.due)
ack(K.queue, A.entry)
return 1
""",
    keys=("lease", "log", "meta", "cursors", "timers", "queue"),
    args=("tid", "holder", "version", "due", "entry", "delivered"),
    fragments=(_CURSOR, ARM, ACK),
)

# Forget a finished thread once it is archived: only if it did not change since
# it was read (its version) and no worker holds it. Its deliveries still to retry go too,
# and its channels' state, whose aliases it returns.
_FORGET = Script(
    """
if redis.call('LLEN', K.log) ~= tonumber(A.version) then return {0} end
if redis.call('EXISTS', K.lease) == 1 then return {0} end
unindex(K.threads, K.agent, K.status, K.open, K.waiting, K.waiting_v, A.tid, A.requests)
redis.call('ZREM', K.timers, A.tid)
unschedule(K.retries, A.tid)
redis.call('HDEL', K.cursors, A.tid)
local done = {1}
for i = REST_KEYS, #KEYS do done[#done + 1] = linked(KEYS[i]) end
redis.call('DEL', K.log, K.meta, K.seen, unpack(KEYS, REST_KEYS))
return done
""",
    keys=(
        "log",
        "meta",
        "cursors",
        "seen",
        "lease",
        "timers",
        "retries",
        "threads",
        "agent",
        "status",
        "open",
        "waiting",
        "waiting_v",
    ),
    args=("tid", "version", "requests"),
    fragments=(UNINDEX, UNSCHEDULE, LINKED),
)
"""Returns {0} when the thread changed or is held, else 1 and, for each channel-state key
given after the named ones, the aliases it recorded (removed after, ``unlink``)."""

_RENEW = Script(
    """
if redis.call('GET', K.lease) ~= A.holder then return 0 end
return redis.call('PEXPIRE', K.lease, A.lease_ms)
""",
    keys=("lease",),
    args=("holder", "lease_ms"),
)


ReleaseIf = Callable[[ThreadState, Sequence[Event]], Awaitable["Lease | None"]]
"""Given the state after an append and its events: the lease to let go of with it, if any."""


class NotHolder(ConflictError):
    """An append that needed the thread's lease found it held by another (or by nobody)."""


class DuplicateDelivery(ConflictError):
    """The inbound delivery was recorded before; the caller answers success."""


class ReusedDelivery(InvalidInputError):
    """The delivery key was recorded before for a different request (another fingerprint)."""

    def __init__(self, delivery: str, thread_id: str) -> None:
        super().__init__(
            f"delivery key {delivery!r} was already used for a different request",
            delivery=delivery,
            thread_id=thread_id,
        )
        self.delivery = delivery


@dataclass(eq=False)
class Lease:
    """A worker's hold on one thread, taken for one queue entry."""

    thread_id: str
    holder: str
    entry_id: str
    ms: int
    """How long it lives without renewal."""
    delivered: int = 0
    """How many of the thread's events the channels have been handed."""
    held: bool = True
    """False once let go."""


@dataclass(frozen=True)
class Taken:
    """A thread a worker took: its lease, the thread, and whether ``take``'s ``then``
    events were appended with it (they are the last of ``state`` then)."""

    lease: Lease
    state: ThreadState
    appended: bool = False


class _Cache:
    """The threads this process read or wrote last, each its state and its events, kept
    to ``limit`` events in all: the least recently used thread leaves first. Bounded by
    events, not threads: a process's memory goes with them (a thread waiting for approval,
    of five events, takes about 12 KB), and one long conversation holds hundreds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._threads: OrderedDict[str, tuple[ThreadState, list[Event]]] = OrderedDict()
        self._events = 0
        self.get = self._threads.get  # on every step, several times: no call of ours

    def put(self, state: ThreadState, events: list[Event]) -> None:
        """Keep ``state`` and ``events`` as the thread's, as the most recently used."""
        self.pop(state.id)
        self._threads[state.id] = (state, events)
        self._events += len(events)
        while self._events > self.limit and len(self._threads) > 1:
            _, (_, gone) = self._threads.popitem(last=False)
            self._events -= len(gone)

    def pop(self, thread_id: str) -> None:
        if (cached := self._threads.pop(thread_id, None)) is not None:
            self._events -= len(cached[1])


class ThreadLog:
    """Thread logs in Redis, with this process's cache of them.

    Args:
        redis: a client with ``decode_responses=True``.
        clock: the time of appends (the dedupe window, ``updated``) and leases.
        seen_ttl: how long (seconds) an inbound delivery key is remembered.
        cache_events: how many events this process keeps in memory (``_Cache``).
    """

    def __init__(
        self,
        redis: Client,
        clock: Clock,
        *,
        seen_ttl: float = 86400.0,
        cache_events: int = 50_000,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.seen_ttl = seen_ttl
        self._seen_ttl = repr(float(seen_ttl))  # as the wire would write it (``_time``)
        # The scripts of every step: sent together when many threads step at once.
        batcher = Batcher.for_client(redis)
        self._wire = batcher.wire  # reads too, on one Redis: no pool, no reply parsing
        self._append = _APPEND.bind(redis, batcher)
        self._take = _TAKE.bind(redis, batcher)
        self._release = _RELEASE.bind(redis, batcher)
        self._renew = _RENEW.bind(redis, batcher)
        self._forget = _FORGET.bind(redis)
        self._cache = _Cache(cache_events)

    # --- reading ------------------------------------------------------------------------------

    async def load(self, thread_id: str) -> ThreadState:
        """The thread's current state (version 0 when it does not exist)."""
        return (await self._read(thread_id))[0]

    async def get(self, thread_id: str) -> ThreadState:
        """Like ``load`` but a missing thread is a ``NotFoundError``."""
        state = await self.load(thread_id) if ids.is_thread_id(thread_id) else None
        if state is None or not state.exists:
            raise NotFoundError(f"no thread {thread_id!r}", thread_id=thread_id)
        return state

    async def events(self, thread_id: str, *, version: int | None = None) -> list[Event]:
        """The thread's events; with ``version``, without a round trip when it is cached."""
        cached = self._cache.get(thread_id)
        if version is not None and cached and cached[0].version == version:
            return list(cached[1])
        return list((await self._read(thread_id))[1])

    def cached(self, thread_id: str) -> ThreadState | None:
        """This process's last copy of the thread, without a round trip: maybe behind."""
        cached = self._cache.get(thread_id)
        return cached[0] if cached else None

    def known(self, thread_id: str) -> int:
        """How many of the thread's events this process has cached."""
        cached = self._cache.get(thread_id)
        return cached[0].version if cached else 0

    async def forget(
        self, state: ThreadState, meta: dict[str, str], channels: Sequence[str]
    ) -> bool:
        """Remove a finished thread from Redis (after it was archived), with its index
        entries, its deliveries still to retry and what ``channels`` kept for it (their
        state, and the aliases that lead to it); False when it changed or a worker holds
        it, and nothing was removed."""
        tid = state.id
        shard = keys.shard_of(tid)
        status = meta.get("status", state.status.value)
        done, *linked = await self._forget(
            keys={
                "log": keys.log(tid),
                "meta": keys.meta(tid),
                "cursors": keys.cursors(shard),
                "seen": keys.seen(tid),
                "lease": keys.lease(tid),
                "timers": keys.timers(shard),
                "retries": keys.retries(shard),
                "threads": keys.threads(shard),
                "agent": keys.by_agent(shard, meta.get("agent", state.agent)),
                "status": keys.by_status(shard, status),
                "open": keys.open_requests(shard),
                "waiting": keys.waiting(shard),
                "waiting_v": keys.waiting_version(shard),
            },
            args={
                "tid": tid,
                "version": meta.get("version", ""),
                "requests": " ".join(state.requests),
            },
            extra_keys=[keys.channel_state(tid, c) for c in channels],
        )
        if not int(done):
            return False
        self._cache.pop(tid)
        # Each in a slot of its own: one by one, after. A crash in between leaves them.
        for channel, externals in zip(channels, linked, strict=True):
            await unlink(self.redis, channel, tid, [str(e) for e in externals])
        return True

    async def meta(self, thread_id: str) -> dict[str, str]:
        """The thread's derived fields (``metas``; empty when it is gone)."""
        return (await self.metas([thread_id]))[0]

    async def stored(self, thread_id: str) -> list[str]:
        """The thread's events exactly as Redis holds them, for checking the chain."""
        return [str(r) for r in await self.redis.lrange(keys.log(thread_id), 0, -1)]

    async def seen(self, thread_id: str, delivery: str, fingerprint: str | None = None) -> bool:
        """Whether an inbound delivery was already recorded on this thread.

        Raises:
            ReusedDelivery: it was, for a request with another ``fingerprint``.
        """
        if await self.redis.zscore(keys.seen(thread_id), delivery) is None:
            return False
        if fingerprint is not None:
            was = await self.redis.hget(keys.prints(thread_id), delivery)
            if was is not None and was != fingerprint:
                raise ReusedDelivery(delivery, thread_id)
        return True

    async def metas(self, thread_ids: Sequence[str]) -> list[dict[str, str]]:
        """The derived fields of each thread (empty when it is gone), in two round trips:
        ``status`` and ``updated`` (the status index it is in, and its score there),
        ``agent`` and ``created`` (likewise its agent's index), ``version`` (its log's
        length). A thread not appended to since it was stored with a meta hash reads that.
        """
        shards = sorted({keys.shard_of(tid) for tid in thread_ids})
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.zrange(keys.agents(shard), 0, -1)
        for tid in thread_ids:
            pipe.hgetall(keys.meta(tid))
            pipe.llen(keys.log(tid))
            for status in _STATUSES:
                pipe.zscore(keys.by_status(keys.shard_of(tid), status), tid)
        got = iter(await pipe.execute())
        agents = {shard: sorted(str(a) for a in next(got)) for shard in shards}
        found: list[dict[str, str]] = []
        for _ in thread_ids:
            old, version = next(got), int(next(got))
            statuses = _scored(_STATUSES, [next(got) for _ in _STATUSES])
            if old or not version or not statuses:
                found.append({str(k): str(v) for k, v in old.items()})
            else:
                (status, updated), *_ = statuses
                found.append({"status": status, "updated": str(updated), "version": str(version)})
        todo = [
            (tid, meta)
            for tid, meta in zip(thread_ids, found, strict=True)
            if "version" in meta and "agent" not in meta
        ]
        pipe = self.redis.pipeline(transaction=False)
        for tid, _meta in todo:
            shard = keys.shard_of(tid)
            for agent in agents[shard]:
                pipe.zscore(keys.by_agent(shard, agent), tid)
        got = iter(await pipe.execute() if todo else [])
        for tid, meta in todo:
            names = agents[keys.shard_of(tid)]
            for agent, created in _scored(names, [next(got) for _ in names]):
                meta |= {"agent": agent, "created": str(created)}
        return found

    async def _read(self, thread_id: str) -> tuple[ThreadState, list[Event]]:
        while True:
            start = self.known(thread_id)
            log = keys.log(thread_id)
            if self._wire is not None:
                raw = await self._wire.send("LRANGE", log, _overlap(start), -1)
            else:
                raw = await self.redis.lrange(log, _overlap(start), -1)
            # Else evicted meanwhile, or Redis lost what this process cached: read it all.
            if self.known(thread_id) >= start and (got := self._absorb(thread_id, raw, start)):
                return got

    def _absorb(
        self, thread_id: str, raw: Sequence[str | bytes], start: int
    ) -> tuple[ThreadState, list[Event]] | None:
        """Cache the events of ``raw``, the thread's log from the one before ``start``
        (``_overlap``), and return the thread with them. None when that one is not the
        last this process cached: Redis lost writes this process saw (a restart within
        its fsync window, a failover to a replica behind), so the cached copy is dropped
        and the caller reads the whole log. Trusted, the copy would answer reads with
        events Redis no longer has: a worker stepping and failing to let go of a thread
        forever, a decision refused for a vote that is gone."""
        state, events = self._cache.get(thread_id) or (ThreadState(id=thread_id), [])
        if start:
            if state.version == start and (not raw or chain_hash(raw[0]) != state.last_hash):
                log.warning(
                    "thread %s: Redis no longer has the log this process read up to v%d",
                    thread_id,
                    start,
                )
                self._cache.pop(thread_id)
                return None
            raw = raw[1:]
        # Another coroutine may have cached some of these while we were reading.
        raw = raw[state.version - start :]
        if raw:
            new = _decode(thread_id, raw, events)
            state = reduce(state, *new)
            state.last_hash, state.last_digest = chain_hash(raw[-1]), _digest(raw[-1])
            events = events + new
            self._remember(state, events)
        return state, events

    def _remember(self, state: ThreadState, events: list[Event]) -> None:
        if self.known(state.id) > state.version:
            return  # a newer read got there first
        self._cache.put(state, events)

    # --- writing ------------------------------------------------------------------------------

    async def append(
        self,
        state: ThreadState,
        events: Sequence[Event],
        *,
        delivery: str | None = None,
        fingerprint: str | None = None,
        enqueue: bool = True,
        release_if: ReleaseIf | None = None,
        trace: str = "",
        holder: str = "",
        taking: Lease | None = None,
    ) -> ThreadState:
        """Append ``events`` if the thread is still at ``state.version``; returns the new state.

        ``release_if`` is asked, with the state after the events and the events,
        whether this append also lets go of a lease: the holder has nothing left
        to do or deliver, so the thread is released (and its queue entry
        acknowledged) in the same round trip. The lease says ``held=False`` then.
        ``trace`` (a W3C traceparent) goes with the queue entry, if one is queued.

        ``fingerprint`` names what the delivery asked for (a hash of an API call's
        body): kept beside the delivery key, a replay with another one is refused.

        ``holder``: append only while this worker holds the thread's lease.

        ``taking``: first take this lease (its holder must be ``holder``), in the same
        script (``take``); its ``delivered`` is set once it is taken.

        Raises:
            VersionConflict: another writer got there first (re-read and retry;
                ``bot.engine.writes`` does).
            DuplicateDelivery: ``delivery`` was already recorded on this thread.
            ReusedDelivery: ... with another ``fingerprint``.
            NotHolder: ``holder`` does not hold the lease (with ``taking``: another does,
                and the lease's queue entry was acknowledged).
        """
        now = self.clock.now()
        tid = state.id
        # Recorded at the one clock's time, whatever they were built with, and chained (a
        # thread's first event to its thread), each with the id its hash makes (``record``).
        head = state.last_hash if state.exists else anchor(tid)
        stored: list[str] = []
        audit: list[str] = []
        # What is stored before them, as far as this process knows: what they repeat of it
        # is left out (``to_json``).
        cached = self._cache.get(tid)
        prior = cached[1] if cached and cached[0].version == state.version else []
        # The thread's events with these, as this process will cache them: ``after`` is
        # the start of it (a copy only for an append of several events).
        known = [*prior, *events]
        for at, event in enumerate(events, start=len(prior)):
            _stamp(event, now, to_link(head))
            raw, head = record(
                event, after=prior if at == len(prior) else known[:at], thread_id=tid
            )
            stored.append(raw)
            if (decided := to_record(tid, event, head)) is not None:
                audit.append(to_stored_record(decided))
        new = reduce(state, *events)
        opened = new.open_requests()
        before = {r.id for r in state.open_requests()}
        after = {r.id for r in opened}
        due = new.next_due()
        status = new.status.value
        old_status = state.status.value if state.exists else status
        lease = await release_if(new, events) if release_if is not None else None
        code, length, *rest = await self._append(
            keys={
                **_own_keys(tid),
                **reindex_keys(tid, new.agent, old_status, status, state.agent or new.agent),
            },
            args={
                "tid": tid,
                "expected": state.version,
                # Redis that lost events can grow the log to this length again with others:
                # the append is then refused, as at another length.
                "last": state.last_digest if state.exists and state.last_digest else "",
                "delivery": delivery or "",
                "print": (fingerprint or "") if delivery else "",
                "now": now,
                "seen_ttl": self._seen_ttl,
                "agent": new.agent,
                "created": _time(new.created_at),
                "due": "" if due is None else _time(due),
                "enqueue": "1" if enqueue else "0",
                "opened": " ".join(sorted(after - before)),
                "closed": " ".join(sorted(before - after)),
                "summaries": summaries(state, new, opened),
                "holder": lease.holder if lease else "",
                "entry": lease.entry_id if lease else taking.entry_id if taking else "",
                "audit": "\n".join(audit),
                "trace": trace if enqueue else "",
                "require": holder,
                "take_ms": taking.ms if taking else "",
            },
            rest=stored,
        )
        if taking is not None and code in (0, 1):
            taking.delivered = int(rest[1])
        if code in (4, 5):
            raise NotHolder(f"{holder} does not hold thread {tid}", thread_id=tid)
        if code == 3:
            raise ReusedDelivery(str(delivery), tid)
        if code == 2:
            raise DuplicateDelivery(f"delivery {delivery} already recorded", thread_id=tid)
        if code == 0:
            if int(length) < self.known(tid):
                # Redis lost writes (a restart within its fsync window): the log
                # is shorter than our copy, so our copy is no longer the truth.
                self._cache.pop(tid)
            elif rest and self.known(tid) == state.version:
                # What we missed came back with the refusal: the retry needs no read.
                self._absorb(tid, rest[0], state.version)
            raise VersionConflict(tid, state.version, int(length))
        new.last_hash, new.last_digest = head, _digest(stored[-1])
        cached = self._cache.get(tid)
        released = lease is not None and int(rest[0]) == 1
        if lease is not None and released:
            lease.held, lease.delivered = False, new.version
        if released and new.status in _FINISHED:
            self._cache.pop(tid)
        elif cached and cached[0].version == state.version:
            # ``known`` is the whole log when ``prior`` was (the cache's, before the round trip)
            self._remember(new, known if len(prior) == state.version else [*cached[1], *events])
        elif not state.exists:
            self._remember(new, known)
        # INFO when the thread begins or its status changes (four lines an approval cycle),
        # DEBUG for the appends between: each line costs about 5 % of a cycle's CPU.
        level = logging.INFO if status != old_status or not state.exists else logging.DEBUG
        if log.isEnabledFor(level):
            types = ",".join(e.type for e in events)
            log.log(level, "thread %s v%d %s (+%s)", tid, new.version, status, types)
        return new

    # --- leases -------------------------------------------------------------------------------

    async def take(
        self,
        thread_id: str,
        entry_id: str,
        holder: str,
        lease_ms: int,
        *,
        then: Sequence[Event] = (),
    ) -> Taken | None:
        """Lease the thread for ``holder`` and return the lease and the thread's state.

        None when another worker holds it: the entry is then acknowledged and
        the thread's timer brought to the lease's expiry, in case the holder died.

        ``then``: events to append once the lease is taken, in the same round trip,
        at the version this process has cached (a tool's start, when this process
        knows it is the thread's next step). They are appended only if the lease
        was taken and nothing was written since: ``Taken.appended`` says which.
        """
        cached = self.cached(thread_id) if then else None
        if cached is None or not cached.exists:
            taken = await self._take_lease(thread_id, entry_id, holder, lease_ms)
            return None if taken is None else Taken(*taken)
        # One script takes the lease, then appends.
        lease = Lease(thread_id, holder, entry_id, lease_ms)
        try:
            state = await self.append(cached, then, enqueue=False, holder=holder, taking=lease)
        except NotHolder:
            return None
        except VersionConflict as clash:
            # Taken, but the thread moved on: the refusal brought what this process missed.
            current = self.cached(thread_id)
            if current is None or current.version != clash.actual:
                current = await self.load(thread_id)
            return Taken(lease, current)
        return Taken(lease, state, appended=True)

    async def _take_lease(
        self, thread_id: str, entry_id: str, holder: str, lease_ms: int
    ) -> tuple[Lease, ThreadState] | None:
        known = self.known(thread_id)
        got, raw, delivered = await self._take(
            keys=_own_keys(thread_id),
            args={
                "tid": thread_id,
                "holder": holder,
                "lease_ms": lease_ms,
                "now": self.clock.now(),
                "entry": entry_id,
                "since": _overlap(known),
            },
        )
        if int(got) != 1:
            return None
        lease = Lease(thread_id, holder, entry_id, lease_ms, int(delivered))
        # Else evicted from the cache meanwhile, or Redis lost what it held (``_absorb``).
        if self.known(thread_id) >= known and (read := self._absorb(thread_id, raw, known)):
            return lease, read[0]
        return lease, await self.load(thread_id)

    async def release(self, lease: Lease, version: int, next_due: float | None) -> bool:
        """Let go of the thread and acknowledge its entry; False when it changed meanwhile."""
        tid = lease.thread_id
        done = await self._release(
            keys=_own_keys(tid),
            args={
                "tid": tid,
                "holder": lease.holder,
                "version": version,
                "due": "" if next_due is None else _time(next_due),
                "entry": lease.entry_id,
                "delivered": lease.delivered,
            },
        )
        if int(done) == 0:
            return False
        lease.held = False
        cached = self._cache.get(tid)
        if cached and cached[0].version == version and cached[0].status in _FINISHED:
            self._cache.pop(tid)
        return True

    async def renew(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend the leases still held; returns those that were lost."""
        kept = await asyncio.gather(
            *(
                self._renew(
                    keys={"lease": keys.lease(lease.thread_id)},
                    args={"holder": lease.holder, "lease_ms": lease.ms},
                )
                for lease in leases
            )
        )
        return [lease for lease, ok in zip(leases, kept, strict=True) if not int(ok)]


_STATUSES = [status.value for status in Status]

_FINISHED = {Status.DONE, Status.CANCELLED, Status.FAILED}
"""Threads let go of at these statuses leave this process's cache: nothing is left to step
or deliver, so their events would only sit there. Kept, every finished thread's objects
lived on until others pushed them out, and the collector walked them again and again
(5 % of a worker's CPU with 32 cycles in flight, ``bench.cycles``). A person writing to one
again costs one read of its whole log."""


def _scored(names: Sequence[str], scores: Sequence[float | None]) -> list[tuple[str, float]]:
    """The names whose sorted set holds the member, with its score there."""
    return [(n, score) for n, score in zip(names, scores, strict=True) if score is not None]


@lru_cache(maxsize=4096)
def _own_keys(tid: str) -> dict[str, str]:
    """The thread's own keys and those of its shard that its appends, takes and releases
    touch: built once while the thread is busy (a cycle makes about eight such calls).
    Shared: never change the dict."""
    shard = keys.shard_of(tid)
    return {
        "log": keys.log(tid),
        "meta": keys.meta(tid),
        "cursors": keys.cursors(shard),
        "seen": keys.seen(tid),
        "lease": keys.lease(tid),
        "prints": keys.prints(tid),
        "timers": keys.timers(shard),
        "queue": keys.queue(shard),
        "audit": keys.audit(shard),
    }


@lru_cache(maxsize=4096)
def _time(at: float) -> str:
    """A time as the scripts are sent it, exactly (``repr``, as hiredis writes a float).
    A thread's creation time and its requests' due times are sent again on every append
    and release, and writing a time out costs about 8,000 instructions."""
    return repr(at)


_SHA1 = hashlib.sha1(usedforsecurity=False)


def _digest(raw: str | bytes) -> str:
    """What the append script's ``redis.sha1hex`` makes of ``raw``, an event as stored
    (from a prepared hash object, as ``bot.domain.hashing`` does, for the same reason)."""
    h = _SHA1.copy()
    h.update(raw.encode() if isinstance(raw, str) else raw)
    return h.hexdigest()


def _stamp(event: Event, at: float, prev: str | None) -> None:
    """Set when ``event`` is recorded and the hash it links to, straight into its fields:
    pydantic's checked assignment costs more than the rest of recording it."""
    event.__dict__["at"] = at
    event.__dict__["prev"] = prev


def _overlap(known: int) -> int:
    """Where to read a thread's log from when this process has cached ``known`` of its
    events: one before them, the last it has, to check Redis still has it (``_absorb``)."""
    return max(known - 1, 0)


def _decode(thread_id: str, raws: Sequence[str | bytes], before: Sequence[Event]) -> list[Event]:
    """Parse stored events that follow ``before``; an unreadable one is a ``StoreError``."""
    try:
        return from_log(raws, before=before, thread_id=thread_id)
    except (ValidationError, ValueError) as exc:
        raise StoreError(f"thread {thread_id} has an unreadable event: {exc}") from exc
