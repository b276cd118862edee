"""SHA-256 for what is hashed on every write (the audit chain's links, arguments' hashes).

From a copy of one prepared hash object: ``hashlib.sha256()`` looks the algorithm up in
OpenSSL on each call, which, with a second OpenSSL loaded in the process (the
``cryptography`` package, which the MCP SDK imports), costs more than hashing the few
hundred bytes of an event.
"""

from __future__ import annotations

import hashlib

_SHA256 = hashlib.sha256()


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data``."""
    h = _SHA256.copy()
    h.update(data)
    return h.digest()
