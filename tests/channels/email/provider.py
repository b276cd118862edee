"""A local SMTP server standing in for the mail provider: records what it is sent.

    async with MailProvider() as provider:
        settings = test_settings(smtp_host="127.0.0.1", smtp_port=provider.port, ...)
        provider.refuse_next = 1          # answer the next DATA with a 451
        provider.refuse_rcpt.add("gone@example.test")  # 550 at RCPT for that address
        mail = provider.last_to("ops@example.test")

It is aiosmtpd's real SMTP protocol, bound to an ephemeral port of 127.0.0.1
in the test's own event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Sent:
    """One message the provider accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())

    def __getitem__(self, header: str) -> str:
        value = self.message[header]
        return "" if value is None else str(value)


class MailProvider:
    """Accepts everything, except that it refuses the next ``refuse_next`` messages (451)
    and the recipients in ``refuse_rcpt`` (550 at RCPT, as for a mailbox that is gone)."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.refuse_next = 0
        self.refused = 0
        self.refuse_rcpt: set[str] = set()
        self.refused_rcpts: list[str] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> MailProvider:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="provider.test", loop=loop), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.refuse_rcpt:
            self.refused_rcpts.append(address.lower())
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return "451 4.3.0 Mailbox busy, try again later"
        message = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.sent.append(Sent(envelope.mail_from or "", list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"

    def to(self, address: str, **headers: Any) -> list[Sent]:
        """Messages sent to ``address`` (optionally whose headers contain the given text)."""
        return [
            s
            for s in self.sent
            if address in s.rcpt_tos
            and all(v in s[k.replace("_", "-")] for k, v in headers.items())
        ]

    def last_to(self, address: str) -> Sent:
        found = self.to(address)
        assert found, f"nothing was sent to {address}; sent: {[s.rcpt_tos for s in self.sent]}"
        return found[-1]
