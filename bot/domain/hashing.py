"""SHA-256 for what is hashed on every write (the audit chain's links, arguments' hashes).

From a copy of one prepared hash object: ``hashlib.sha256()`` looks the algorithm up in
OpenSSL on each call, which, with a second OpenSSL loaded in the process (the
``cryptography`` package, which the MCP SDK imports), costs more than hashing the few
hundred bytes of an event.
"""

from __future__ import annotations

import binascii
import hashlib

_SHA256 = hashlib.sha256()


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data``."""
    h = _SHA256.copy()
    h.update(data)
    return h.digest()


def chain_hash(raw: str | bytes) -> str:
    """The hash of one event as stored: SHA-256, its first 128 bits in base64url. The audit
    chain links each event to it (``bot.domain.audit``), and an event stored without its id
    has its start for one (``bot.domain.events.stored_id``)."""
    data = raw.encode() if isinstance(raw, str) else raw
    # ``base64.urlsafe_b64encode`` without its two Python frames: 16 bytes are 22
    # characters and "==".
    encoded = binascii.b2a_base64(sha256(data)[:16], newline=False)[:22]
    return encoded.translate(_URLSAFE).decode()


_URLSAFE = bytes.maketrans(b"+/", b"-_")
"""Base64 to base64url."""
