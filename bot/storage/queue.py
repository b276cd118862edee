"""The work queue: one Redis Stream per shard, read by every worker through one group.

At-least-once: an entry is acknowledged only after its thread was stepped
(``ack``, run inside the thread log's release script); entries of a dead
consumer are reclaimed. Each worker consumes every shard: on one Redis with a
single blocking read over all the streams, sent on a connection of the worker's
own (a ``Wire``: a blocking read holds up whatever follows it there); on a
cluster with one blocking read per shard kept open across calls (a read cannot
span slots there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.domain.clock import Clock
from bot.storage import keys
from bot.storage.connection import Client, is_cluster
from bot.storage.script import Script
from bot.storage.wire import Wire

# ``trace``: the writer's W3C traceparent, so the worker's step joins its trace ('' if none).
ENQUEUE = """
local function enqueue(stream, tid, trace)
  if trace ~= nil and trace ~= '' then
    redis.call('XADD', stream, '*', 't', tid, 'tp', trace)
  else
    redis.call('XADD', stream, '*', 't', tid)
  end
end
"""

ACK = f"""
local function ack(stream, entry)
  if entry ~= '' then
    redis.call('XACK', stream, '{keys.GROUP}', entry)
    redis.call('XDEL', stream, entry)
  end
end
"""


# XGROUP DELCONSUMER drops the consumer's pending entries with it: a consumer goes only when
# it holds none, checked in the same script. Deleting one that holds none loses nothing, and a
# worker still reading is given a new one by its next read.
_LEAVE = Script(
    f"""
local pending = redis.pcall('XPENDING', K.queue, '{keys.GROUP}', '-', '+', 1, A.consumer)
if pending.err or #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', K.queue, '{keys.GROUP}', A.consumer)
return 1
""",
    keys=("queue",),
    args=("consumer",),
)

_PRUNE = Script(
    f"""
local keep = {{}}
for i = REST, #ARGV do keep[ARGV[i]] = true end
local consumers = redis.pcall('XINFO', 'CONSUMERS', K.queue, '{keys.GROUP}')
if consumers.err then return 0 end
local gone = 0
for _, consumer in ipairs(consumers) do
  local name, pending
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1] end
    if consumer[i] == 'pending' then pending = consumer[i + 1] end
  end
  if not keep[name] and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', K.queue, '{keys.GROUP}', name)
    gone = gone + 1
  end
end
return gone
""",
    keys=("queue",),
)
"""The group's consumers that hold no entry, but those named after the arguments (workers
seen lately)."""


class Entry(NamedTuple):
    """A queue entry."""

    id: str
    """The stream entry's id."""
    thread_id: str
    trace: str = ""
    """The W3C traceparent of the write that queued it; empty when none."""
    deliveries: int = 1
    """How many times the group handed it out, this time included (the stream's delivery
    count): 1 when read, more when reclaimed."""


class Queue:
    """One consumer's view of every shard's stream.

    Args:
        redis: a client with ``decode_responses=True``.
        consumer: this worker's unique name.
    """

    def __init__(self, redis: Client, consumer: str, clock: Clock) -> None:
        self.redis = redis
        self.consumer = consumer
        self.clock = clock
        streams = [keys.queue(s) for s in range(keys.SHARDS)]
        self._read_all = ["STREAMS", *streams, *[">"] * len(streams)]
        self._wire = Wire.for_client(redis) if isinstance(redis, Redis) else None
        self._readers: dict[int, asyncio.Task[Any]] = {}
        self._cursors: dict[int, str] = {}
        """Where each shard's next ``reclaim`` goes on in its pending entries."""
        self._leave = _LEAVE.bind(redis)
        self._prune = _PRUNE.bind(redis)

    async def ensure_groups(self) -> None:
        """Create each shard's stream and group if missing (after a restart without AOF)."""
        for shard in range(keys.SHARDS):
            try:
                await self.redis.xgroup_create(keys.queue(shard), keys.GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer, waiting up to ``block_ms`` (None: do not wait)."""
        if self._wire is not None:
            block = () if block_ms is None else ("BLOCK", block_ms)
            read = ("XREADGROUP", "GROUP", keys.GROUP, self.consumer, "COUNT", count, *block)
            return _entries(await self._wire.send(*read, *self._read_all))
        if block_ms is None:
            each = await asyncio.gather(
                *(self._read_shard(s, count, None) for s in range(keys.SHARDS))
            )
            return [entry for entries in each for entry in entries]
        for shard in range(keys.SHARDS):
            if shard not in self._readers:
                self._readers[shard] = asyncio.create_task(self._read_shard(shard, count, block_ms))
        pending = set(self._readers.values())
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        found: list[Entry] = []
        for shard, task in list(self._readers.items()):
            if task in done:
                del self._readers[shard]
                found.extend(task.result())
        return found

    async def _read_shard(self, shard: int, count: int, block_ms: int | None) -> list[Entry]:
        """One shard's new entries, on a cluster: sent straight to the node that holds the
        stream, since the cluster client asks a node which keys an XREADGROUP names
        (``COMMAND GETKEYS``, a round trip) before each one. A moved slot fails this read,
        and the client's map of the slots is mended for the next."""
        assert is_cluster(self.redis)
        stream = keys.queue(shard)
        args: list[Any] = ["XREADGROUP", "GROUP", keys.GROUP, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        node = self.redis.get_node_from_key(stream)
        got: Any = await self.redis.execute_command(
            *args, "STREAMS", stream, ">", target_nodes=node
        )
        return _entries(got)

    async def close(self) -> None:
        """Stop the cluster readers still waiting (their entries are reclaimed if any)."""
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()

    async def reclaim(self, min_idle_ms: int, count: int = 100) -> list[Entry]:
        """Entries another consumer took and never acknowledged (it died, or its step failed),
        with how many times each was delivered.

        Each shard's sweep goes on where its last one stopped (the cursor XAUTOCLAIM
        returns, back at the start once it reached the end), so entries idle long enough
        behind many that are not are reached too. A sweep claims up to ``count`` entries a
        shard, and looks at up to ten times as many (XAUTOCLAIM's bound).
        """
        found: list[Entry] = []
        for shard in range(keys.SHARDS):
            stream = keys.queue(shard)
            result: Any = await self.redis.xautoclaim(
                stream,
                keys.GROUP,
                self.consumer,
                min_idle_ms,
                self._cursors.get(shard, "0-0"),
                count=count,
            )
            self._cursors[shard] = str(result[0])
            claimed = [(str(eid), fields) for eid, fields in result[1] if fields]
            if not claimed:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for eid, _ in claimed:
                pipe.xpending_range(stream, keys.GROUP, eid, eid, 1, self.consumer)
            counts = await pipe.execute()
            for (eid, fields), pending in zip(claimed, counts, strict=True):
                entry = _entry(eid, fields)
                # Gone from the pending list meanwhile: acknowledged by its thread's holder.
                if pending:
                    found.append(entry._replace(deliveries=int(pending[0]["times_delivered"])))
        return found

    async def ack(self, entry: Entry) -> None:
        """Acknowledge (and delete) an entry without its thread's lease: one given up on."""
        stream = keys.queue(keys.shard_of(entry.thread_id))
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, keys.GROUP, entry.id)
        pipe.xdel(stream, entry.id)
        await pipe.execute()

    async def depth(self) -> int:
        """Entries waiting in every shard (read or not)."""
        return sum([int(await self.redis.xlen(keys.queue(s))) for s in range(keys.SHARDS)])

    async def heartbeat(self) -> None:
        await self.redis.zadd(keys.workers(), {self.consumer: self.clock.now()})

    async def leave(self) -> None:
        """This worker stops: its heartbeat goes, and its consumer in each shard's group
        where it holds no entry (where it does, another worker reclaims the entries, and
        ``prune`` removes the consumer later)."""
        await self.redis.zrem(keys.workers(), self.consumer)
        args = {"consumer": self.consumer}
        await asyncio.gather(
            *(self._leave(keys={"queue": keys.queue(s)}, args=args) for s in range(keys.SHARDS))
        )

    async def prune(self, age: float) -> int:
        """Forget the workers not seen for ``age`` seconds (they died, or stopped before
        their entries were reclaimed): their heartbeats, and their consumers in each shard's
        group that hold no entry. Returns how many consumers went."""
        await self.redis.zremrangebyscore(keys.workers(), "-inf", f"({self.clock.now() - age!r}")
        seen = [str(name) for name in await self.redis.zrange(keys.workers(), 0, -1)]
        gone = await asyncio.gather(
            *(self._prune(keys={"queue": keys.queue(s)}, rest=seen) for s in range(keys.SHARDS))
        )
        return sum(int(n) for n in gone)


async def last_heartbeat(redis: Client) -> tuple[str, float] | None:
    """The worker seen last and when, for readiness checks."""
    seen = await redis.zrevrange(keys.workers(), 0, 0, withscores=True)
    return (str(seen[0][0]), float(seen[0][1])) if seen else None


async def backlog(redis: Client) -> tuple[int, float | None]:
    """Entries not yet acknowledged in every shard, and when the oldest was queued (unix s)."""
    pipe = redis.pipeline(transaction=False)
    for s in range(keys.SHARDS):
        pipe.xlen(keys.queue(s))
        pipe.xrange(keys.queue(s), count=1)
    got = await pipe.execute()
    depth = sum(int(n) for n in got[0::2])
    firsts = [int(str(rows[0][0]).split("-")[0]) / 1000 for rows in got[1::2] if rows]
    return depth, min(firsts) if firsts else None


def _entries(got: Any) -> list[Entry]:
    """The entries of an XREADGROUP answer: None when there were none, else each
    stream's in a map (RESP3, as Redis sends it) or in pairs (as redis-py parses it)."""
    per_stream = got.values() if isinstance(got, dict) else [entries for _, entries in got or []]
    return [_entry(eid, fields) for entries in per_stream for eid, fields in entries]


def _entry(eid: str, fields: Mapping[str, str] | list[str]) -> Entry:
    """An entry from its fields: a dict as redis-py parses them, or as Redis sends them
    (a wire's answer): name, value, name, value."""
    if isinstance(fields, list):
        pairs = iter(fields)
        fields = dict(zip(pairs, pairs, strict=True))
    return Entry(eid, fields["t"], fields.get("tp", ""))
