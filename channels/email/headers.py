"""Inbound mail parsed so that no header costs more than a bounded time to read. Pure.

The standard library's header parsers (``policy.default``'s, and compat32's parameter
parser) take time that grows with the square of a field's length: a 100 KB Subject took
up to 19 s, a 100 KB Content-Type over a minute, on the event loop of every process that
takes mail (web and workers both run the SMTP receiver). So a message
is parsed with compat32, which keeps each field as it came and parses none, while its
header text is counted against ``MAX_HEADER_BYTES``; then only the fields the channel reads
are read: tokens and machine-written fields as they came (``Fields.text``), From and
Subject by ``policy.default``'s parsers as before, on at most ``MAX_FIELD_BYTES``
(``Fields.parsed``).
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from bot.domain.errors import TooLargeError

MAX_HEADER_BYTES = 102_400
"""The most header text one message may carry: its header section and its MIME parts'
(those of an attached message included) together.

Postfix's default ``header_size_limit``, which it applies to each field (sendmail's
default for all of them is 32 KB). Real mail carries 2-30 KB, most of it Received,
DKIM and ARC fields. At this size the worst message costs about 0.3 s of CPU to read
(To and Cc of nothing but "@", read when the envelope is not known: compat32's address
parser is linear but slow), less than parsing a 20 MB message with an image does.
"""
MAX_FIELD_BYTES = 2_048
"""The longest value of a From, Subject or Content-Type field read.

Their parsers take time quadratic in a field's length; at this length the worst From
costs about 60 ms. Real ones are under 1 KB: one address with an encoded display name,
a subject at Outlook's 255-character maximum in any script, a type with its boundary
or a long file name.
"""
_LINE_BREAK = re.compile(r"\r\n?|\n")


class Part(EmailMessage):
    """A message or one of its MIME parts, parsed by ``parse``.

    Its fields are the raw strings compat32 keeps: ``get_content_type``,
    ``get_content_disposition``, ``walk`` and ``get_body`` read them cheaply, and
    ``get_param`` with compat32's parser (an RFC 2231 value is a tuple); ``get_content``
    needs a content manager passed in (compat32 has none).
    """

    def is_attachment(self) -> bool:
        # EmailMessage's would parse Content-Disposition with policy.default's parser.
        return self.get_content_disposition() == "attachment"


class _Spent:
    """The header text a parse has met so far, in bytes."""

    def __init__(self) -> None:
        self.bytes = 0


class _Policy(policy.Compat32):
    """compat32, making ``Part``s and counting each header field against the limits as the
    parser meets it, before anything reads it. One for each parse: it counts its header text.
    """

    spent: _Spent

    def __init__(self, **kw: Any) -> None:
        super().__init__(message_factory=Part, **kw)
        object.__setattr__(self, "spent", _Spent())  # a policy's settings are read-only

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        size = sum(map(len, sourcelines))  # the bytes as they came (ASCII + surrogateescape)
        self.spent.bytes += size
        if self.spent.bytes > MAX_HEADER_BYTES:
            raise TooLargeError(
                f"the email's headers are over {MAX_HEADER_BYTES} bytes (its own and its "
                "MIME parts' together); nothing was read from it"
            )
        name, value = super().header_source_parse(sourcelines)
        # The parser reads a multipart's boundary, and we a text part's charset, with
        # compat32's parameter parser, quadratic in the field's length.
        if len(value) > MAX_FIELD_BYTES and name.lower() == "content-type":
            raise TooLargeError(
                f"a Content-Type of the email is over {MAX_FIELD_BYTES} bytes; "
                "nothing was read from it"
            )
        return name, value


def parse(raw: bytes) -> Part:
    """Parse a whole message; nothing of its headers is parsed yet.

    Raises:
        TooLargeError: its header text is over ``MAX_HEADER_BYTES``, or a Content-Type
            over ``MAX_FIELD_BYTES``.
    """
    msg = BytesParser(policy=_Policy()).parsebytes(raw)
    assert isinstance(msg, Part)
    return msg


def unfold(value: str) -> str:
    """A field's value on one line (RFC 5322 §2.2.3: line breaks removed, the blanks kept)."""
    return _LINE_BREAK.sub("", value)


class Fields:
    """A message's own header fields (not its parts'), by lower-case name, as they came."""

    def __init__(self, msg: Message) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in msg.raw_items():
            self._values.setdefault(name.lower(), []).append(str(value))

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._values

    def all(self, name: str) -> list[str]:
        """Every ``name`` field's value as it came, in order."""
        return self._values.get(name.lower(), [])

    def text(self, name: str) -> str | None:
        """The first ``name`` field unfolded, undecoded: for tokens and fields written by
        machines (Auto-Submitted, Precedence, Return-Path), which have no encoded words."""
        values = self.all(name)
        return unfold(values[0]) if values else None

    def parsed(self, name: str) -> Any:
        """The first ``name`` field as ``policy.default`` reads it (None if there is none):
        a header object (an ``AddressHeader`` for From), RFC 2047 decoded and unfolded.

        Raises:
            TooLargeError: the field is over ``MAX_FIELD_BYTES``.
        """
        values = self.all(name)
        if not values:
            return None
        if len(values[0]) > MAX_FIELD_BYTES:
            raise TooLargeError(
                f"the email's {name.lower()} header is over {MAX_FIELD_BYTES} bytes; "
                "nothing was read from it"
            )
        return policy.default.header_fetch_parse(name, values[0])
