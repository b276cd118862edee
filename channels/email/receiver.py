"""The built-in SMTP receiver (aiosmtpd) for replies and new requests, on ``EMAIL_SMTP_PORT``.

It runs inside the process's own event loop. Unknown mailboxes and forged
reply tokens are refused at RCPT time (550), so the sending server bounces
them and nothing is stored. A message is answered 250 only after it has been
recorded; a failure on our side answers 451, so the sender's server retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.domain.errors import InvalidInputError, TooLargeError
from channels.email.inbound import Intake

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


class Handler:
    """aiosmtpd hooks: check each recipient, then hand the whole message to the intake."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        problem = self.intake.check_recipient(address)
        if problem is not None:
            log.info("SMTP from %s: RCPT %s refused: %s", session.peer, address, problem)
            return f"550 5.1.1 {_line(problem)}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            handled = await self.intake.receive(
                raw, mail_from=envelope.mail_from, rcpts=list(envelope.rcpt_tos)
            )
        except TooLargeError as exc:  # permanent: the sender's server bounces it to them
            return f"552 5.3.4 {_line(exc.message)}"
        except InvalidInputError as exc:
            return f"554 5.6.0 {_line(exc.message)}"
        except Exception:
            log.exception("SMTP from %s: could not record a message", session.peer)
            return "451 4.3.0 Temporary failure, please try again later"
        return f"250 2.0.0 {_line(handled.disposition.value + ': ' + handled.detail)}"


class SmtpReceiver:
    """An aiosmtpd server bound in the running event loop.

    Args:
        intake: where messages go.
        host, port: where to listen; port 0 picks a free one (see ``port``).
        hostname: the name the server announces (the email domain).
        max_bytes: larger messages are refused (552).
    """

    def __init__(
        self, intake: Intake, *, host: str, port: int, hostname: str, max_bytes: int
    ) -> None:
        self.handler = Handler(intake)
        self.host = host
        self.port = port
        self.hostname = hostname
        self.max_bytes = max_bytes
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            return SMTP(
                self.handler,
                hostname=self.hostname,
                data_size_limit=self.max_bytes,
                enable_SMTPUTF8=True,
                loop=loop,
            )

        # Web and worker processes both start channels; sharing the port lets both
        # run on one host (ingress is stateless, either may take a message).
        extra: dict[str, Any] = {"reuse_port": True} if hasattr(socket, "SO_REUSEPORT") else {}
        self._server = await loop.create_server(protocol, self.host, self.port, **extra)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("email: SMTP receiver on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _line(text: str) -> str:
    """One printable ASCII line, as an SMTP reply must be."""
    return _UNPRINTABLE.sub(" ", text)[:400]
