"""Every Redis key Greenlight uses, in one place, and the shard each one lives in.

Threads are spread over ``SHARDS`` shards by a hash of their id. A shard is a
hash tag: every key of a thread (its log, lease, dedupe set, channel state) and
every key of its shard (queue, timers, retries, delivery cursors, indexes)
carry the same tag, so each script touches one slot and the same code runs on
one Redis and on Redis Cluster. The tags are chosen so the shards' slots are
spread evenly over the slot space, hence over a cluster's primaries.

Each family is written by one module, named below; the indexes are derived
and can be rebuilt from the logs.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "gl"
SHARDS = 16
"""Fixed: changing it moves every thread to another shard (a migration)."""
GROUP = "workers"
"""The consumer group of every shard's queue."""


def _spread_tags() -> tuple[str, ...]:
    """One tag per shard whose slot falls in the shard's equal share of the slot space."""
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for shard in range(SHARDS):
        n = 0
        while key_slot(f"{{{PREFIX}{shard}.{n}}}".encode()) // width != shard:
            n += 1
        tags.append(f"{{{PREFIX}{shard}.{n}}}")
    return tuple(tags)


TAGS = _spread_tags()


@lru_cache(maxsize=16_384)  # bounded: every thread id a process ever saw would stay
def shard_of(thread_id: str) -> int:
    return zlib.crc32(thread_id.encode()) % SHARDS


def tag_of(thread_id: str) -> str:
    return TAGS[shard_of(thread_id)]


# --- one thread's keys: owned by bot.storage.threadlog, except channel state --------------


def log(tid: str) -> str:
    """List of JSON events; its length is the thread's version. Never expires."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:log"


def meta(tid: str) -> str:
    """Hash of derived fields (status, agent, version, times) and ``cursor`` (how many of the
    thread's events the channels have been handed), as threads were stored before: no longer
    written; the thread's next append removes it (the indexes hold its fields, ``cursors``
    its cursor). Never expires."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:meta"


def seen(tid: str) -> str:
    """Sorted set of inbound delivery keys by arrival; trimmed to the dedupe window."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:seen"


def prints(tid: str) -> str:
    """Hash of delivery key → fingerprint of the request it recorded (Idempotency-Key reuse);
    expires a dedupe window after the thread's last keyed write."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:prints"


def lease(tid: str) -> str:
    """The worker stepping this thread; expires with the lease unless renewed."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:lease"


def channel_state(tid: str, channel: str) -> str:
    """Hash of one channel's own ids for one thread (Slack posts, emails sent, the thread's
    aliases), written by ``bot.storage.channelstate``; never expires, like the log."""
    return f"{PREFIX}:{tag_of(tid)}:{tid}:ch:{channel}"


# --- one shard's keys ------------------------------------------------------------------------


def queue(shard: int) -> str:
    """Stream of thread ids with work to do, consumer group ``GROUP`` (``bot.storage.queue``)."""
    return f"{PREFIX}:{TAGS[shard]}:queue"


def cursors(shard: int) -> str:
    """Hash: thread id -> how many of its events the channels have been handed, kept only
    while some were not (``bot.storage.threadlog``)."""
    return f"{PREFIX}:{TAGS[shard]}:cursors"


def timers(shard: int) -> str:
    """Sorted set: thread id by when a timer (expiry, reminder, a lease to check) next needs
    it (``bot.storage.timers``)."""
    return f"{PREFIX}:{TAGS[shard]}:timers"


def retries(shard: int) -> str:
    """Sorted set: outbound deliveries to retry (JSON job) by due time
    (``bot.storage.retries``)."""
    return f"{PREFIX}:{TAGS[shard]}:retries"


def threads(shard: int) -> str:
    """Sorted set: thread ids by creation time, as the shard's threads were listed before
    ``agents`` (no longer written; a listing moves what it holds to ``agents`` and deletes
    it) (``bot.storage.indexes``, like all below)."""
    return f"{PREFIX}:{TAGS[shard]}:threads"


def agents(shard: int) -> str:
    """Sorted set: the names of the agents the shard has threads of, by when their first
    thread here was created: every thread is in one of their ``by_agent`` indexes, so their
    union lists all threads."""
    return f"{PREFIX}:{TAGS[shard]}:agents"


def by_agent(shard: int, agent: str) -> str:
    """Sorted set: thread ids of one agent by creation time."""
    return f"{PREFIX}:{TAGS[shard]}:agent:{agent}"


def by_status(shard: int, status: str) -> str:
    """Sorted set: thread ids in one status by last update."""
    return f"{PREFIX}:{TAGS[shard]}:status:{status}"


def open_requests(shard: int) -> str:
    """Sorted set: open request ids by creation time."""
    return f"{PREFIX}:{TAGS[shard]}:open"


def waiting(shard: int) -> str:
    """Hash: open request id -> JSON summary of it (agent, tool, urgency, expiry, approvers),
    what the web inbox lists and filters without loading each thread."""
    return f"{PREFIX}:{TAGS[shard]}:waiting"


def waiting_version(shard: int) -> str:
    """String ``<count>:<server time>``: changed whenever the shard's ``waiting`` hash
    changes, so a reader re-reads only the shards that changed; never to a value seen
    before, even after Redis lost writes (a plain counter of before is read as the count)."""
    return f"{PREFIX}:{TAGS[shard]}:waiting:v"


def audit(shard: int) -> str:
    """Stream of audit records of the shard's decisions, appended with them; never trimmed
    (``bot.storage.audit``)."""
    return f"{PREFIX}:{TAGS[shard]}:audit"


# --- global: one key each, so any slot --------------------------------------------------------


def workers() -> str:
    """Sorted set: worker name by last heartbeat, for /readyz; a worker that stops removes its
    name, and names not seen for a day are pruned (``bot.storage.queue``)."""
    return f"{PREFIX}:workers"


def alias(channel: str, key: str) -> str:
    """An external id (an email Message-ID, a Slack thread) → thread id; recorded in the
    thread's ``channel_state`` too, and removed with the thread when retention forgets it
    (``bot.storage.channelstate``)."""
    return f"{PREFIX}:alias:{channel}:{key}"


def members(channel: str, name: str) -> str:
    """Set: people one channel remembers under a name (Slack: who opened their App Home, so
    it is republished when something changes for them); never expires
    (``bot.storage.channelstate``)."""
    return f"{PREFIX}:members:{channel}:{name}"


def rate(channel: str, key: str) -> str:
    """Sorted set: one channel's recent uses of something it limits (answers sent to one
    sender), scored by when; entries older than the window are dropped on each use, and
    the key expires a window after its last use (``bot.storage.channelstate``)."""
    return f"{PREFIX}:rate:{channel}:{key}"


def open_key(digest: str) -> str:
    """String: the thread whose request a call named by an ``open_key`` of ``POST
    /approvals`` (or an Idempotency-Key that joined that request) was last given, by the
    SHA-256 of the caller's key (``bot.storage.openkeys``). It decides nothing (whether the
    request is still open is read from the thread); it expires a day after the request
    would, and is kept while calls join it."""
    return f"{PREFIX}:openkey:{digest}"


# --- API tokens: one hash tag, so a token's scripts touch one slot (``bot.storage.tokens``) ---

TOKENS_TAG = "{gl.tokens}"


def token_names() -> str:
    """Hash: token name → JSON of its scope, identity, creation time and SHA-256 digest.
    Never the token itself; never expires (revoking deletes the entry)."""
    return f"{PREFIX}:{TOKENS_TAG}:names"


def token_digests() -> str:
    """Hash: SHA-256 digest of a token → its name, to find a token by what a caller sent."""
    return f"{PREFIX}:{TOKENS_TAG}:digests"


def token_used() -> str:
    """Hash: token name → when it last authenticated a request (Unix seconds)."""
    return f"{PREFIX}:{TOKENS_TAG}:used"


# --- web sign-in links (``bot.storage.signin``) ----------------------------------------------


def signin_link(digest: str) -> str:
    """String: JSON of the address a sign-in link is for, where it leads and when it
    expires, by the SHA-256 digest of the link's token (never the token). Taken with GETDEL
    (single use); expires shortly after the link does."""
    return f"{PREFIX}:signin:link:{digest}"


def signin_session(digest: str) -> str:
    """String: the address signed in by a web session, by the SHA-256 digest of the
    session's id (never the id, which only the signed cookie holds). Expires with the
    session (``SESSION_MAX_AGE``); deleted at sign-out, so a copy of the cookie is signed
    out too."""
    return f"{PREFIX}:signin:session:{digest}"
