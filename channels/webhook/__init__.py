"""The signed webhook channel: any system can talk to an agent and hear back (factor 11).

Inbound: ``POST /webhooks/{agent}`` with ``{id?, text, user, conversation_id?,
callback_url?}``, signed in ``X-Greenlight-Signature`` (see ``signing``). The same
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

Modules: ``signing`` (pure: sign and verify), ``payloads`` (pure: the inbound
body, its thread, the callback an event becomes), ``channel`` (the adapter).
"""

from __future__ import annotations

from channels.webhook.channel import WebhookChannel
from channels.webhook.signing import SIGNATURE_HEADER, sign, verify

__all__ = ["SIGNATURE_HEADER", "WebhookChannel", "sign", "verify"]
