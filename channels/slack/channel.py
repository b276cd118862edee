"""The Slack channel: ``POST /slack/events`` or Socket Mode, and the poster.

Events API callbacks go straight to ``channels.slack.events``; interactivity
and the slash command go through a Bolt app.

Two Web API clients with different patience. The one Slack's answer may wait
for (Bolt's: who clicked, ``views.open``) gives up after ``WEB_TIMEOUT`` and
retries a 429 only when Slack asks to wait at most a second, because Slack
wants its answer within 3 seconds. The other waits out ``Retry-After`` up to
three times: the worker posts with it, and so do the web process's private
notes and card refreshes, which run after Slack has its answer.
"""

from __future__ import annotations

import logging

import aiohttp
from fastapi import APIRouter, Request, Response
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import ConfigError
from bot.domain.events import Actor, Event, UserMessage
from bot.domain.reducer import ThreadState
from bot.engine.ports import ChannelPorts
from bot.settings import Settings
from channels.slack import ingress
from channels.slack.background import Background
from channels.slack.clicks import Clicks
from channels.slack.events import Events, SocketMode
from channels.slack.home import Home
from channels.slack.listeners import Listeners
from channels.slack.opening import Openings, is_command
from channels.slack.outbound import Outbound
from channels.slack.people import People, UnknownUserError
from channels.slack.working import Working

log = logging.getLogger(__name__)

PATH = "/slack/events"
WEB_TIMEOUT = 2
"""Seconds one Web API call on the way to Slack's answer may take (Slack waits 3)."""
IDENTITY_BUDGET = 1.5
"""Seconds a click may wait to learn who clicked (users.info, user groups) in all."""
REQUESTER_BUDGET = 5.0
"""Seconds to learn the email address of someone who asked while Slack did not say it, when
their request for approval opens (in a worker, or ``POST /approvals``): no answer to Slack
waits, so the patient client may wait out a short ``Retry-After``."""


class ShortRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Retries a 429 once, and only when ``Retry-After`` is at most ``max_wait`` seconds."""

    def __init__(self, max_wait: float = 1.0) -> None:
        super().__init__(max_retry_count=1)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
        try:
            return float(wait[0]) <= self.max_wait
        except (ValueError, IndexError):
            return False


def to_client(token: str, base_url: str, *, patient: bool) -> AsyncWebClient:
    """A Web API client: ``patient`` waits out rate limits, otherwise only short ones."""
    handlers: list[AsyncRetryHandler] = [AsyncConnectionErrorRetryHandler()]
    if patient:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
    else:
        handlers.append(ShortRateLimitRetry())
    return AsyncWebClient(
        token=token,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=30 if patient else WEB_TIMEOUT,
        retry_handlers=handlers,
    )


class SlackChannel:
    """Chat with agents in Slack, approve with buttons, answer in threads.

    Args:
        settings: ``slack_bot_token`` plus ``slack_signing_secret`` (HTTP mode)
            and/or ``slack_app_token`` (Socket Mode); ``slack_api_url``;
            ``slack_approvals_channel``.
        runtime: the wired core.
    """

    name = "slack"

    def __init__(self, settings: Settings, runtime: ChannelPorts) -> None:
        if settings.slack_bot_token is None:
            raise ConfigError("SLACK_BOT_TOKEN is required for the Slack channel")
        token = settings.slack_bot_token.get_secret_value()
        secret = settings.slack_signing_secret
        self.app_token = settings.slack_app_token
        self.max_body_bytes = settings.max_body_bytes
        self.client = to_client(token, settings.slack_api_url, patient=True)
        self.web_client = to_client(token, settings.slack_api_url, patient=False)
        approvals = settings.slack_approvals_channel
        self.outbound = Outbound(
            self.client,
            runtime.threads,
            runtime.state,
            People(self.client),
            approvals_channel=approvals,
            working=Working(self.client, runtime.state, assistant=settings.slack_assistant),
        )
        web_people = People(self.web_client, budget=IDENTITY_BUDGET)
        self.people = web_people
        self.requesters = People(self.client, budget=REQUESTER_BUDGET)
        self.app = AsyncApp(
            client=self.web_client,
            signing_secret=secret.get_secret_value() if secret else "",
            # Listeners only write to Redis (and ask, briefly, who clicked), so they finish
            # before Slack gets its answer: a failure is a 500 that Slack retries, never a
            # lost event. Slower calls go to self.background and run after the answer.
            process_before_response=True,
            # POST /slack/events checks the signature on the raw bytes before Bolt sees
            # them (to_router, ingress.verify), and Socket Mode is not signed: Bolt's own
            # check would only compute the same HMAC again. Events never reach Bolt.
            request_verification_enabled=False,
            name="greenlight",
            logger=logging.getLogger("channels.slack.bolt"),
        )
        self.background = Background()
        aside = Outbound(
            self.client, runtime.threads, runtime.state, web_people, approvals_channel=approvals
        )
        self.openings = Openings(self.client, runtime)
        self.home = Home(runtime, self.outbound, self.client)
        web_home = Home(runtime, aside, self.client, self.background)
        listeners = Listeners(runtime, web_people, aside, self.background)
        listeners.register(self.app)
        self.events = Events(web_people, listeners, web_home)
        clicks = Clicks(runtime, web_people, aside, self.background, self.web_client, home=web_home)
        clicks.register(self.app)
        self.router: APIRouter | None = (
            to_router(self.app, self.events, secret.get_secret_value()) if secret else None
        )
        self.body_limits: dict[str, int] = {}
        self._socket: SocketMode | None = None
        self._sessions: list[aiohttp.ClientSession] = []

    async def start(self, *, inbound: bool) -> None:
        """Share one HTTP session per client, check the token, open Socket Mode if asked."""
        for client in (self.client, self.web_client):
            client.session = aiohttp.ClientSession()
            self._sessions.append(client.session)
        try:
            me = await self.people.me(self.client)
        except SlackApiError as exc:
            await self.stop()
            raise ConfigError(
                f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}); "
                "copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page"
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Slack unreachable for now: serve anyway; the first event or click asks again.
            log.warning(
                "slack: could not reach %s to check the token: %r", self.client.base_url, exc
            )
        else:
            log.info(
                "slack: signed in as %s in %s; HTTP mode on %s: %s; Socket Mode: %s",
                me.name or me.user,
                me.team,
                PATH,
                self.router is not None,
                self.app_token is not None,
            )
        if inbound and self.app_token is not None:
            self._socket = SocketMode(
                self.app,
                self.app_token.get_secret_value(),
                self.events,
                max_bytes=self.max_body_bytes,
            )
            await self._socket.connect_async()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        await self.background.stop()
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        self.client.session = self.web_client.session = None

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        opening = isinstance(event, UserMessage) and is_command(thread)
        return opening or self.outbound.concerns(thread, event)

    async def identities_of(self, email: str) -> tuple[str, ...]:
        """The Slack user with this address, as ``slack:U123`` (``bot.engine.ports.Directory``);
        empty when Slack knows nobody by it or the look-up failed."""
        user = await self.people.user_of(email)
        return (f"slack:{user}",) if user else ()

    async def identify(self, actor: Actor) -> Actor:
        """``actor`` with the email ``users.info`` gives now, when they are a Slack user known
        without one (``bot.engine.ports.Directory``); as given when Slack still does not say."""
        if actor.channel != self.name or actor.email:
            return actor
        try:
            found = await self.requesters.actor(actor.id)
        except UnknownUserError:
            return actor
        return actor.model_copy(update={"email": found.email}) if found.email else actor

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        if isinstance(event, UserMessage) and is_command(thread):
            await self.openings.open(thread, event)  # first: the thread lives under it
        await self.outbound.deliver(thread, event)
        try:
            await self.home.changed(thread, event)
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # A Home is shown again when next opened; the cards must not be posted twice.
            log.warning("thread %s: refreshing Homes failed: %r", thread.id, exc)


def to_router(app: AsyncApp, events: Events, secret: str) -> APIRouter:
    """``POST /slack/events`` for events, interactivity and the slash command alike.

    A plain Starlette route: the raw body is read once, so FastAPI's request
    handling would only add time to Slack's 3 seconds. The signature is checked
    on the raw bytes and the body's shape before anything else reads it
    (``channels.slack.ingress``): bad input is a 4xx, never a 5xx. Events API
    callbacks go to ``events`` as parsed there; everything else to Bolt.
    """

    async def malformed(error: Exception) -> BoltResponse | None:
        if not ingress.is_malformed(error):
            log.error("slack: a listener failed", exc_info=error)
            return None  # Bolt answers 500: Slack retries
        log.warning("slack: refused a signed payload: %r", error)
        status, body = ingress.to_error(error)
        return BoltResponse(
            status=status, body=body.decode(), headers={"content-type": "application/json"}
        )

    app.error(malformed)

    async def slack_events(request: Request) -> Response:
        raw = await request.body()
        ingress.verify(secret, raw, request.headers)
        body = ingress.to_json(raw, request.headers.get("content-type"))
        try:
            if ingress.is_event(body):
                await events.handle(body)
                return Response(status_code=200)
            response = await app.async_dispatch(to_async_bolt_request(request, raw))
        except Exception as exc:
            if not ingress.is_malformed(exc):
                raise  # the app's error handlers answer 5xx: Slack retries
            log.warning("slack: refused a signed payload: %r", exc)
            status, answer = ingress.to_error(exc)
            return Response(answer, status, media_type="application/json")
        return to_starlette_response(response)

    router = APIRouter()
    router.add_route(PATH, slack_events, methods=["POST"], include_in_schema=False)
    return router
