"""Web sign-in links: issued for one address, looked at any number of times, taken once
(``GETDEL``), expiring; and web sessions: one key per sign-in, which signing out deletes.

Only the SHA-256 digest of a link's token or a session's id is stored, so reading
Redis never yields a working link or session.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from bot.storage import keys
from bot.storage.connection import Client

GRACE = 60.0
"""Seconds Redis keeps a link past its expiry (the clock decides; this only cleans up)."""


@dataclass(frozen=True)
class SignInLink:
    """What a redeemed link signs in: ``email``, then off to ``next``."""

    email: str
    next: str


class SignInLinks:
    """Issues and redeems sign-in links.

    Args:
        redis: a client with ``decode_responses=True``.
    """

    def __init__(self, redis: Client) -> None:
        self.redis = redis

    async def issue(self, email: str, next: str, *, now: float, ttl: float) -> str:
        """A new token for ``email``, valid for ``ttl`` seconds from ``now``."""
        token = secrets.token_urlsafe(32)
        value = json.dumps({"email": email, "next": next, "expires": now + ttl})
        await self.redis.set(keys.signin_link(_digest(token)), value, px=int((ttl + GRACE) * 1000))
        return token

    async def find(self, token: str, *, now: float) -> SignInLink | None:
        """The link's address and destination, leaving it as it is (its page, before the
        person asks to sign in); None when ``redeem`` would find nothing."""
        return _valid(await self.redis.get(keys.signin_link(_digest(token))), now)

    async def redeem(self, token: str, *, now: float) -> SignInLink | None:
        """The link's address and destination, once: a second redeem, an unknown token or
        an expired one is None."""
        return _valid(await self.redis.getdel(keys.signin_link(_digest(token))), now)


class SignInSessions:
    """The sessions signed in now: a session cookie names one by its id, and is signed
    in only while its key exists.

    Args:
        redis: a client with ``decode_responses=True``.
    """

    def __init__(self, redis: Client) -> None:
        self.redis = redis

    async def start(self, email: str, *, ttl: float) -> str:
        """A new session id for ``email``, kept for ``ttl`` seconds."""
        sid = secrets.token_urlsafe(32)
        await self.redis.set(keys.signin_session(_digest(sid)), email, px=int(ttl * 1000))
        return sid

    async def alive(self, sid: str) -> bool:
        """Whether session ``sid`` is still signed in (one ``EXISTS``)."""
        return bool(await self.redis.exists(keys.signin_session(_digest(sid))))

    async def end(self, sid: str) -> None:
        """Sign session ``sid`` out, wherever its cookie is."""
        await self.redis.delete(keys.signin_session(_digest(sid)))


def _valid(raw: str | bytes | None, now: float) -> SignInLink | None:
    if raw is None:
        return None
    data = json.loads(raw)
    if float(data["expires"]) <= now:
        return None
    return SignInLink(email=str(data["email"]), next=str(data["next"]))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
