"""API tokens: scoped bearer tokens, stored by their SHA-256 digest, never in the clear.

A token is a high-entropy random string shown once when it is created. Redis
keeps its digest and what it may do (its scope, and for an approver the one
identity it decides as); a request's token is found by the digest of what it
sent, and that look-up records when the token was last used, in the same round
trip.

A process trusts what it found for ``FRESH_FOR`` (one second) before looking
again: an agent making many calls costs a Redis round trip a second, not one a
call. So a token revoked by another process is refused everywhere at most one
second later (the process that revoked it refuses it at once), and its last use
is recorded to within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from bot.domain.errors import ConflictError, NotFoundError
from bot.storage import keys
from bot.storage.connection import Client
from bot.storage.script import Script

Scope = Literal["admin", "agent", "approver"]
SCOPES: tuple[Scope, ...] = ("admin", "agent", "approver")
PREFIX = "glt_"
"""Tokens start with this, so secret scanners and people can recognise them."""
FRESH_FOR = 1.0
"""Seconds a process uses what it found of a token before finding it in Redis again: the
longest a token revoked by another process still works here."""
KEPT = 1024
"""Tokens a process remembers at most (the oldest found is forgotten first)."""


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a token: everything but the token."""

    name: str
    scope: Scope
    identity: str | None
    """For an approver: who it decides as; else None."""
    created_at: float
    last_used_at: float | None = None


def digest_of(token: str) -> str:
    """The SHA-256 of a token, in hex: what Redis keeps and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


_CREATE = Script(
    """
if redis.call('HEXISTS', K.names, A.name) == 1 then return 0 end
redis.call('HSET', K.names, A.name, A.record)
redis.call('HSET', K.digests, A.digest, A.name)
return 1
""",
    keys=("names", "digests"),
    args=("name", "record", "digest"),
)

_REVOKE = Script(
    """
local record = redis.call('HGET', K.names, A.name)
if not record then return false end
local digest = cjson.decode(record)['digest']
redis.call('HDEL', K.digests, digest)
redis.call('HDEL', K.names, A.name)
redis.call('HDEL', K.used, A.name)
return digest
""",
    keys=("names", "digests", "used"),
    args=("name",),
)

_USE = Script(
    """
local name = redis.call('HGET', K.digests, A.digest)
if not name then return false end
local record = redis.call('HGET', K.names, name)
if not record then return false end
redis.call('HSET', K.used, name, A.now)
return record
""",
    keys=("names", "digests", "used"),
    args=("digest", "now"),
)

_KEYS = {"names": keys.token_names(), "digests": keys.token_digests(), "used": keys.token_used()}


class Tokens:
    """Creates, finds, lists and revokes API tokens.

    Args:
        fresh_for: seconds what was found of a token is used without Redis (``FRESH_FOR``).
    """

    def __init__(self, redis: Client, *, fresh_for: float = FRESH_FOR) -> None:
        self.redis = redis
        self.fresh_for = fresh_for
        self._create = _CREATE.bind(redis)
        self._revoke = _REVOKE.bind(redis)
        self._use = _USE.bind(redis)
        self._found: dict[str, tuple[float, TokenInfo]] = {}
        """Digest -> when it was found in Redis (by the clock ``use`` is given), and what."""

    async def create(
        self, name: str, scope: Scope, identity: str | None, *, now: float
    ) -> tuple[str, TokenInfo]:
        """A new token and what it may do; the token is returned here and never again.

        Raises:
            ConflictError: a token with this name exists (revoke it first).
        """
        token = new_token()
        digest = digest_of(token)
        record = {
            "name": name,
            "scope": scope,
            "identity": identity,
            "created": now,
            "digest": digest,
        }
        args = {"name": name, "record": json.dumps(record), "digest": digest}
        if not await self._create(_KEYS, args):
            raise ConflictError(f"a token named {name!r} exists; revoke it first", name=name)
        return token, TokenInfo(name, scope, identity, now)

    async def use(self, token: str, *, now: float) -> TokenInfo | None:
        """The token's info, recording that it was used now; None if unknown or revoked.

        Found in Redis at most once per ``fresh_for`` seconds: until then this process
        answers from what it found, and records no new use.
        """
        digest = digest_of(token)
        known = self._found.get(digest)
        if known is not None and 0 <= now - known[0] < self.fresh_for:
            return known[1]
        found = await self._use(_KEYS, {"digest": digest, "now": repr(now)})
        record = json.loads(found) if found is not None else {}
        # Found by its digest already; compared again in constant time for good measure.
        if not hmac.compare_digest(str(record.get("digest", "")), digest):
            self._found.pop(digest, None)
            return None
        info = _info(record, now)
        self._found.pop(digest, None)  # re-inserted last: the oldest found go first
        self._found[digest] = (now, info)
        if len(self._found) > KEPT:
            del self._found[next(iter(self._found))]
        return info

    async def list(self) -> list[TokenInfo]:
        """Every token, by name."""
        names: dict[str, str] = {
            _text(k): _text(v) for k, v in (await self.redis.hgetall(keys.token_names())).items()
        }
        used = {
            _text(k): float(_text(v))
            for k, v in (await self.redis.hgetall(keys.token_used())).items()
        }
        return [_info(json.loads(r), used.get(n)) for n, r in sorted(names.items())]

    async def revoke(self, name: str) -> None:
        """Forget the token named ``name``: it authenticates nothing from now on in this
        process, and in the others within ``fresh_for`` seconds.

        Raises:
            NotFoundError: no token has this name.
        """
        digest = await self._revoke(_KEYS, {"name": name})
        if digest is None:
            raise NotFoundError(f"no token named {name!r}", name=name)
        self._found.pop(_text(digest), None)


def _info(record: dict[str, Any], used: float | None) -> TokenInfo:
    scope = record["scope"]
    if scope not in SCOPES:  # only ever written by ``create``: never widen what is unknown
        raise ValueError(f"token {record['name']!r} has an unknown scope {scope!r}")
    return TokenInfo(
        name=str(record["name"]),
        scope=scope,
        identity=record.get("identity"),
        created_at=float(record["created"]),
        last_used_at=used,
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
