"""A channel's own small state: its ids per thread, and external ids that lead to a thread.

Slack keeps the timestamps of the messages it posted for a thread, email the
Message-IDs it sent; both map an external id (a Slack thread, a Message-ID
someone replies to) back to the thread. Each channel sees only its own.

An external id is looked up without knowing its thread, so its key (an alias) is
in a slot of its own. Each is also recorded in the thread's own channel state
(``alias:<id>``), which the thread log's forget script reads as it removes the
thread (``linked``); the aliases are then removed one by one (``unlink``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.script import Script

_ALIAS = "alias:"
"""The prefix of a thread's channel-state fields that record its aliases."""

LINKED = f"""
local function linked(state)
  local found = {{}}
  for _, field in ipairs(redis.call('HKEYS', state)) do
    if string.sub(field, 1, {len(_ALIAS)}) == '{_ALIAS}' then
      found[#found + 1] = string.sub(field, {len(_ALIAS) + 1})
    end
  end
  return found
end
"""
"""The external ids recorded in a thread's channel state (``state``, its key) as its aliases."""

# An alias goes only while it still leads to the thread that is removed.
_UNLINK = Script(
    """
if redis.call('GET', K.alias) ~= A.tid then return 0 end
return redis.call('DEL', K.alias)
""",
    keys=("alias",),
    args=("tid",),
)

# Sliding window: forget uses older than the window, then take one if any is left.
_TAKE = Script(
    """
redis.call('ZREMRANGEBYSCORE', K.rate, '-inf', A.since)
if redis.call('ZCARD', K.rate) >= tonumber(A.limit) then return 0 end
redis.call('ZADD', K.rate, A.now, A.member)
redis.call('PEXPIRE', K.rate, A.ttl_ms)
return 1
""",
    keys=("rate",),
    args=("since", "limit", "now", "member", "ttl_ms"),
)


class ChannelState:
    """The state store of one channel.

    Args:
        redis: a client with ``decode_responses=True``.
        channel: the channel's name; its keys are apart from every other channel's.
    """

    def __init__(self, redis: Client, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self._take = _TAKE.bind(redis)

    async def get(self, thread_id: str, field: str) -> str | None:
        found = await self.redis.hget(keys.channel_state(thread_id, self.channel), field)
        return None if found is None else str(found)

    async def put(self, thread_id: str, field: str, value: str) -> None:
        await self.redis.hset(keys.channel_state(thread_id, self.channel), field, value)

    async def all(self, thread_id: str) -> dict[str, str]:
        found = await self.redis.hgetall(keys.channel_state(thread_id, self.channel))
        return {str(k): str(v) for k, v in found.items()}

    async def link(self, external: str, thread_id: str) -> None:
        """Remember that an external id belongs to a thread, until the thread is removed."""
        # Recorded with the thread first, so that removing the thread finds every alias.
        await self.redis.hset(keys.channel_state(thread_id, self.channel), _ALIAS + external, "")
        await self.redis.set(keys.alias(self.channel, external), thread_id)

    async def resolve(self, external: str) -> str | None:
        """The thread an external id belongs to, if any."""
        found = await self.redis.get(keys.alias(self.channel, external))
        return str(found) if found else None

    async def remember(self, name: str, member: str) -> None:
        """Add ``member`` to the channel's set ``name`` (a no-op when it is there)."""
        await self.redis.sadd(keys.members(self.channel, name), member)

    async def remembered(self, name: str) -> set[str]:
        """Everyone ``remember`` added to ``name``."""
        return {str(m) for m in await self.redis.smembers(keys.members(self.channel, name))}

    async def take(self, key: str, *, limit: int, per: float, now: float) -> bool:
        """Use one of ``limit`` uses of ``key`` allowed per ``per`` seconds, as of ``now``.

        Returns:
            False, and nothing used, when all of them were used in the last ``per`` seconds.
        """
        if limit <= 0:
            return False
        args = {
            "since": now - per,
            "limit": limit,
            "now": now,
            "member": f"{now!r}:{os.urandom(6).hex()}",
            "ttl_ms": max(1, int(per * 1000)),
        }
        return bool(await self._take(keys={"rate": keys.rate(self.channel, key)}, args=args))


async def unlink(redis: Client, channel: str, thread_id: str, externals: Sequence[str]) -> None:
    """Remove the aliases ``externals`` of a thread that was removed (``linked`` found them),
    each only while it still leads to ``thread_id``."""
    unlink_one = _UNLINK.bind(redis)
    await asyncio.gather(
        *(
            unlink_one(keys={"alias": keys.alias(channel, external)}, args={"tid": thread_id})
            for external in externals
        )
    )
