"""Inbound MIME to a plain record: addresses, threading ids, the new text. Pure.

Both inbound paths (the SMTP receiver and ``POST /email/inbound``) hand the
raw bytes to ``from_bytes``; nothing else parses mail.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.errors import HeaderParseError, MessageDefect
from email.message import EmailMessage, MIMEPart
from email.utils import getaddresses, parseaddr

import html2text

from bot.domain.errors import InvalidInputError
from channels.email.replies import to_new_text

_MSGID = re.compile(r"<[^<>\s]+>")
_AUTO_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
_DAEMONS = {"mailer-daemon", "postmaster"}
# What auto-responders put before the original subject (or send alone), in the languages
# replies are read in: many send no Auto-Submitted, and then this is all that tells.
# Only as a prefix with its colon, so "Out of office tomorrow, deploy first" still counts.
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|absence du bureau"
    r"|respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori sede"
    r"|automatisch antwoord|afwezig|automatiskt svar|autosvar|fraværende"
    r"|odpowied[źz] automatyczna|automatick[áa] odpov[ěe][ďd])"
    r"(?:\s+auto-?reply)?\s*(?::|$)",  # "Automatic reply: <theirs>", or that alone
    re.IGNORECASE,
)
# Defects after which we cannot trust we read the message as the sender meant it.
_FATAL_DEFECTS = {
    "MissingHeaderBodySeparatorDefect": "no blank line between headers and body (not MIME?)",
    "MultipartInvariantViolationDefect": "a multipart message without its parts",
    "StartBoundaryNotFoundDefect": "a multipart boundary that never appears",
    "NoBoundaryInMultipartDefect": "a multipart message without a boundary",
    "InvalidBase64CharactersDefect": "a base64 part that is not base64",
}


MAX_DEPTH = 16
"""Deepest nesting of multipart and message parts read; real mail nests a handful."""
MAX_PARTS = 256
"""Most MIME parts in one message."""
# Content types that hold other parts, where the parser recurses: counted before parsing,
# so a message nested a thousand deep is refused before it can exhaust the stack.
_CONTAINER = re.compile(rb"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Inbound:
    """One inbound email, as the channel needs it."""

    message_id: str
    """``<…>`` as sent, or a stable one derived from the bytes when it is missing."""
    sender: str
    """The ``From`` address, lowercased."""
    subject: str
    recipients: list[str]
    """Envelope recipients when known, else To/Cc/Delivered-To/X-Original-To; lowercased."""
    in_reply_to: list[str]
    references: list[str]
    text: str
    """Only what the sender wrote now: quotes and signatures stripped."""
    automatic: str | None
    """Why this is an auto-reply or bounce (then it never counts), or None."""
    authenticated: bool
    """Whether the topmost Authentication-Results says dkim or dmarc passed for From's domain."""
    headers: dict[str, str] = field(default_factory=dict)

    def thread_ids(self) -> list[str]:
        """Message-IDs this replies to, nearest first."""
        seen: list[str] = []
        for mid in [*self.in_reply_to, *reversed(self.references)]:
            if mid not in seen:
                seen.append(mid)
        return seen

    def root(self) -> str:
        """The conversation's first Message-ID, which names its thread."""
        return self.references[0] if self.references else self.message_id


def from_bytes(
    raw: bytes, *, mail_from: str | None = None, rcpts: list[str] | None = None
) -> Inbound:
    """Parse a raw message; ``mail_from``/``rcpts`` are the SMTP envelope when known.

    Raises:
        InvalidInputError: the bytes are not an email we can read (no headers,
            no From address, a broken MIME structure).
    """
    if not raw.strip():
        raise InvalidInputError("malformed email: the message is empty")
    if len(_CONTAINER.findall(raw)) > MAX_PARTS:
        raise InvalidInputError(f"malformed email: over {MAX_PARTS} multipart or message parts")
    try:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        _check_shape(msg)
        sender = _address(msg.get("From", ""))
        subject = str(msg.get("Subject", "") or "").strip()
        headers = {k.lower(): str(v) for k, v in msg.items()}
    except (HeaderParseError, ValueError, IndexError, TypeError) as exc:
        raise InvalidInputError(f"malformed email: unreadable headers ({exc})") from exc
    except RecursionError as exc:  # a safety net: _CONTAINER counts what the parser nests
        raise InvalidInputError("malformed email: MIME parts nested too deep") from exc
    defects = {type(d).__name__ for d in _all_defects(msg)}
    if fatal := sorted(_FATAL_DEFECTS[d] for d in defects if d in _FATAL_DEFECTS):
        raise InvalidInputError(f"malformed email: {'; '.join(fatal)}")
    if not sender:
        raise InvalidInputError("malformed email: no From address")
    text = to_new_text(_body_text(msg))
    ids = _ids(msg.get("Message-ID", ""))
    message_id = ids[0] if ids else f"<{hashlib.sha256(raw).hexdigest()[:32]}@missing-id>"
    return Inbound(
        message_id=message_id,
        sender=sender,
        subject=subject,
        recipients=[a.lower() for a in rcpts] if rcpts else _header_recipients(msg),
        in_reply_to=_ids(msg.get("In-Reply-To", "")),
        references=_ids(msg.get("References", "")),
        text=text,
        automatic=automatic_reason(msg, mail_from),
        authenticated=is_authenticated(msg, sender),
        headers=headers,
    )


def _check_shape(msg: EmailMessage) -> None:
    """Refuse a message nested deeper than ``MAX_DEPTH`` or with more than ``MAX_PARTS`` parts.

    Iterative: everything after this (``walk``, ``get_body``) recurses once per level.
    """
    stack: list[tuple[object, int]] = [(msg, 1)]
    parts = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"malformed email: MIME parts nested deeper than {MAX_DEPTH}")
        if parts > MAX_PARTS:
            raise InvalidInputError(f"malformed email: more than {MAX_PARTS} MIME parts")
        if isinstance(part, EmailMessage) and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in children)


def automatic_reason(msg: EmailMessage, mail_from: str | None = None) -> str | None:
    """Why a message was sent by a machine (RFC 3834 and common practice), or None."""
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence in _AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Failed-Recipients"):
        if msg.get(name) is not None:
            return f"{name} header"
    if mail_from == "" or str(msg.get("Return-Path", "")).strip() == "<>":
        return "empty Return-Path (a bounce)"
    subject = str(msg.get("Subject", "") or "")
    if _AUTO_SUBJECT.match(subject):
        return f"an auto-reply's subject ({subject[:60]!r})"
    if msg.get_content_type() == "multipart/report":
        return "a delivery or read report"
    local = _address(msg.get("From", "")).partition("@")[0]
    if local in _DAEMONS:
        return f"sent by {local}"
    return None


def is_authenticated(msg: EmailMessage, sender: str) -> bool:
    """Whether the receiving server's Authentication-Results pass DKIM or DMARC for From.

    Only the topmost header counts: it is the one our own mail server added;
    the ones below it came with the message and prove nothing.
    """
    results = msg.get_all("Authentication-Results") or []
    if not results or "@" not in sender:
        return False
    domain = sender.rpartition("@")[2]
    top = str(results[0]).lower()
    for clause in top.split(";")[1:]:
        method, _, rest = clause.strip().partition("=")
        verdict = rest.split(None, 1)[0] if rest.strip() else ""
        if verdict != "pass":
            continue
        props = dict(re.findall(r"([a-z]+\.[a-z-]+)=([^\s;]+)", rest))
        if method == "dkim" and _aligned(props.get("header.d", ""), domain):
            return True
        if method == "dmarc" and _aligned(props.get("header.from", ""), domain):
            return True
    return False


def _aligned(signed: str, domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    signed = signed.strip().strip('"').lower()
    return bool(signed) and (
        signed == domain or domain.endswith("." + signed) or signed.endswith("." + domain)
    )


def _body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    if part is not None:
        return _content(part)
    part = msg.get_body(preferencelist=("html",))
    if part is not None:
        return to_text(_content(part))
    return ""


def to_text(html: str) -> str:
    """HTML-only mail as plain text, blockquotes as ``>`` lines, for the reply reader."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    return str(converter.handle(html))


def _content(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError) as exc:  # an unknown charset, a broken encoding
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise InvalidInputError(f"malformed email: unreadable body ({exc})") from exc
        return payload.decode("utf-8", errors="replace")
    return content if isinstance(content, str) else ""


def _all_defects(msg: EmailMessage) -> list[MessageDefect]:
    found = list(msg.defects)
    for part in msg.walk():
        if part is not msg:
            found.extend(part.defects)
    return found


def _address(header: object) -> str:
    _, addr = parseaddr(str(header))
    return addr.strip().lower() if "@" in addr else ""


def _header_recipients(msg: EmailMessage) -> list[str]:
    values = [
        str(v)
        for name in ("Delivered-To", "X-Original-To", "To", "Cc")
        for v in msg.get_all(name) or []
    ]
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


def _ids(header: object) -> list[str]:
    return _MSGID.findall(str(header))
