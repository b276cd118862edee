"""What one thread's event log says about the chaos soak: pure, no I/O.

The deploy agent's inventory lives in each worker's memory and dies with it,
so the tool's side effect is counted from the log: a ``tool_started`` event is
written before every run (invariant 6), a ``tool_result`` after it. Decisions
are the ``approval_decision`` events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TOOL = "deploy"


@dataclass(frozen=True)
class Audit:
    """One thread, read back at the end of the soak.

    Attributes:
        status: the thread's status (``done``, ``awaiting_human``...).
        asked: approval requests made.
        decisions: decisions recorded per request id, in order.
        runs: ``tool_started`` events of the deploy tool.
        extra_results: ``tool_result`` events beyond one per call.
        unapproved: deploy runs whose request was not approved.
        unknown: results recorded as "outcome unknown" (a run cut by a crash).
        first_doubled_at: when the first doubled run or decision was recorded.
        last_at: when the last event was recorded.
        trail: the event types in order, results with their outcome.
    """

    status: str
    asked: int
    decisions: dict[str, list[str]]
    runs: int
    extra_results: int
    unapproved: int
    unknown: int
    first_doubled_at: float | None
    last_at: float
    trail: list[str] = field(default_factory=list)

    @property
    def doubled_runs(self) -> bool:
        return self.runs > 1 or self.extra_results > 0 or self.unapproved > 0

    @property
    def doubled_decisions(self) -> bool:
        return any(len(d) > 1 for d in self.decisions.values())

    @property
    def approved(self) -> bool:
        return any(d[:1] == ["approve"] for d in self.decisions.values())


def from_thread(thread: dict[str, Any]) -> Audit:
    """Audit a thread as ``GET /threads/{id}`` returns it."""
    events: Sequence[dict[str, Any]] = thread.get("events") or []
    tools: dict[str, str] = {}
    request_of: dict[str, str] = {}
    decisions: dict[str, list[str]] = {}
    started: Counter[str] = Counter()
    results: Counter[str] = Counter()
    unapproved = unknown = 0
    doubled_at: float | None = None
    trail: list[str] = []
    for e in events:
        kind = e["type"]
        trail.append(f"{kind}({e['outcome']})" if kind == "tool_result" else kind)
        if kind == "tool_call":
            tools[e["call_id"]] = e["tool"]
        elif kind == "approval_requested":
            request_of[e["call_id"]] = e["request_id"]
            decisions.setdefault(e["request_id"], [])
        elif kind == "approval_decision":
            decisions.setdefault(e["request_id"], []).append(e["decision"])
            if len(decisions[e["request_id"]]) > 1:
                doubled_at = doubled_at or e["at"]
        elif kind == "tool_started" and tools.get(e["call_id"]) == TOOL:
            started[e["call_id"]] += 1
            votes = decisions.get(request_of.get(e["call_id"], ""), [])
            if votes[:1] != ["approve"]:
                unapproved += 1
            if sum(started.values()) > 1 or votes[:1] != ["approve"]:
                doubled_at = doubled_at or e["at"]
        elif kind == "tool_result" and tools.get(e["call_id"]) == TOOL:
            results[e["call_id"]] += 1
            unknown += e["outcome"] == "unknown"
            if results[e["call_id"]] > 1:
                doubled_at = doubled_at or e["at"]
    return Audit(
        status=thread.get("status", ""),
        asked=len(request_of),
        decisions=decisions,
        runs=sum(started.values()),
        extra_results=sum(n - 1 for n in results.values() if n > 1),
        unapproved=unapproved,
        unknown=unknown,
        first_doubled_at=doubled_at,
        last_at=float(events[-1]["at"]) if events else 0.0,
        trail=trail,
    )
