"""Webhook signatures: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, pure.

The same scheme signs inbound messages (checked by ``verify``) and outbound
callbacks (made by ``sign``); several ``v1`` values let a sender rotate secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bot.domain.errors import UnauthorizedError

SIGNATURE_HEADER = "X-Greenlight-Signature"
# ASCII only, and bounded: str.isdigit() also accepts "²" (which int() refuses) and
# digits of other scripts, and a huge t overflows the comparison with a float clock.
_STAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-fA-F]{1,128}")
TOLERANCE = 300.0
"""Seconds a signature's timestamp may be off, either way: bounds replays of a captured request."""


def sign(secret: str, body: bytes, t: int) -> str:
    """The signature header value for ``body`` sent at unix time ``t``."""
    return f"t={t},v1={_mac(secret, body, t)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, *, tolerance: float = TOLERANCE
) -> None:
    """Check a signature header against the raw body; any ``v1`` may match (secret rotation).

    Raises:
        UnauthorizedError: the header is missing, malformed, stale or wrong.
    """
    if not header:
        raise UnauthorizedError(f"missing {SIGNATURE_HEADER} header")
    parts = [p.strip().partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    given = [v.lower() for k, _, v in parts if k == "v1" and _HEX.fullmatch(v)]
    if len(stamps) != 1 or not _STAMP.fullmatch(stamps[0]) or not given:
        raise UnauthorizedError(f"malformed {SIGNATURE_HEADER}: expected t=<unix>,v1=<hex>")
    t = int(stamps[0])
    if abs(now - t) > tolerance:
        raise UnauthorizedError(
            f"stale {SIGNATURE_HEADER}: t={t} is more than {tolerance:.0f}s from now"
        )
    expected = _mac(secret, body, t)
    # Check every value so the time taken does not depend on which one matched.
    if not sum(hmac.compare_digest(expected, v) for v in given):
        raise UnauthorizedError(f"wrong {SIGNATURE_HEADER}: not signed with our secret")


def _mac(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
