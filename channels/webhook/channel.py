"""The webhook adapter: verify and record inbound messages, POST signed callbacks."""

from __future__ import annotations

import contextlib
import json
import logging

import httpx
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot.domain.errors import DeliveryError, UnauthorizedError
from bot.domain.events import Actor, Event, Origin
from bot.domain.reducer import ThreadState
from bot.domain.text import redact_urls, to_site
from bot.engine.ports import ChannelPorts
from bot.settings import Settings
from bot.web import callbacks
from bot.web.schemas import ThreadOut, error_responses
from channels.webhook.payloads import WebhookIn, to_callback, to_thread_id
from channels.webhook.signing import SIGNATURE_HEADER, sign, verify

log = logging.getLogger(__name__)


class WebhookChannel:
    """Signed inbound messages and signed outbound callbacks.

    Args:
        settings: ``webhook_secret``, ``public_url``, ``callback_timeout``.
        runtime: inbound messages go to ``runtime.inbox``.
    """

    name = "webhook"

    def __init__(self, settings: Settings, runtime: ChannelPorts) -> None:
        secret = settings.webhook_secret
        self.secret = secret.get_secret_value() if secret else None
        self.public_url = settings.public_url
        self.timeout = settings.callback_timeout
        self.refuse_private = settings.callback_url_refuse_private
        self.runtime = runtime
        self._client: httpx.AsyncClient | None = None
        self.router: APIRouter | None = APIRouter(tags=["webhooks"])
        self.body_limits: dict[str, int] = {}
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
            responses={
                200: {"description": "a replay"},
                202: {"description": "continued"},
                **error_responses(400, 401, 409, 413, 422, 503),
            },
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
        if self.secret is None:
            raise UnauthorizedError("the webhook is not configured: set WEBHOOK_SECRET")
        raw = await request.body()
        # The raw bytes, before any parsing: what was signed is what is checked.
        verify(self.secret, request.headers.get(SIGNATURE_HEADER), raw, self.runtime.clock.now())
        body = _parse(raw)
        if body.callback_url is not None:
            await callbacks.check(body.callback_url, refuse_private=self.refuse_private)
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

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        """Only threads with a callback URL are called back."""
        return bool(thread.origin and thread.origin.callback_url)

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
            headers[SIGNATURE_HEADER] = sign(self.secret, raw, int(self.runtime.clock.now()))
        # A callback URL often carries a secret (a token in its path or query): errors name
        # only where it points, and httpx's error (its message may name the URL) is not
        # chained, so no traceback prints it either.
        try:
            answer = await self._client.post(url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            urls = [url]
            with contextlib.suppress(RuntimeError):  # raised when httpx knows no request
                urls.append(str(exc.request.url))  # as httpx wrote it: maybe encoded otherwise
            said = redact_urls(str(exc), *urls)
            raise DeliveryError(
                f"callback to {to_site(url)} failed: {type(exc).__name__}: {said}"
            ) from None
        if not answer.is_success:
            raise DeliveryError(f"callback to {to_site(url)} answered {answer.status_code}")
        log.info("thread %s: %s sent to the callback", thread.id, body["type"])


def _parse(raw: bytes) -> WebhookIn:
    try:
        return WebhookIn.model_validate_json(raw)
    except ValidationError as exc:
        # The app maps these like any body error: bad JSON is a 400, bad fields a 422.
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
