"""Reading an inbound email's headers costs a bounded time: their text is held to
MAX_HEADER_BYTES (the message's and its parts' together), From, Subject and Content-Type
to MAX_FIELD_BYTES; a message within the limits is read as before. Over SMTP and HTTP,
see test_email_size."""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from bot.domain.errors import InvalidInputError, TooLargeError
from channels.email.headers import MAX_FIELD_BYTES, MAX_HEADER_BYTES
from channels.email.mime import from_bytes
from tests.channels.email.helpers import padded

FROM = "From: =?utf-8?q?J=C3=B6rg_Sch=C3=A4fer?= <ops@example.test>\r\n"
TO = "To: deploy@example.test\r\n"


def field(name: str, words: list[str], size: int | None = None) -> str:
    """A ``name`` field of ``words``, folded as mail clients fold (lines under 78), of at
    most ``size`` bytes (CRLF included) when given: words are left out past it."""
    lines = [f"{name}:"]
    for word in words:
        if size is not None and len("\r\n ".join(lines)) + len(word) + 5 > size:
            break
        if len(lines[-1]) + 1 + len(word) > 76:
            lines.append("")
        lines[-1] += f" {word}" if lines[-1] else word
    return "\r\n ".join(lines) + "\r\n"


def message(fields: str, body: str = "deploy api 1.5.0 to prod\r\n") -> bytes:
    return f"{fields}\r\n{body}".encode()


def multipart(fields: str, *parts: str) -> bytes:
    joined = "".join(f"--b\r\n{p}" for p in parts)
    return message(fields + "Content-Type: multipart/mixed; boundary=b\r\n", f"{joined}--b--\r\n")


def test_header_text_is_held_to_the_limit() -> None:
    at = padded(FROM + TO, MAX_HEADER_BYTES)
    assert from_bytes(message(at)).sender == "ops@example.test"
    with pytest.raises(TooLargeError, match=f"headers are over {MAX_HEADER_BYTES} bytes"):
        from_bytes(message(padded(FROM + TO, MAX_HEADER_BYTES + 1)))
    # The parts' header sections count with the message's own.
    top = FROM + TO + "MIME-Version: 1.0\r\n"
    part = "Content-Type: text/plain\r\n"
    rest = MAX_HEADER_BYTES - len(top) - len("Content-Type: multipart/mixed; boundary=b\r\n")
    assert from_bytes(multipart(top, padded(part, rest) + "\r\nAPPROVE\r\n")).text == "APPROVE"
    with pytest.raises(TooLargeError, match="its own and its MIME parts' together"):
        from_bytes(multipart(top, padded(part, rest + 1) + "\r\nAPPROVE\r\n"))
    # 60,000 ids (1.8 MB) in References: refused unread, at once.
    refs = field("References", [f"<r{i}@client.test>" for i in range(60_000)])
    started = time.process_time()
    with pytest.raises(TooLargeError):
        from_bytes(message(FROM + TO + refs))
    assert time.process_time() - started < 1


def sized(name: str, size: int, before: str = "", after: str = "") -> str:
    """A ``name`` field whose value is exactly ``size`` bytes: ``before``, words (folded),
    ``after``."""
    filler = size - len(before) - len(after)
    words = ["word"] * (filler // 6)
    text = "\r\n ".join(" ".join(words[i : i + 14]) for i in range(0, len(words), 14))
    value = before + text + "x" * (filler - len(text)) + after
    assert len(value) == size
    return f"{name}: {value}\r\n"


FIELDS = {  # a From, a Subject, a Content-Type that are read, at the given size
    "From": lambda size: TO + sized("From", size, after=" <ops@example.test>"),
    "Subject": lambda size: FROM + TO + sized("Subject", size),
    "Content-Type": lambda size: FROM + TO + sized("Content-Type", size, 'text/plain; x="', '"'),
}


@pytest.mark.parametrize("name", FIELDS)
def test_from_subject_and_content_type_are_held_to_the_field_limit(name: str) -> None:
    mail = from_bytes(message(FIELDS[name](MAX_FIELD_BYTES)))
    assert mail.sender == "ops@example.test" and mail.text == "deploy api 1.5.0 to prod"
    with pytest.raises(TooLargeError, match=f"over {MAX_FIELD_BYTES} bytes") as refused:
        from_bytes(message(FIELDS[name](MAX_FIELD_BYTES + 1)))
    assert name.lower() in refused.value.message.lower()


def test_a_message_at_the_limits_is_read_as_before() -> None:
    # A Subject of encoded words at MAX_FIELD_BYTES, folded; long To and Cc; a long thread.
    subject = field("Subject", ["Re:"] + ["=?utf-8?q?Caf=C3=A9?= au lait"] * 200, MAX_FIELD_BYTES)
    to = field("To", [f"P{i} <p{i}@client.test>," for i in range(1_200)] + ["deploy@example.test"])
    cc = field("Cc", [f"=?utf-8?q?Q=C3=BC{i}?= <q{i}@client.test>," for i in range(600)])
    refs = field("References", [f"<r{i}@client.test>" for i in range(400)])
    results = "Authentication-Results: mx.example.test; dkim=pass header.d=example.test\r\n"
    top = FROM + to + cc + subject + refs + results + "MIME-Version: 1.0\r\n"
    # The body in Latin-1, its charset in a Content-Type at MAX_FIELD_BYTES.
    part_type = sized("Content-Type", MAX_FIELD_BYTES, 'text/plain; x="', '"; charset=iso-8859-1')
    part = part_type + "Content-Transfer-Encoding: quoted-printable\r\n"
    rest = MAX_HEADER_BYTES - len(top) - len("Content-Type: multipart/mixed; boundary=b\r\n")
    assert rest > len(part) + 1000, "the fields above leave room for the part's"
    raw = multipart(top, padded(part, rest) + "\r\ndeploy api 1.5.0 au caf=E9\r\n")

    mail = from_bytes(raw)
    as_before = message_from_bytes(raw, policy=policy.default)  # what the channel read before
    assert mail.sender == "ops@example.test"
    assert mail.subject == str(as_before["Subject"]).strip()
    assert mail.subject.startswith("Re: Café au lait Café au lait") and "=?" not in mail.subject
    assert len(mail.recipients) == 1_200 + 1 + 600 and "deploy@example.test" in mail.recipients
    assert mail.recipients[-1] == "q599@client.test"
    assert mail.references[-1] == "<r399@client.test>" and mail.root() == "<r0@client.test>"
    assert mail.authenticated and mail.automatic is None
    assert mail.text == "deploy api 1.5.0 au café"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain; charset*=utf-8''iso-8859-1",  # RFC 2231: compat32 reads it as a tuple
        'text/plain;\r\n charset="ISO-8859-1"',
        "text/plain; charset=x-unknown",  # then UTF-8, undecodable bytes replaced
    ],
)
def test_the_text_is_decoded_by_its_charset(content_type: str) -> None:
    raw = FROM + TO + f"Content-Type: {content_type}\r\n\r\n"
    mail = from_bytes(raw.encode() + "deploy api 1.5.0 au café\r\n".encode("latin-1"))
    expected = "café" if "x-unknown" not in content_type else "caf\ufffd"
    assert mail.text == f"deploy api 1.5.0 au {expected}"


# The worst shapes found for each header the channel reads, filling the header text to
# MAX_HEADER_BYTES (From, Subject, Content-Type: refused), or From, Subject, Content-Type
# to MAX_FIELD_BYTES (read). Before the limits, each took from 0.3 s to minutes (a
# Subject of NOCLOSE 19 s); each now costs at most 0.3 s, most a few milliseconds.
NOCLOSE = "=?x?q?a" * 15_000  # encoded words never closed, on one line


def at_limit(name: str, value: str) -> bytes:
    fields = FROM + TO if name not in ("From", "To") else (TO if name == "From" else FROM)
    budget = MAX_HEADER_BYTES - len(fields) - len(name) - 4
    return message(fields + f"{name}: {value[:budget]}\r\n")


REFUSED, READ = True, False
WORST = {
    "subject": (at_limit("Subject", NOCLOSE), REFUSED),
    "subject-field": (at_limit("Subject", NOCLOSE[:MAX_FIELD_BYTES]), READ),
    "from": (at_limit("From", "(a)" * 40_000 + "<ops@example.test>"), REFUSED),
    "from-field": (at_limit("From", "(a)" * 670 + "<ops@example.test>"), READ),
    "to-addresses": (at_limit("To", "a <a@b.test>, " * 8_000), READ),
    "to-at-signs": (at_limit("To", "@" * 110_000), READ),
    "cc-comments": (at_limit("Cc", "(a) " * 30_000), READ),
    "auto-submitted": (at_limit("Auto-Submitted", NOCLOSE), READ),
    "return-path": (at_limit("Return-Path", "<a@b.test> " * 10_000), READ),
    "authentication-results": (at_limit("Authentication-Results", "mx; dkim=pass; " * 8_000), READ),
    "authentication-results-word": (  # 8 s before: a regex of ours, tried at every letter
        at_limit("Authentication-Results", "mx; dkim=pass " + "a" * 110_000),
        READ,
    ),
    "content-type": (at_limit("Content-Type", "text/plain; " + ";" * 110_000), REFUSED),
    "content-type-field": (at_limit("Content-Type", 'text/plain; x="' + ";" * 2_000), READ),
    "references": (at_limit("References", "<r@client.test> " * 8_000), READ),
    "unread": (at_limit("X-Anything", NOCLOSE), READ),
    "containers": (  # 48 multipart parts, each Content-Type near MAX_FIELD_BYTES
        multipart(
            FROM + TO,
            *(
                f'Content-Type: multipart/alternative; boundary=k{i}; x="{";" * 1_980}"\r\n\r\n'
                f"--k{i}\r\nContent-Type: text/plain\r\n\r\nx\r\n--k{i}--\r\n"
                for i in range(48)
            ),
        ),
        READ,
    ),
}


@pytest.mark.parametrize(("raw", "refused"), WORST.values(), ids=WORST.keys())
def test_reading_a_message_at_the_limits_costs_little_cpu(raw: bytes, refused: bool) -> None:
    started = time.process_time()
    try:
        from_bytes(raw)
        outcome = READ
    except TooLargeError:
        outcome = REFUSED
    assert time.process_time() - started < 1.5  # generous: at most 0.3 s measured
    assert outcome == refused


@pytest.mark.parametrize("to", ["a:" * 1_000, "(" * 2_000], ids=["groups", "comments"])
def test_recipients_nested_too_deep_are_refused_by_name(to: str) -> None:
    # Read by compat32's address parser (when the envelope is not known), which recurses.
    with pytest.raises(InvalidInputError, match="nested too deep"):
        from_bytes(message(FROM + f"To: {to}\r\n"))
