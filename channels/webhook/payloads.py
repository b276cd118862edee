"""Webhook payloads, pure: the inbound body, the thread it belongs to, the callback for an event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.domain.events import (
    Actor,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
)
from bot.domain.ids import thread_id_for
from bot.domain.reducer import ThreadState
from bot.domain.validate import answer_value


class WebhookIn(BaseModel):
    """One inbound webhook message."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    id: str | None = Field(None, min_length=1, max_length=200)
    """The sender's delivery id: a replay with the same id changes nothing."""
    text: str
    user: str = Field(min_length=1, max_length=200)
    """Who speaks, in the sender's terms; approvals they ask for need someone else."""
    conversation_id: str | None = Field(None, min_length=1, max_length=200)
    """Messages with the same conversation id (and agent) share one thread."""
    callback_url: str | None = Field(None, pattern=r"^https?://", max_length=2000)
    """Where to POST this thread's events; only the first message of a thread sets it."""


def to_thread_id(agent: str, body: WebhookIn) -> str | None:
    """The thread a message belongs to; None starts a fresh one."""
    if body.conversation_id is not None:
        return thread_id_for("webhook", f"{agent}:{body.conversation_id}")
    if body.id is not None:
        # Derived from the delivery id, so a replay lands on the same thread and is seen.
        return thread_id_for("webhook.message", f"{agent}:{body.id}")
    return None


def to_callback(thread: ThreadState, event: Event, public_url: str) -> dict[str, Any] | None:
    """The callback body for ``event``, or None when the event is not sent."""
    found = _data(thread, event, public_url.rstrip("/"))
    if found is None:
        return None
    kind, data = found
    return {
        "id": event.id,
        "type": kind,
        "thread_id": thread.id,
        "agent": thread.agent,
        "at": event.at,
        "data": data,
    }


def _data(s: ThreadState, e: Event, base: str) -> tuple[str, dict[str, Any]] | None:
    match e:
        case ApprovalRequested():
            return "approval_requested", {
                "request_id": e.request_id,
                "tool": e.tool,
                "args": e.args,
                "args_hash": e.args_hash,
                "reason": e.reason,
                "requester": _actor(e.requester),
                "approvers": e.approvers,
                "min_approvals": e.min_approvals,
                "expires_at": e.expires_at,
                "decide": _link(base, f"/requests/{e.request_id}/decision"),
            }
        case HumanQuestion():
            return "human_question", {
                "request_id": e.request_id,
                "question": e.question,
                "context": e.context,
                "urgency": e.urgency.value,
                "format": e.format.value,
                "choices": e.choices,
                "expires_at": e.expires_at,
                "answer": _link(base, f"/requests/{e.request_id}/answer"),
            }
        case AgentReply():
            return "agent_reply", {"text": e.text, "final": e.final}
        case ApprovalDecision():
            req = s.requests.get(e.request_id)
            return "request_decided", {
                "request_id": e.request_id,
                "decision": e.decision.value,
                "by": _actor(e.by),
                "reason": e.reason,
                "request_status": req.status.value if req else None,
                # What an agent elsewhere runs once approved: the edited arguments if edited.
                "args": req.args if req else None,
                "args_hash": req.args_hash if req else None,
                "edited": e.edited_args is not None,
                "approvals": len(req.approvals()) if req else None,
            }
        case HumanAnswer():
            req = s.requests.get(e.request_id)
            asked = req.asked if req else None
            return "request_answered", {
                "request_id": e.request_id,
                "text": e.text,
                "value": answer_value(asked, e.text) if isinstance(asked, HumanQuestion) else None,
                "by": _actor(e.by),
            }
        case Expired():
            return "request_expired", {"request_id": e.request_id}
        case Escalated():
            return "request_escalated", {
                "request_id": e.request_id,
                "approvers": e.approvers,
                "expires_at": e.expires_at,
            }
        case Cancelled():
            return "thread_cancelled", {"by": _actor(e.by), "reason": e.reason}
        case ErrorEvent(fatal=True):
            return "thread_failed", {"message": e.message}
    return None


def _link(base: str, path: str) -> dict[str, str]:
    return {"method": "POST", "path": path, "url": base + path}


def _actor(a: Actor) -> dict[str, str]:
    return {"channel": a.channel, "id": a.id, "name": a.label()}
