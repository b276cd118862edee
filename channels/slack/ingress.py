"""The gate on ``POST /slack/events``: signed, then readable. Pure.

Bolt parses a request's body before it checks the signature, and assumes every
field has the type Slack documents, so an unsigned ``[[]]`` or a signed payload
with a list where an object belongs was a 500. Here the signature is checked on
the raw bytes first (401 when it fails), then the body must parse the way Bolt
would parse it, into an object, with JSON we could store and read back (400 when
it does not): ``bot.domain.limits.from_json``, the reader of every JSON from outside.
Socket Mode's envelopes are read by the same reader (``to_envelope``). A JSON body is
parsed once, here: an Events API callback goes on to ``channels.slack.events`` as
this object, without Bolt (``is_event``). Errors from the payload's shape past this
gate are 400s too (``is_malformed``); anything else stays a 5xx, which Slack retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import parse_qsl

from bot.domain.errors import (
    BadRequestError,
    InvalidInputError,
    RefusedError,
    TooLargeError,
    UnauthorizedError,
)
from bot.domain.limits import from_json
from bot.web.errors import status_of

TOLERANCE = 300
"""Seconds a request's timestamp may be off, as Slack's own verifier allows."""
_STAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def verify(secret: str, raw: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
    """Check ``X-Slack-Signature`` on the raw bytes, before anything parses them.

    The same v0 algorithm as ``slack_sdk.signature.SignatureVerifier``, over the
    bytes as received: that verifier decodes the body as UTF-8 first (and fails
    on other bytes) and calls ``int()`` on the timestamp header as given.

    Raises:
        UnauthorizedError: the headers are missing, malformed, stale or wrong.
    """
    stamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not _STAMP.fullmatch(stamp) or not _SIGNATURE.fullmatch(given):
        raise UnauthorizedError("missing or malformed Slack signature headers")
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > TOLERANCE:
        raise UnauthorizedError(f"stale Slack request: timestamp {stamp} is too far from now")
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    if not hmac.compare_digest("v0=" + mac.hexdigest(), given):
        raise UnauthorizedError("wrong Slack signature: not signed with SLACK_SIGNING_SECRET")


def to_json(raw: bytes, content_type: str | None) -> dict[str, Any] | None:
    """The body's JSON object, or None for a form; refuse a body Bolt could not read into
    an object (Bolt's ``parse_body``, strictly).

    A form (interactivity, the slash command) is left for Bolt to read; only its
    ``payload`` field is checked.

    Raises:
        BadRequestError: not UTF-8, not JSON where JSON belongs, JSON we could not
            store (``bot.domain.limits.from_json``: lone surrogates, ``NaN`` or infinite
            numbers, nested deeper than 32 levels), or not an object.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8 (bad byte at offset {exc.start})") from exc
    if not text:
        raise BadRequestError("the body is empty")
    if content_type == "application/json" or text.startswith("{"):
        return _object(raw, "the body")
    try:
        form = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"the form is not readable: {exc}") from exc
    if "payload" in text and "payload" in form:
        _object(form["payload"].encode(), "the payload")
    return None


def is_event(body: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a parsed body is an Events API callback (``channels.slack.events`` takes it)."""
    return body is not None and body.get("type") == "event_callback"


def to_envelope(raw: str, max_bytes: int) -> dict[str, Any]:
    """A Socket Mode envelope's JSON object, read as ``to_json`` reads an HTTP body: at
    most ``max_bytes`` of UTF-8 (``MAX_BODY_BYTES``, the body limit), by the same strict
    reader. Slack's client has already read it with Python's ``json``, which takes
    ``NaN``, lone surrogates and any nesting; its listeners must not see what this refuses.

    Raises:
        TooLargeError: over ``max_bytes``.
        BadRequestError: as ``to_json``.
    """
    data = raw.encode()  # a websocket's text arrives as UTF-8: always encodable
    if len(data) > max_bytes:
        raise TooLargeError(
            f"the envelope is {len(data)} bytes, over the limit of {max_bytes}", limit=max_bytes
        )
    return _object(data, "the envelope")


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = from_json(raw, what)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from exc
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} is not a JSON object")
    return value


def is_malformed(error: Exception) -> bool:
    """Whether an error raised by a listener comes from the payload's shape, not from us.

    A signed payload whose fields have other types than Slack documents raises
    these where Bolt or a listener reads them; Redis failures and our own
    runtime failures are not among them and stay a 500 that Slack retries.
    """
    if isinstance(error, RefusedError):
        return True
    return isinstance(error, TypeError | AttributeError | KeyError | IndexError | ValueError)


def to_error(error: Exception) -> tuple[int, bytes]:
    """The status and JSON body that answer a malformed payload."""
    if isinstance(error, RefusedError) and not isinstance(error, InvalidInputError):
        status, code, detail = status_of(error), error.code, error.message
    else:
        status, code = 400, "bad_request"
        detail = error.message if isinstance(error, InvalidInputError) else repr(error)
    body: dict[str, Any] = {"error": code, "detail": f"malformed Slack payload: {detail}"}
    return status, json.dumps(body).encode()
