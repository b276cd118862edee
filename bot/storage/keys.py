"""Every Redis key Greenlight uses, in one place.

Keys of one thread share the hash tag ``{th_…}`` so a script may touch them
together on Redis Cluster. The global indexes below are derived: each can be
rebuilt from the thread logs.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "gl"

THREAD_ID = re.compile(r"^th_[0-9a-f]{20}$")
REQUEST_ID = re.compile(r"^(th_[0-9a-f]{20})\.r[0-9a-f]{8}$")


def new_thread_id() -> str:
    return "th_" + secrets.token_hex(10)


def thread_id_for(channel: str, conversation: str) -> str:
    """The thread of an external conversation: derived, so two first messages agree."""
    digest = hashlib.sha256(f"{channel}\x00{conversation}".encode()).hexdigest()
    return "th_" + digest[:20]


def new_request_id(thread_id: str) -> str:
    """A request id names its thread, so a decision needs no index lookup."""
    return f"{thread_id}.r{secrets.token_hex(4)}"


def thread_of_request(request_id: str) -> str | None:
    match = REQUEST_ID.match(request_id)
    return match.group(1) if match else None


def is_thread_id(value: str) -> bool:
    return bool(THREAD_ID.match(value))


# --- per thread (hash-tagged) ----------------------------------------------------------------


def events(tid: str) -> str:
    """List of JSON events; its length is the thread's version. Never expires."""
    return f"{PREFIX}:{{{tid}}}:events"


def meta(tid: str) -> str:
    """Hash of derived fields (status, agent, version) for listings. Never expires."""
    return f"{PREFIX}:{{{tid}}}:meta"


def seen(tid: str) -> str:
    """Sorted set of inbound delivery keys by arrival time; trimmed to the dedupe TTL."""
    return f"{PREFIX}:{{{tid}}}:seen"


def lease(tid: str) -> str:
    """The worker stepping this thread; expires with the lease TTL unless renewed."""
    return f"{PREFIX}:{{{tid}}}:lease"


def outbox(tid: str) -> str:
    """How many events have been handed to the channels. Never expires."""
    return f"{PREFIX}:{{{tid}}}:outbox"


# --- global (derived indexes, queue, timers) -----------------------------------------------


def threads() -> str:
    """Sorted set: every thread id by creation time."""
    return f"{PREFIX}:threads"


def by_agent(agent: str) -> str:
    """Sorted set: thread ids of one agent, by creation time."""
    return f"{PREFIX}:agent:{agent}"


def by_status(status: str) -> str:
    """Sorted set: thread ids in one status, by last update."""
    return f"{PREFIX}:status:{status}"


def open_requests() -> str:
    """Sorted set: open request ids by creation time."""
    return f"{PREFIX}:requests:open"


def timers() -> str:
    """Sorted set: thread id scored by when a timer (expiry, reminder) next needs it."""
    return f"{PREFIX}:timers"


def retries() -> str:
    """Sorted set: outbound deliveries to retry (JSON job) scored by due time."""
    return f"{PREFIX}:retries"


def queue() -> str:
    """Stream of thread ids with work to do; consumer group ``GROUP``."""
    return f"{PREFIX}:queue"


GROUP = "workers"


def workers() -> str:
    """Sorted set: worker name by last heartbeat (for /readyz)."""
    return f"{PREFIX}:workers"


def alias(channel: str, key: str) -> str:
    """An external id (an email Message-ID we sent) → thread id. Never expires."""
    return f"{PREFIX}:alias:{channel}:{key}"


def slack(tid: str) -> str:
    """Hash of the Slack channel's posts for one thread; never expires, like the log.

    ``post:<event id>:<part>`` → ``<channel> <ts>`` makes delivering an event twice a
    no-op; ``card:<request id>:<channel>`` → ``<ts>`` finds every card to update.
    """
    return f"{PREFIX}:{{{tid}}}:slack"


def email_sent(tid: str) -> str:
    """Hash of ``<event or inbound id>:<recipient>`` → send time: emails already sent,
    so an at-least-once redelivery sends each once. Never expires, like the log."""
    return f"{PREFIX}:{{{tid}}}:email:sent"
