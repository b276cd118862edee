"""Events API callbacks: what each event means to Greenlight, decided in one place.

Every ``event_callback`` comes here, over HTTP (``POST /slack/events``, once
its signature and body passed ``channels.slack.ingress``) and over Socket Mode
alike, without Bolt: its request object, middleware chain, listener matching and
argument injection cost about a quarter of the web process's CPU per event, and
Slack sends many. Bolt still answers interactivity and the slash command.

What Bolt did for events is kept here: the app's own events are ignored (its
``IgnoringSelfEvents``), the app's workspace comes from ``auth.test`` (its
single-team authorization), and every event is answered, handled or not, so
Slack never retries one we chose to ignore. A person talking goes to
``Listeners.hear``, an opened Home tab to ``Home.opened_tab``. Slack's retries
(``X-Slack-Retry-Num``) are processed like first deliveries: the message's
delivery key makes a replay change nothing (``Message.delivery``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.domain.errors import DeliveryError, RefusedError
from channels.slack import ingress
from channels.slack.home import Home
from channels.slack.listeners import Listeners
from channels.slack.payloads import is_self_event, to_message
from channels.slack.people import FAILED, People

log = logging.getLogger(__name__)

SPOKEN = frozenset({"app_mention", "message"})
"""Event types that may be a person talking to the bot (``payloads.to_message`` decides)."""


class Events:
    """Handles Events API callbacks.

    Args:
        people: tells who the app is (``auth.test``, once).
        listeners: hears people talking.
        home: publishes a Home tab when it is opened.
    """

    def __init__(self, people: People, listeners: Listeners, home: Home) -> None:
        self.people = people
        self.listeners = listeners
        self.home = home

    async def handle(self, body: Mapping[str, Any]) -> None:
        """Act on one ``event_callback`` body; return once it is recorded (or ignored).

        Raises:
            DeliveryError: Slack did not say who the app is (``auth.test``).
            TypeError, AttributeError, ...: the payload's fields have other types than
                Slack documents (``ingress.is_malformed``).
        """
        event = body.get("event") or {}
        kind = event.get("type")
        if kind not in SPOKEN and kind != "app_home_opened":
            return  # any other event: answered, ignored
        try:
            me = await self.people.me()
        except FAILED as exc:
            # Without it the app's own events cannot be told apart: a 500, which Slack retries.
            raise DeliveryError(f"Slack did not say who this app is (auth.test): {exc!r}") from exc
        if is_self_event(event, me.user, me.bot):
            return
        if kind == "app_home_opened":
            self.home.opened_tab(event)
        elif (message := to_message(body, me.user)) is not None:
            await self.listeners.hear(message, me.team)


class SocketMode(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler, with Events API envelopes going to ``Events`` instead.

    Every envelope is read first as HTTP ingress reads a body (``ingress.to_envelope``:
    the body limit, the strict JSON reader): one it refuses is acknowledged, so Slack
    does not send it again, logged, and goes no further, as a 4xx over HTTP. An event
    is acknowledged once handled, as over HTTP, and so is one whose fields have other
    types than Slack documents (``ingress.is_malformed``: a 400 over HTTP), logged as
    refused; one that failed here is not, so Slack sends it again.

    Args:
        max_bytes: the largest envelope, in bytes (``MAX_BODY_BYTES``).
    """

    def __init__(self, app: Any, app_token: str, events: Events, *, max_bytes: int) -> None:
        super().__init__(app, app_token)
        self.events = events
        self.max_bytes = max_bytes
        self._refused: dict[str, str] = {}
        """Envelopes ``_read`` refused, by id, until ``handle`` drops them."""
        self.client.message_listeners.append(self._read)

    async def _read(
        self, client: AsyncBaseSocketModeClient, message: dict[Any, Any], raw: str | None
    ) -> None:
        """Read an envelope's text strictly. Slack's client calls its message listeners
        with the text before it hands the request it made of it to ``handle``."""
        envelope = message.get("envelope_id")
        if not isinstance(envelope, str) or not {"type", "payload"} <= message.keys():
            return  # not a request (``SocketModeRequest.from_dict``): never handed on
        raw = raw or ""
        try:
            ingress.to_envelope(raw, self.max_bytes)
        except RefusedError as exc:
            self._refused[envelope] = exc.message

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        envelope = req.envelope_id if isinstance(req.envelope_id, str) else ""
        if (why := self._refused.pop(envelope, None)) is not None:
            log.warning("slack: refused a Socket Mode %s envelope %s: %s", req.type, envelope, why)
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope))
            return
        if req.type != "events_api" or not isinstance(req.payload, dict):
            await super().handle(client, req)
            return
        try:
            await self.events.handle(req.payload)
        except Exception as exc:
            if not ingress.is_malformed(exc):
                log.exception("slack: an event from Socket Mode failed; Slack will send it again")
                return
            # Its shape, not us: over HTTP a 400, which Slack does not send again either.
            log.warning("slack: refused a Socket Mode %s envelope %s: %r", req.type, envelope, exc)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
