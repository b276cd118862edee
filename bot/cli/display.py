"""How threads, events and requests look in a terminal, as rich markup.

Shared by the CLI's tables and the interactive chat; API JSON in, one line out.
"""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape

from bot.domain.text import cut, to_call

STATUS_STYLE = {
    "running": "cyan",
    "awaiting_approval": "bold yellow",
    "awaiting_human": "bold yellow",
    "waiting_for_user": "blue",
    "paused": "magenta",
    "done": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "open": "bold yellow",
    "approved": "green",
    "rejected": "red",
}


def status(name: str) -> str:
    """A thread's or request's status, coloured."""
    return f"[{STATUS_STYLE.get(name, 'default')}]{name}[/]"


def ago(at: float) -> str:
    """A Unix time relative to now: ``3m ago``, ``in 1h``."""
    delta = at - time.time()
    span = abs(delta)
    units = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
    size = next((f"{int(span // n)}{u}" for n, u in units if span >= n), "0s")
    return f"in {size}" if delta > 0 else f"{size} ago"


def what(req: dict[str, Any]) -> str:
    """One line saying what a request asks (plain text: escape it for markup)."""
    if req["kind"] == "approval":
        return to_call(req["tool"], req["args"] or {}, show=repr)
    choices = f" [{' / '.join(req['choices'])}]" if req.get("choices") else ""
    return f"{req['question']}{choices}"


def event_line(e: dict[str, Any]) -> str:
    """One line of a thread's history."""
    by = (e.get("by") or {}).get("id", "")
    match e["type"]:
        case "thread_created":
            return f"[dim]started by {by} via {e['origin']['channel']}[/]"
        case "user_message":
            return f"[bold]{by}:[/] {escape(e['text'])}"
        case "tool_call":
            return f"[dim]→ {escape(to_call(e['tool'], e['args'] or {}, show=repr))}[/]"
        case "tool_result":
            return f"[dim]← {e['outcome']}: {escape(cut(str(e['output']), 160))}[/]"
        case "approval_requested":
            return f"[yellow]? approval for {e['tool']} ({e['request_id']})[/]"
        case "approval_decision":
            why = f": {escape(e['reason'])}" if e.get("reason") else ""
            return f"[bold]{e['decision']}d[/] by {by}{why}"  # approve-d, reject-d
        case "human_question":
            return f"[yellow]? {escape(e['question'])} ({e['request_id']})[/]"
        case "human_answer":
            return f"answered by {by}: {escape(e['text'])}"
        case "agent_reply":
            return f"[green]agent:[/] {escape(e['text'])}"
        case "agent_chosen":
            return f"[dim]→ the {escape(e['agent'])} agent ({e['how']})[/]"
        case "context_fetched":
            return f"[dim]fetched {e['name']}[/]"
        case "error":
            return f"[red]! {escape(e['message'])}[/]"
        case "tool_started":
            return "[dim]▶ tool started[/]"
        case "paused" | "cancelled":
            why = f": {escape(e['reason'])}" if e.get("reason") else ""
            return f"[bold]{e['type']}[/] by {escape(by)}{why}"
        case "resumed":
            return f"[bold]resumed[/] by {escape(by)}"
        case "expired":
            return f"[yellow]{e['request_id']} expired[/]"
        case "escalated":
            return f"[yellow]{e['request_id']} escalated to {escape(', '.join(e['approvers']))}[/]"
        case "reminded":
            return f"[dim]approvers of {e['request_id']} reminded[/]"
        case "delivery_failed":
            return f"[red]! delivery to {e['channel']} failed: {escape(e['error'])}[/]"
    return f"[dim]{e['type'].replace('_', ' ')}[/]"  # a type this client does not know yet
