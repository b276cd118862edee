"""The signed webhook channel: any system can talk to an agent and hear back (factor 11).

Inbound: ``POST /webhooks/{agent}`` with ``{id?, text, user, conversation_id?,
callback_url?}``, signed in ``X-Greenlight-Signature`` (see ``sign``). The same
``conversation_id`` continues the same thread; ``id`` makes a replay a no-op.

Outbound: when a thread's origin has a ``callback_url`` (a webhook thread, or a
REST thread created with one), these events are POSTed there, signed the same
way, with the event id as ``Idempotency-Key`` and as the body's ``id``::

    approval_requested  a human must approve a tool call (how: data.decide)
    human_question      a human must answer (how: data.answer)
    agent_reply         the agent spoke; data.final is true when it is done
    request_decided     someone approved or rejected (data.request_status: what it is now)
    request_answered    someone answered a question
    request_expired     nobody decided in time
    thread_cancelled    the thread was cancelled
    thread_failed       the thread stopped and needs a human to resume it

A non-2xx answer or a network error raises, and the outbox retries durably.
Without WEBHOOK_SECRET the inbound route refuses everything, and callbacks
(of REST threads) go out unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import DeliveryError, UnauthorizedError
from bot.events import (
    Actor,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ErrorEvent,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Origin,
)
from bot.keys import thread_id_for
from bot.runtime import Runtime
from bot.schemas import ThreadOut
from bot.settings import Settings
from bot.threads import ThreadState

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Greenlight-Signature"
TOLERANCE = 300.0
"""Seconds a signature's timestamp may be off, either way: bounds replays of a captured request."""


def sign(secret: str, body: bytes, t: int) -> str:
    """The signature header value for ``body`` sent at unix time ``t``."""
    return f"t={t},v1={_mac(secret, body, t)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, *, tolerance: float = TOLERANCE
) -> None:
    """Check a signature header against the raw body; any ``v1`` may match (secret rotation).

    Raises:
        UnauthorizedError: the header is missing, malformed, stale or wrong.
    """
    if not header:
        raise UnauthorizedError(f"missing {SIGNATURE_HEADER} header")
    parts = [p.strip().partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    given = [v for k, _, v in parts if k == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not given:
        raise UnauthorizedError(f"malformed {SIGNATURE_HEADER}: expected t=<unix>,v1=<hex>")
    t = int(stamps[0])
    if abs(now - t) > tolerance:
        raise UnauthorizedError(
            f"stale {SIGNATURE_HEADER}: t={t} is more than {tolerance:.0f}s from now"
        )
    expected = _mac(secret, body, t)
    # Check every value so the time taken does not depend on which one matched.
    if not sum(hmac.compare_digest(expected, v) for v in given):
        raise UnauthorizedError(f"wrong {SIGNATURE_HEADER}: not signed with our secret")


def _mac(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


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
            }
        case HumanAnswer():
            return "request_answered", {
                "request_id": e.request_id,
                "text": e.text,
                "by": _actor(e.by),
            }
        case Expired():
            return "request_expired", {"request_id": e.request_id}
        case Cancelled():
            return "thread_cancelled", {"by": _actor(e.by), "reason": e.reason}
        case ErrorEvent(fatal=True):
            return "thread_failed", {"message": e.message}
    return None


def _link(base: str, path: str) -> dict[str, str]:
    return {"method": "POST", "path": path, "url": base + path}


def _actor(a: Actor) -> dict[str, str]:
    return {"channel": a.channel, "id": a.id, "name": a.label()}


class WebhookChannel:
    """Signed inbound messages and signed outbound callbacks.

    Args:
        settings: ``webhook_secret``, ``public_url``, ``callback_timeout``.
        runtime: inbound messages go to ``runtime.inbox``.
    """

    name = "webhook"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        secret = settings.webhook_secret
        self.secret = secret.get_secret_value() if secret else None
        self.public_url = settings.public_url
        self.timeout = settings.callback_timeout
        self.runtime = runtime
        self._client: httpx.AsyncClient | None = None
        self.router: APIRouter | None = APIRouter(tags=["webhooks"])
        self.router.add_api_route(
            "/webhooks/{agent}",
            self.receive,
            methods=["POST"],
            status_code=201,
            summary="Send a signed message to an agent",
            description=(
                f"Sign the raw body: `{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256"
                ' of "<t>.<body>" keyed by WEBHOOK_SECRET>`. 201: a new thread; 202: the'
                " conversation's thread continues; 200: a replay of a known `id`."
            ),
            responses={200: {"description": "a replay"}, 202: {"description": "continued"}},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": WebhookIn.model_json_schema()}},
                }
            },
        )

    async def start(self, *, inbound: bool) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def receive(self, agent: str, request: Request) -> JSONResponse:
        """201 for a new thread, 202 when it continues one, 200 for a replay."""
        raw = await request.body()
        if self.secret is None:
            raise UnauthorizedError("the webhook is not configured: set WEBHOOK_SECRET")
        # The raw bytes, before any parsing: what was signed is what is checked.
        verify(self.secret, request.headers.get(SIGNATURE_HEADER), raw, time.time())
        body = _parse(raw)
        got = await self.runtime.inbox.message(
            agent=agent,
            text=body.text,
            by=Actor(channel="webhook", id=body.user),
            origin=Origin(
                channel="webhook", conversation=body.conversation_id, callback_url=body.callback_url
            ),
            thread_id=to_thread_id(agent, body),
            delivery=f"webhook:{body.id}" if body.id else None,
        )
        status = 200 if got.duplicate else 201 if got.created else 202
        out = ThreadOut.from_state(got.thread).model_dump(mode="json")
        return JSONResponse({**out, "duplicate": got.duplicate}, status_code=status)

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        """POST ``event`` to the thread's callback URL, if it has one and the event is sent."""
        url = thread.origin.callback_url if thread.origin else None
        body = to_callback(thread, event, self.public_url) if url else None
        if url is None or body is None:
            return
        if self._client is None:
            raise DeliveryError("the webhook channel is not started")
        raw = json.dumps(body, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": event.id}
        if self.secret is not None:
            # Signed at send time, so a retry hours later is still inside the window.
            headers[SIGNATURE_HEADER] = sign(self.secret, raw, int(time.time()))
        try:
            answer = await self._client.post(url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"callback to {url} failed: {exc!r}") from exc
        if not answer.is_success:
            raise DeliveryError(f"callback to {url} answered {answer.status_code}")
        log.info("thread %s: %s sent to the callback", thread.id, body["type"])


def _parse(raw: bytes) -> WebhookIn:
    try:
        return WebhookIn.model_validate_json(raw)
    except ValidationError as exc:
        # The app maps these like any body error: bad JSON is a 400, bad fields a 422.
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
