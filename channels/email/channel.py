"""The email channel: outbound prompts and replies over SMTP, inbound by SMTP or HTTP."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from bot.domain.errors import DeliveryError
from bot.domain.events import (
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Reminded,
    UserMessage,
)
from bot.domain.reducer import ThreadState
from bot.domain.text import cut
from bot.engine.ports import ChannelPorts
from bot.settings import Settings
from channels.email import compose, drafts
from channels.email.config import EmailConfig
from channels.email.drafts import Draft
from channels.email.inbound import Intake
from channels.email.outbound import Mailer
from channels.email.receiver import SmtpReceiver
from channels.email.routes import build_router

log = logging.getLogger(__name__)

SMTP_MAX_BYTES = 20_000_000
"""Replies quote inline images and signatures: allow more than an API body."""

_CONCERNS = (
    AgentReply,
    ApprovalRequested,
    HumanQuestion,
    ApprovalDecision,
    HumanAnswer,
    Reminded,
    Escalated,
    Expired,
)


class EmailChannel:
    """Email as a channel (``bot.engine.outbox.Channel``).

    Outbound, each event of interest becomes the emails ``compose.for_event``
    asks for. Inbound, the SMTP receiver (when ``EMAIL_SMTP_PORT`` is set) and
    ``POST /email/inbound`` both hand raw messages to one ``Intake``.
    """

    name = "email"

    def __init__(self, settings: Settings, runtime: ChannelPorts) -> None:
        self.cfg = EmailConfig.from_settings(settings)
        self.runtime = runtime
        self.mailer = Mailer(settings, self.cfg, runtime.state, runtime.clock)
        self.intake = Intake(self.cfg, runtime, self.mailer)
        secret = settings.email_inbound_secret
        self.router: APIRouter | None = build_router(
            self.cfg, runtime, self.intake, secret.get_secret_value() if secret else None
        )
        # Providers forward whole messages, attachments and inline images included.
        self.body_limits = {"/email/inbound": SMTP_MAX_BYTES}
        self.receiver: SmtpReceiver | None = None
        if settings.email_smtp_port is not None:
            self.receiver = SmtpReceiver(
                self.intake,
                host=settings.email_smtp_host or settings.host,
                port=settings.email_smtp_port,
                hostname=self.cfg.domain,
                max_bytes=SMTP_MAX_BYTES,
            )

    async def start(self, *, inbound: bool) -> None:
        """Start the SMTP receiver for replies, in processes that take inbound traffic."""
        if inbound and self.receiver is not None:
            await self.receiver.start()

    async def stop(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()

    def concerns(self, thread: ThreadState, event: Event) -> bool:
        return isinstance(event, _CONCERNS)

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        """Send the emails ``event`` calls for; raises so the outbox retries a failure."""
        if not isinstance(event, _CONCERNS):
            return
        why = None
        if isinstance(event, ApprovalRequested):
            if not drafts.email_identities(event.approvers) and not drafts.originators(thread):
                return
            why = await self._why(thread.id, event)
        await self._send_all(thread.id, compose.for_event(self.cfg, thread, event, why=why))

    async def _send_all(self, thread_id: str, outgoing: list[Draft]) -> None:
        """Send each draft, whatever becomes of the others.

        One recipient the server refuses (a departed employee's 550) must not keep the
        email from those after it. The mailer marks each one sent, so the outbox's retry
        of the event sends only to those that failed, and its giving up names them.

        Raises:
            DeliveryError: sending to one or more recipients failed; it says which.
        """
        failed: dict[str, DeliveryError] = {}
        for draft in outgoing:
            try:
                await self.mailer.send(thread_id, draft)
            except DeliveryError as exc:
                failed[draft.to] = exc
        if failed:
            raise DeliveryError(
                f"{len(failed)} of {len(outgoing)} emails not sent (to {', '.join(failed)}): "
                + "; ".join(e.message for e in failed.values()),
                thread_id=thread_id,
            )

    async def send_sign_in_link(self, to: str, link: str, *, valid_for: float) -> None:
        """Email a web sign-in link (``bot.engine.ports.SignInMail``)."""
        await self.mailer.send_now(drafts.for_sign_in(self.cfg, to, link, valid_for=valid_for))

    async def _why(self, thread_id: str, asked: ApprovalRequested) -> str | None:
        """The request's own reason (an agent elsewhere gives one), else what the requester
        last said before the approval was asked for."""
        if asked.reason:
            return cut(asked.reason, 2000)
        said = None
        for event in await self.runtime.threads.events(thread_id):
            if event.id == asked.id:
                break
            if isinstance(event, UserMessage):
                said = event.text
        return cut(said, 500) if said else None
