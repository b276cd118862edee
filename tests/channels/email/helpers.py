"""A whole Greenlight with email on, plus the people who write to it over real SMTP."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib
import httpx

from bot.domain.clock import ManualClock
from bot.domain.events import Event
from bot.settings import Settings
from channels.email import EmailChannel
from tests.channels.email.provider import MailProvider, Sent
from tests.harness import Harness, test_settings

DOMAIN = "example.test"
SECRET = "test-email-secret-0123456789"
INBOUND_SECRET = "test-inbound-secret"
OPS = "ops@example.test"
ANN = "ann@example.test"
FIN = "fin@example.test"


def email_settings(provider: MailProvider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": provider.port,
        "smtp_tls": "none",
        "email_from": "Greenlight <greenlight@example.test>",
        "email_domain": DOMAIN,
        "email_smtp_port": 0,
        "email_secret": SECRET,
        "email_inbound_secret": INBOUND_SECRET,
        "approver_groups": {"deployers": [OPS, "bob"], "finance": [FIN]},
    }
    values.update(overrides)
    return test_settings(**values)


def new_mail(
    sender: str,
    to: str,
    subject: str,
    text: str,
    *,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """An email as a plain client writes it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain="client.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references or in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    return msg


def padded(fields: str, size: int) -> str:
    """``fields`` and X-Pad fields (lines under 1,000: SMTP's limit) of exactly ``size`` bytes."""
    left = size - len(fields)
    while left > 0:
        take = max(min(left, 990), 10)
        if 0 < left - take < 10:  # leave no remainder too short to be a field
            take = left - 10
        fields += "X-Pad: " + "x" * (take - 9) + "\r\n"
        left -= take
    assert len(fields) == size, (len(fields), size)
    return fields


def with_header_text(msg: EmailMessage, size: int) -> bytes:
    """``msg`` as sent (CRLF), padded to ``size`` bytes of header text (X-Pad fields)."""
    head, body = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")).split(b"\r\n\r\n", 1)
    fields = head.decode() + "\r\n"
    return padded(fields, size).encode() + b"\r\n" + body


def reply_to(original: Sent, text: str, *, sender: str, **kw: Any) -> EmailMessage:
    """A reply the way Gmail writes one: new text on top, the original quoted below."""
    quoted = "\n".join(f"> {line}" for line in original.text.splitlines())
    said = "On Tue, 3 Jun 2025 at 10:02, Greenlight <greenlight@example.test> wrote:"
    body = f"{text}\n\n{said}\n\n{quoted}\n"
    refs = f"{original['References']} {original['Message-ID']}".strip()
    to = original["Reply-To"] or original["From"]
    return new_mail(
        sender,
        to,
        f"Re: {original['Subject']}",
        body,
        in_reply_to=original["Message-ID"],
        references=refs,
        **kw,
    )


class Mailroom:
    """The harness, the provider stand-in, and ways in: SMTP to the receiver, HTTP POST."""

    def __init__(self, h: Harness, provider: MailProvider) -> None:
        self.h = h
        self.provider = provider

    @property
    def clock(self) -> ManualClock:
        """The harness's clock, which stands still until a test (or ``drain_until``) moves it."""
        assert isinstance(self.h.clock, ManualClock), "give the harness a ManualClock"
        return self.h.clock

    @property
    def channel(self) -> EmailChannel:
        (found,) = [c for c in self.h.rt.channels if isinstance(c, EmailChannel)]
        return found

    async def smtp(
        self, msg: EmailMessage, *, rcpts: list[str] | None = None, mail_from: str | None = None
    ) -> str:
        """Send into the bot's own SMTP receiver; returns its answer to DATA (after 2.0.0)."""
        receiver = self.channel.receiver
        assert receiver is not None
        _, answer = await aiosmtplib.send(
            msg,
            hostname="127.0.0.1",
            port=receiver.port,
            start_tls=False,
            sender=mail_from,
            recipients=rcpts,
        )
        return answer.removeprefix("2.0.0 ")

    async def post(
        self, raw: bytes, *, secret: str | None = INBOUND_SECRET, **params: Any
    ) -> httpx.Response:
        headers = {"content-type": "message/rfc822"}
        if secret is not None:
            headers["x-greenlight-inbound-secret"] = secret
        return await self.h.http.post("/email/inbound", content=raw, headers=headers, params=params)

    async def events(self, thread_id: str) -> list[Event]:
        return await self.h.rt.log.events(thread_id)

    async def drain_until(self, probe: Any) -> Any:
        """Drain the worker, moving the clock a second after each run, until ``probe()`` is
        truthy (for retries due a little later)."""

        async def step() -> Any:
            await self.h.drain()
            found = probe()
            self.clock.advance(1)
            return found

        return await self.h.wait_for(step)


async def ask_publish(room: Mailroom, policy: dict[str, Any]) -> dict[str, Any]:
    """An agent elsewhere (``ci``) asks over REST to publish a release, under ``policy``;
    once a worker has sent the emails, the request as the API returned it."""
    body = {
        "agent": "ci",
        "requester": "pipeline",
        "tool": "publish",
        "arguments": {"package": "greenlight", "version": "0.2.0"},
        "summary": "Tag v0.2.0 passed every check",
        "policy": policy,
    }
    r = await room.h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    await room.h.drain()
    asked: dict[str, Any] = r.json()
    return asked
