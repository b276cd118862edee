"""Inbound MIME to a plain record: addresses, threading ids, the new text. Pure.

Both inbound paths (the SMTP receiver and ``POST /email/inbound``) hand the
raw bytes to ``from_bytes``; nothing else parses mail. ``headers`` parses it, so that no
header costs more than a bounded time to read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from email.errors import HeaderParseError, MessageDefect
from email.headerregistry import AddressHeader
from email.message import Message
from email.utils import getaddresses

from bot.domain.errors import InvalidInputError, TooLargeError
from channels.email.headers import Fields, Part, parse, unfold
from channels.email.htmltext import to_text
from channels.email.replies import to_new_text

_MSGID = re.compile(r"<[^<>\s]+>")
_REACTION = "text/vnd.google.email-reaction+json"
_AUTHSERV_ID = re.compile(r"^\s*(?:\([^()]*\)\s*)*([^\s;()]+)")
# A property (``header.d=example.com``). Only from the start of a word: tried at every letter
# of a long one, it took time quadratic in its length (8 s for 100 KB of letters).
_PROPERTY = re.compile(r"(?<![a-z])([a-z]+\.[a-z-]+)=([^\s;]+)")
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
MAX_THREAD_IDS = 50
"""Most Message-IDs a reply is matched to a thread by, nearest first, plus its root.

Each is one read of the channel's state, one after another. A reply's ``In-Reply-To``
names the message it answers and ``References`` adds one id a message, so the ids
that lead to a thread (our emails, replies we linked) are the nearest few, and the
root names a thread started by email. Fifty follows a conversation fifty messages
back for a few milliseconds; the 5,000 ids ``MAX_HEADER_BYTES`` holds cost no more.
"""
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
    """Whether our server's Authentication-Results says dkim or dmarc passed for From's domain."""
    reaction: str | None = None
    """The emoji of an emoji reaction (Gmail's reaction part), which is never an answer."""

    def thread_ids(self) -> list[str]:
        """Message-IDs this replies to, nearest first: ``In-Reply-To``, then ``References``
        from the end, at most ``MAX_THREAD_IDS`` of them; then the conversation's root."""
        seen: set[str] = set()
        nearest: list[str] = []
        for mid in itertools.chain(self.in_reply_to, reversed(self.references)):
            if len(nearest) == MAX_THREAD_IDS:
                break
            if mid not in seen:
                seen.add(mid)
                nearest.append(mid)
        if self.references and self.references[0] not in seen:
            nearest.append(self.references[0])
        return nearest

    def root(self) -> str:
        """The conversation's first Message-ID, which names its thread."""
        return self.references[0] if self.references else self.message_id


def from_bytes(
    raw: bytes,
    *,
    mail_from: str | None = None,
    rcpts: list[str] | None = None,
    authserv_id: str | None = None,
    max_text: int | None = None,
) -> Inbound:
    """Parse a raw message; ``mail_from``/``rcpts`` are the SMTP envelope when known
    (the null path as ``"<>"`` or ``""``).

    ``authserv_id`` names our receiving server in Authentication-Results (see
    ``is_authenticated``). ``max_text`` bounds, in UTF-8 bytes, the subject and the
    body part read (text/plain, else the HTML before it becomes text), before its
    quotes are stripped: attachments and inline images do not count.

    Raises:
        TooLargeError: the subject or the body part read is over ``max_text`` bytes, the
            header text over ``MAX_HEADER_BYTES``, or From, Subject or a Content-Type
            over ``MAX_FIELD_BYTES`` (see ``headers``).
        InvalidInputError: the bytes are not an email we can read (no headers,
            a broken MIME structure), or ``From`` is not exactly one address.
    """
    if not raw.strip():
        raise InvalidInputError("malformed email: the message is empty")
    if len(_CONTAINER.findall(raw)) > MAX_PARTS:
        raise InvalidInputError(f"malformed email: over {MAX_PARTS} multipart or message parts")
    try:
        msg = parse(raw)
        _check_shape(msg)
        fields = Fields(msg)
        sender, not_one = _sender(fields)
        subject = str(fields.parsed("Subject") or "").strip()
        recipients = [a.lower() for a in rcpts] if rcpts else _header_recipients(fields)
    except (HeaderParseError, ValueError, IndexError, TypeError) as exc:
        raise InvalidInputError(f"malformed email: unreadable headers ({exc})") from exc
    except RecursionError as exc:  # _CONTAINER counts what the parser nests: a safety net there
        raise InvalidInputError(_TOO_DEEP) from exc
    defects = {type(d).__name__ for d in _all_defects(msg)}
    if fatal := sorted(_FATAL_DEFECTS[d] for d in defects if d in _FATAL_DEFECTS):
        raise InvalidInputError(f"malformed email: {'; '.join(fatal)}")
    if not_one:
        raise InvalidInputError(not_one)
    _bounded("subject", subject, max_text)
    text = to_new_text(_body_text(msg, max_text))
    ids = _ids(fields.all("message-id"))
    message_id = ids[0] if ids else f"<{hashlib.sha256(raw).hexdigest()[:32]}@missing-id>"
    return Inbound(
        message_id=_storable(message_id),
        sender=_storable(sender),
        subject=_storable(subject),
        recipients=[_storable(a) for a in recipients],
        in_reply_to=[_storable(i) for i in _ids(fields.all("in-reply-to"))],
        references=[_storable(i) for i in _ids(fields.all("references"))],
        text=_storable(text),
        automatic=automatic_reason(msg, fields, sender, subject, mail_from),
        authenticated=is_authenticated(fields, sender, authserv_id),
        reaction=reaction_of(msg),
    )


def _storable(text: str) -> str:
    """Text as it can be stored: bytes the parser could not decode (kept as lone
    surrogates) become U+FFFD, so an event holding it can be written and read back."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "replace").decode("utf-8")


def _check_shape(msg: Part) -> None:
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
        if isinstance(part, Part) and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in children)


def automatic_reason(
    msg: Message, fields: Fields, sender: str, subject: str, mail_from: str | None = None
) -> str | None:
    """Why a message was sent by a machine (RFC 3834 and common practice), or None.

    ``sender`` and ``subject`` are the From address and the decoded Subject.
    """
    auto = (fields.text("Auto-Submitted") or "no").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    precedence = (fields.text("Precedence") or "").strip().lower()
    if precedence in _AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Failed-Recipients"):
        if name in fields:
            return f"{name} header"
    return_path = fields.text("Return-Path")
    if (mail_from is not None and _is_null_path(mail_from)) or (
        return_path is not None and _is_null_path(return_path)
    ):
        return "empty Return-Path (a bounce or an auto-reply)"
    if _AUTO_SUBJECT.match(subject):
        return f"an auto-reply's subject ({subject[:60]!r})"
    if msg.get_content_type() == "multipart/report":
        return "a delivery or read report"
    local = sender.partition("@")[0]
    if local in _DAEMONS:
        return f"sent by {local}"
    return None


def _is_null_path(path: str) -> bool:
    """Whether a return path is the null one, as the envelope (aiosmtpd keeps ``MAIL
    FROM:<>`` as ``"<>"``) or a ``Return-Path`` header gives it: bounces and auto-replies
    are sent from it (RFC 5321 §4.5.5, RFC 3834 §3.1.2)."""
    return path.strip().removeprefix("<").removesuffix(">").strip() == ""


def reaction_of(msg: Message) -> str | None:
    """The emoji of an emoji reaction (a ``text/vnd.google.email-reaction+json`` part), or None.

    Gmail sends a reaction with a text fallback ("👍 reacted via Gmail"), so it
    must be recognised by its part, not its text.
    """
    for part in msg.walk():
        if part.get_content_type() != _REACTION:
            continue
        try:
            emoji = json.loads(_content(part)).get("emoji")
        except (ValueError, AttributeError, InvalidInputError):
            emoji = None
        return emoji if isinstance(emoji, str) and emoji else "a reaction"
    return None


def is_authenticated(fields: Fields, sender: str, authserv_id: str | None = None) -> bool:
    """Whether the receiving server's Authentication-Results pass DKIM or DMARC for From.

    With ``authserv_id``, only headers our server wrote count: those naming it
    (RFC 8601 §5: any other is ignored, wherever it stands), the topmost of them.
    Without it, the topmost header, the one the nearest server added.
    """
    results = [unfold(r) for r in fields.all("Authentication-Results")]
    if authserv_id is not None:
        results = [r for r in results if _authserv_id_of(r) == authserv_id.lower()]
    if not results or "@" not in sender:
        return False
    domain = sender.rpartition("@")[2]
    top = results[0].lower()
    for clause in top.split(";")[1:]:
        method, _, rest = clause.strip().partition("=")
        verdict = rest.split(None, 1)[0] if rest.strip() else ""
        if verdict != "pass":
            continue
        props = dict(_PROPERTY.findall(rest))
        if method == "dkim" and _aligned(props.get("header.d", ""), domain):
            return True
        if method == "dmarc" and _aligned(props.get("header.from", ""), domain):
            return True
    return False


def _authserv_id_of(header: str) -> str | None:
    """The authserv-id an Authentication-Results header starts with (after any comment)."""
    found = _AUTHSERV_ID.match(header)
    return found[1].lower() if found else None


def _aligned(signed: str, domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    signed = signed.strip().strip('"').lower()
    return bool(signed) and (
        signed == domain or domain.endswith("." + signed) or signed.endswith("." + domain)
    )


def _body_text(msg: Part, max_text: int | None) -> str:
    part = msg.get_body(preferencelist=("plain",))
    if part is not None:
        return _bounded("text", _content(part), max_text)
    part = msg.get_body(preferencelist=("html",))
    if part is not None:
        return to_text(_bounded("HTML", _content(part), max_text))
    return ""


def _bounded(what: str, text: str, max_text: int | None) -> str:
    """``text``, unless it is over ``max_text`` bytes: checked before it is read further."""
    if max_text is not None and len(text.encode("utf-8", "surrogatepass")) > max_text:
        raise TooLargeError(
            f"the email's {what} is over {max_text} bytes (MAX_BODY_BYTES); nothing was read "
            "from it (attachments do not count)"
        )
    return text


def _content(part: Message) -> str:
    """A text part's text: its bytes decoded by its charset, undecodable ones replaced.

    ``get_content_charset`` reads an RFC 2231 charset (``charset*=utf-8''utf-8``), which
    ``get_param`` gives compat32's way, as a tuple.
    """
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise InvalidInputError("malformed email: unreadable body")
    try:
        return payload.decode(part.get_content_charset() or "ascii", errors="replace")
    except (LookupError, ValueError):  # an unknown charset, a codec without "replace"
        return payload.decode("utf-8", errors="replace")


def _all_defects(msg: Message) -> list[MessageDefect]:
    found = list(msg.defects)
    for part in msg.walk():
        if part is not msg:
            found.extend(part.defects)
    return found


def _sender(fields: Fields) -> tuple[str, str | None]:
    """The one From address, lowercased, or why there is not exactly one."""
    count = len(fields.all("From"))
    if count > 1:
        return "", f"refused: {count} From headers; a reply must come from one address"
    header = fields.parsed("From")
    if not isinstance(header, AddressHeader):
        return "", "malformed email: no From address"
    if any(g.display_name is not None for g in header.groups):
        return "", f"refused: From is a group ({str(header)[:80]!r}), not one person's address"
    named = [a.addr_spec.lower() for a in header.addresses if "@" in a.addr_spec]
    if len(named) > 1:
        listed = ", ".join(named[:5])
        return "", f"refused: From names {len(named)} addresses ({listed}); it must name one"
    if not named:
        return "", "malformed email: no From address"
    return named[0], None


_TOO_DEEP = "malformed email: nested too deep (MIME parts, or groups or comments in a header)"
MAX_COMMENT_DEPTH = 16
"""The deepest comments nest in an address header read here. Python's address parser
recurses into them in some patch releases (3.11.7: a RecursionError past about 1,000) and
not in others (Debian's 3.11.2): refused by name here, the same on every version."""


def _header_recipients(fields: Fields) -> list[str]:
    # getaddresses (compat32's parser) takes time linear in the fields' length; it reads
    # them as they came, encoded display names left as they are (only addresses matter).
    # A trailing comma is dropped: Debian's 3.11.2 then read no address of any header.
    names = ("Delivered-To", "X-Original-To", "To", "Cc")
    values = [unfold(v).strip().rstrip(",") for name in names for v in fields.all(name)]
    if any(_comment_depth(v) > MAX_COMMENT_DEPTH for v in values):
        raise InvalidInputError(_TOO_DEEP)
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


def _comment_depth(value: str) -> int:
    """How deep comments nest in an address header's ``value`` (outside quoted strings)."""
    if value.count("(") <= MAX_COMMENT_DEPTH:
        return value.count("(")
    depth = deepest = 0
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"' and depth == 0:
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")" and depth:
            depth -= 1
    return deepest


def _ids(values: list[str]) -> list[str]:
    """The ``<…>`` Message-IDs in the first of a header's raw values, in order: linear in its
    length (the header parser takes time quadratic in it: 10 s for 60,000 ids)."""
    return _MSGID.findall(values[0]) if values else []
