"""Reply tokens: short, signed, expiring plus-addresses bound to one request and one person.

A token packs the request id (``th_<20 hex>.r<8 hex>``: 14 bytes), the expiry
(4 bytes, Unix seconds), a keyed tag of the recipient's address (4 bytes) and
a MAC over all of it (8 bytes), in lowercase base32: 48 characters, so
``reply+<token>@domain`` stays under the 64-character local-part limit.

The recipient is a keyed tag rather than a MAC input so a token can be checked
on its own (at RCPT time, before the sender is known) and then, separately,
matched against who actually replied. Everything here is pure.

A decision link carries a token of its own (``purpose="link"``, another MAC
key): a reply address travels in headers and mail logs, and knowing it must
not open the web page, where no sender or DKIM check stands behind it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Literal

from bot.domain.ids import REQUEST_ID

REPLY_PREFIX = "reply+"
_ID_BYTES = 14
_TAG_BYTES = 4
_MAC_BYTES = 8
_SIZE = _ID_BYTES + 4 + _TAG_BYTES + _MAC_BYTES
_LENGTH = 48


@dataclass(frozen=True)
class Claim:
    """What a genuine token says: which request, until when, and for whom (as a tag)."""

    request_id: str
    expires_at: int
    recipient_tag: bytes

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def is_for(self, address: str, secret: bytes) -> bool:
        """True when ``address`` is the person this token was issued to."""
        return hmac.compare_digest(self.recipient_tag, _recipient_tag(address, secret))


Purpose = Literal["reply", "link"]


def mint(
    request_id: str,
    recipient: str,
    expires_at: float,
    secret: bytes,
    *,
    purpose: Purpose = "reply",
) -> str:
    """A token for ``recipient`` to answer ``request_id`` until ``expires_at``.

    Deterministic: the same inputs give the same token, so a resent email
    carries the same reply address.
    """
    match = REQUEST_ID.match(request_id)
    if match is None:
        raise ValueError(f"not a request id: {request_id!r}")
    thread_hex, request_hex = match.group(1).removeprefix("th_"), request_id.rsplit(".r", 1)[1]
    body = (
        bytes.fromhex(thread_hex)
        + bytes.fromhex(request_hex)
        + struct.pack(">I", int(expires_at))
        + _recipient_tag(recipient, secret)
    )
    return _b32(body + _mac(body, secret, purpose))


def verify(token: str, secret: bytes, *, purpose: Purpose = "reply") -> Claim | None:
    """The claim of a genuine token, or None for anything forged, altered or malformed.

    Expiry and the recipient are for the caller to check against the claim.
    """
    if len(token) != _LENGTH:
        return None
    try:
        raw = base64.b32decode(token.upper())
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _SIZE:
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(body, secret, purpose)):
        return None
    thread_hex, request_hex = body[:10].hex(), body[10:_ID_BYTES].hex()
    (expires_at,) = struct.unpack(">I", body[_ID_BYTES : _ID_BYTES + 4])
    return Claim(
        request_id=f"th_{thread_hex}.r{request_hex}",
        expires_at=expires_at,
        recipient_tag=body[_ID_BYTES + 4 : _ID_BYTES + 4 + _TAG_BYTES],
    )


def to_reply_address(token: str, domain: str) -> str:
    return f"{REPLY_PREFIX}{token}@{domain}"


def token_of(address: str, domain: str) -> str | None:
    """The token in ``reply+<token>@domain``, or None when the address is not one."""
    local, _, at = address.strip().strip("<>").rpartition("@")
    if at.lower() != domain.lower() or not local.lower().startswith(REPLY_PREFIX):
        return None
    return local[len(REPLY_PREFIX) :].lower()


def _recipient_tag(address: str, secret: bytes) -> bytes:
    key = b"recipient\x00" + secret
    return hmac.new(key, address.strip().lower().encode(), hashlib.sha256).digest()[:_TAG_BYTES]


def _mac(body: bytes, secret: bytes, purpose: Purpose) -> bytes:
    # "token" for replies: the key reply addresses already sent out were signed with.
    key = (b"token\x00" if purpose == "reply" else b"link\x00") + secret
    return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()
