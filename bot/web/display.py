"""What the inbox pages show of a thread: its timeline, a request's arguments (long values
folded, edits as a diff) and times. Pure: events and states in, rows out."""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from typing import Any

from bot.domain.events import (
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ContextFetched,
    DeliveryFailed,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Paused,
    Reminded,
    Resumed,
    ThreadCreated,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)

FOLD_AT = 120
"""Characters of a value shown before it is folded behind a disclosure."""


@dataclass(frozen=True)
class Row:
    """One line of a thread's timeline."""

    at: float
    kind: str
    """A short class for the row (``message``, ``tool``, ``request``, ``decision``,
    ``error``, ``delivery``, ``control``)."""
    title: str
    text: str = ""
    who: str = ""
    request: str = ""


@dataclass(frozen=True)
class Arg:
    """One argument of a request as approvers see it."""

    name: str
    value: str
    folded: bool
    """Long: shown folded, opened on demand."""
    before: str | None = None
    """The value as first asked, when an edit changed it."""
    diff: str = ""
    """A unified diff of a long changed value."""


def when(at: float | None) -> str:
    """A time as people read it in a log: ``2026-11-30 04:05:06 UTC``."""
    if at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def in_words(seconds: float) -> str:
    """A duration, roughly: ``in 3 h``, ``5 min ago``."""
    later = seconds >= 0
    s = abs(seconds)
    amount = (
        f"{int(s)} s"
        if s < 60
        else f"{int(s // 60)} min"
        if s < 3600
        else f"{int(s // 3600)} h"
        if s < 86400
        else f"{int(s // 86400)} d"
    )
    return f"in {amount}" if later else f"{amount} ago"


def to_args(asked: dict[str, Any], now: dict[str, Any] | None) -> list[Arg]:
    """The arguments up for approval, each marked with what an edit changed."""
    current = asked if now is None else now
    out = []
    for name in [*current, *(n for n in asked if n not in current)]:
        value = _text(current.get(name)) if name in current else "(removed)"
        first = _text(asked.get(name)) if name in asked else "(not given)"
        changed = now is not None and first != value
        diff = ""
        if changed and (len(value) > FOLD_AT or "\n" in value):
            lines = difflib.unified_diff(
                first.splitlines(), value.splitlines(), "asked", "edited", lineterm=""
            )
            diff = "\n".join(lines)
        out.append(
            Arg(
                name=name,
                value=value,
                folded=len(value) > FOLD_AT or value.count("\n") > 3,
                before=first if changed else None,
                diff=diff,
            )
        )
    return out


def to_rows(events: list[Event]) -> list[Row]:
    """The thread's timeline: every event a person would want to see, in order."""
    return [row for e in events if (row := _row(e)) is not None]


def _row(e: Event) -> Row | None:
    match e:
        case ThreadCreated():
            return Row(e.at, "control", f"Thread started for {e.agent}", who=e.by.label())
        case UserMessage():
            return Row(e.at, "message", "Message", e.text, who=e.by.label())
        case AgentReply():
            return Row(e.at, "message", "Agent replied" + (" (done)" if e.final else ""), e.text)
        case ToolCall():
            return Row(e.at, "tool", f"Tool call: {e.tool}", _text(e.args))
        case ToolStarted():
            return Row(e.at, "tool", "Tool started", _text(e.args))
        case ToolResult():
            return Row(e.at, "tool", f"Tool result: {e.outcome.value}", _text(e.output))
        case ContextFetched():
            return Row(e.at, "tool", f"Fetched {e.name}", _text(e.data))
        case ApprovalRequested():
            return Row(
                e.at,
                "request",
                f"Approval requested: {e.tool}",
                e.reason or "",
                who=e.requester.label(),
                request=e.request_id,
            )
        case HumanQuestion():
            return Row(e.at, "request", "Question", e.question, request=e.request_id)
        case ApprovalDecision():
            verb = "Approved" if e.decision.value == "approve" else "Rejected"
            edited = " with edited arguments" if e.edited_args is not None else ""
            title = f"{verb}{edited} via {e.by.channel}"
            return Row(e.at, "decision", title, e.reason or "", e.by.label(), e.request_id)
        case HumanAnswer():
            return Row(
                e.at, "decision", f"Answered via {e.by.channel}", e.text, e.by.label(), e.request_id
            )
        case Expired():
            return Row(e.at, "decision", "Expired", request=e.request_id)
        case Escalated():
            text = f"to {', '.join(e.approvers)}"
            return Row(e.at, "control", "Escalated", text, request=e.request_id)
        case Reminded():
            return Row(e.at, "delivery", "Reminder sent", request=e.request_id)
        case DeliveryFailed():
            return Row(e.at, "delivery", f"Delivery failed ({e.channel})", e.error)
        case ErrorEvent():
            return Row(e.at, "error", "Error" + (" (fatal)" if e.fatal else ""), e.message)
        case Paused() | Resumed() | Cancelled():
            return Row(e.at, "control", e.type.capitalize(), who=e.by.label())
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
