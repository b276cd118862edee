"""The email channel's settings, checked once when the channel is built."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from bot.domain.errors import ConfigError
from bot.settings import Settings

TOKEN_TTL = 7 * 86400.0
"""How long a reply token lives when its request never expires."""


@dataclass(frozen=True)
class EmailConfig:
    """What composing, sending and reading email needs to know.

    Attributes:
        sender: ``EMAIL_FROM`` as written (``Greenlight <bot@example.com>``).
        domain: the domain of agent and reply addresses (``EMAIL_DOMAIN``,
            else the domain of ``EMAIL_FROM``).
        secret: signs reply tokens and confirmation links.
        public_url: where confirmation links point.
        bounces: whether refused replies get a polite explanation back.
        require_auth_results: every inbound email that acts as its sender (a new thread,
            a message, a decision, an answer) must pass DKIM or DMARC for its From domain.
        authserv_id: the receiving server's id in Authentication-Results; only headers
            naming it count (None: none count).
        ask_again_per_hour: answers to a sender's emails ("please answer again", why a
            reply did not count) per sender per hour, at most, both counted together.
        max_text_bytes: the most text an inbound email may carry (``MAX_BODY_BYTES``, as
            for any request body): its text part, or HTML part, and its subject.
    """

    sender: str
    domain: str
    secret: bytes
    public_url: str
    bounces: bool = True
    require_auth_results: bool = False
    authserv_id: str | None = None
    ask_again_per_hour: int = 5
    max_text_bytes: int = 1_000_000

    @property
    def sender_address(self) -> str:
        return parseaddr(self.sender)[1].lower()

    def agent_address(self, agent: str) -> str:
        return f"{agent}@{self.domain}"

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailConfig:
        sender = settings.email_from or ""
        address = parseaddr(sender)[1]
        if "@" not in address:
            raise ConfigError(
                f"EMAIL_FROM {sender!r} is not an email address, e.g. Greenlight <bot@example.com>"
            )
        if settings.email_secret is None or len(settings.email_secret.get_secret_value()) < 16:
            raise ConfigError(
                "EMAIL_SECRET must be set to at least 16 random characters: it signs reply "
                "addresses (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        authserv_id = (settings.email_authserv_id or "").strip().lower() or None
        if settings.email_require_auth_results and authserv_id is None:
            raise ConfigError(
                "EMAIL_REQUIRE_AUTH_RESULTS=true needs EMAIL_AUTHSERV_ID: the id your receiving "
                "mail server writes first in its Authentication-Results headers (e.g. "
                "mx.example.com); headers from any other server prove nothing"
            )
        return cls(
            sender=sender,
            domain=(settings.email_domain or address.rpartition("@")[2]).lower(),
            secret=settings.email_secret.get_secret_value().encode(),
            public_url=settings.public_url.rstrip("/"),
            bounces=settings.email_bounces,
            require_auth_results=settings.email_require_auth_results,
            authserv_id=authserv_id,
            ask_again_per_hour=settings.email_ask_again_per_hour,
            max_text_bytes=settings.max_body_bytes,
        )
