"""Sending: aiosmtplib to the configured SMTP server, each draft at most once per recipient.

Delivery is at-least-once (the outbox retries, a worker may die mid-way), so
a marker per (cause, recipient) is written after each successful send and
checked before the next. A failure raises, and the outbox retries durably.
"""

from __future__ import annotations

import logging

import aiosmtplib

from bot.domain.clock import Clock
from bot.domain.errors import DeliveryError
from bot.engine.ports import StateStore
from bot.settings import Settings
from channels.email.config import EmailConfig
from channels.email.drafts import Draft
from channels.email.render import to_message

log = logging.getLogger(__name__)

SEND_TIMEOUT = 30.0
"""Seconds for one whole SMTP conversation."""


class Mailer:
    """Sends drafts over SMTP and links their Message-IDs to the thread.

    Args:
        settings: ``SMTP_*``.
        cfg: the channel's email settings.
        state: what was sent, and sent Message-IDs linked to threads (replies find them).
    """

    def __init__(
        self, settings: Settings, cfg: EmailConfig, state: StateStore, clock: Clock
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.clock = clock
        self.host = settings.smtp_host or "localhost"
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        password = settings.smtp_password
        self.password = password.get_secret_value() if password else None
        self.tls = settings.smtp_tls
        self.timeout = SEND_TIMEOUT

    async def send(self, thread_id: str, draft: Draft) -> bool:
        """Send ``draft`` unless it was sent before; True when it was sent now.

        Raises:
            DeliveryError: the SMTP server refused or could not be reached.
        """
        if await self.sent_before(thread_id, draft):
            return False
        # Linked first: a reply may arrive before this coroutine resumes.
        await self.state.link(draft.message_id, thread_id)
        if draft.args_hash is not None:
            await self.state.put(thread_id, _shown(draft.message_id), draft.args_hash)
        await self.send_now(draft, thread_id=thread_id)
        await self.state.put(thread_id, _sent(draft), str(self.clock.now()))
        log.info(
            "thread %s: sent %s email %s to %s",
            thread_id,
            draft.template,
            draft.message_id,
            draft.to,
        )
        return True

    async def sent_before(self, thread_id: str, draft: Draft) -> bool:
        """Whether ``draft`` was sent already (``send`` would not send it again)."""
        return await self.state.get(thread_id, _sent(draft)) is not None

    async def shown_hash(self, thread_id: str, message_ids: list[str]) -> str | None:
        """The arguments' hash the approval email nearest in ``message_ids`` showed (a
        reply's ``thread_ids``), or None when it names none we recorded."""
        recorded = await self.state.all(thread_id)
        return next((h for m in message_ids if (h := recorded.get(_shown(m)))), None)

    async def send_now(self, draft: Draft, **detail: str) -> None:
        """Send ``draft`` once, now, with no marker (a sign-in link belongs to no thread).

        Raises:
            DeliveryError: the SMTP server refused or could not be reached.
        """
        try:
            await aiosmtplib.send(
                to_message(draft, self.cfg),
                sender=self.cfg.sender_address,
                recipients=[draft.to],
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.tls == "tls",
                start_tls=self.tls == "starttls",
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"sending {draft.template} email to {draft.to} via {self.host}:{self.port} "
                f"failed: {exc}",
                **detail,
            ) from exc


def _sent(draft: Draft) -> str:
    """The state field marking that ``draft`` was sent to its recipient."""
    return f"sent:{draft.key}:{draft.to}"


def _shown(message_id: str) -> str:
    """The state field holding the arguments' hash an approval email showed."""
    return f"shown:{message_id}"
