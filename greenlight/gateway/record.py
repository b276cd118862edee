"""The gateway's call log: one JSON line per call it forwarded or refused.

Each line is written (and flushed to disk) before the upstream server sees the call, so
a call is never forwarded unrecorded. The log is also the gateway's memory across
restarts: an approval whose call was already forwarded or refused is spent, and the same
call made again asks again instead of reusing it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from greenlight.errors import ConfigError

Outcome = Literal["forwarded", "rejected", "expired", "cancelled", "pending", "error"]


@dataclass(frozen=True)
class Entry:
    """One call, as the log records it."""

    tool: str
    arguments: dict[str, Any]
    """What was forwarded (an approver's edit, if ``edited``), or what was refused."""
    outcome: Outcome
    """``forwarded``; ``rejected``, ``expired`` or ``cancelled`` by people; ``pending``
    when the gateway stopped waiting (the same call again waits on the same request);
    ``error`` when approval could not be asked for."""
    gate: str | None = None
    """The gate that matched; None: the call was not gated."""
    request_id: str | None = None
    edited: bool = False
    by: list[str] = field(default_factory=list)
    reason: str | None = None
    at: float = field(default_factory=time.time)


class CallLog:
    """An append-only JSON-lines file of :class:`Entry`.

    Raises:
        ConfigError: the file (or its directory, which is made if missing) cannot be
            read or written: found at start-up, not by the first call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise ConfigError(f"call log {path}: cannot be written: {exc.strerror or exc}") from exc
        self.spent = self._read_spent()

    def _read_spent(self) -> set[str]:
        """The approvals whose call was already forwarded or refused, from earlier runs."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"call log {self.path}: cannot be read: {exc}") from exc
        spent = set()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: its call was never forwarded
            if not isinstance(entry, dict) or entry.get("outcome") == "pending":
                continue
            if entry.get("request_id"):
                spent.add(str(entry["request_id"]))
        return spent

    def write(self, entry: Entry) -> None:
        line = json.dumps(asdict(entry), default=str, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            if entry.request_id and entry.outcome != "pending":
                self.spent.add(entry.request_id)
