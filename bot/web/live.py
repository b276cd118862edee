"""Live updates for open pages: every decision, answer and expiry, and a change to what
waits, as server-sent events.

Decisions land in the audit streams in the same round trip as the decision itself,
whichever channel took it (Slack, email, the REST API, the inbox), so following those
streams sees them all, from any web or worker process. Between two reads the follower
also looks at the waiting index's versions: when they moved (a request opened), pages
listing what waits are told. One follower per web process hands each to every open
``/inbox/events`` stream; it runs while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from bot.storage.audit import AuditLog
from bot.storage.indexes import Indexes

log = logging.getLogger(__name__)

BLOCK_MS = 500
"""How long one read of the streams waits: on a cluster, the longest an update waits."""
KEEPALIVE = 15.0
"""Seconds between comments on a quiet stream, so proxies keep it open."""
MAX_STREAM = 600.0
"""Seconds one stream lasts; the browser's EventSource reconnects by itself."""


class Live:
    """Fans the audit streams out to the open event streams of this process."""

    def __init__(self, audit: AuditLog, indexes: Indexes) -> None:
        self.audit = audit
        self.indexes = indexes
        self._listeners: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._follower: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def events(self, *, lasting: float = MAX_STREAM) -> AsyncIterator[str]:
        """One browser's stream: ``text/event-stream`` chunks, ``ready`` once the streams are
        followed, then a ``decided`` event per record and a ``waiting`` event when what
        waits changed."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        self._listeners.add(queue)
        self._start()
        try:
            await self._ready.wait()
            # Pages re-read themselves on ``ready``: what was decided between their rendering
            # (or a lost connection) and this moment is not missed.
            yield "retry: 1000\nevent: ready\ndata: {}\n\n"
            deadline = asyncio.get_running_loop().time() + lasting
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    kind, data = await asyncio.wait_for(queue.get(), min(KEEPALIVE, left))
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        finally:
            self._listeners.discard(queue)
            if not self._listeners:
                await self._stop()

    def _start(self) -> None:
        if self._follower is None or self._follower.done():
            self._ready.clear()
            self._follower = asyncio.create_task(self._follow())

    async def _stop(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower

    async def _follow(self) -> None:
        after = await self.audit.latest()
        versions = await self.indexes.waiting_versions()
        self._ready.set()
        while True:
            try:
                records, after = await self.audit.follow(after, BLOCK_MS)
                now = await self.indexes.waiting_versions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: keep the pages' streams open
                log.warning("live updates: reading the audit streams failed: %s", exc)
                await asyncio.sleep(1)
                continue
            for record in records:
                self._send("decided", _public(record))
            if now != versions:
                versions = now
                self._send("waiting", {})

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page misses one
                queue.put_nowait((kind, data))


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """What a page needs of a record to know it changed."""
    keep = ("request", "thread", "kind", "outcome", "by", "channel", "at")
    return {k: record.get(k) for k in keep}
