"""Parsing inbound mail is pure: automatic mail, authentication results, recipients, ids."""

from __future__ import annotations

import time

import pytest

from bot.domain.errors import InvalidInputError
from channels.email.mime import MAX_THREAD_IDS, Inbound, from_bytes

BASE = (
    "From: Olga <Ops@Example.test>\r\n"
    "To: reply+abc@example.test\r\n"
    "Cc: Someone <someone@example.test>\r\n"
    "Subject: Re: Approval needed\r\n"
    "Message-ID: <m1@client.test>\r\n"
    "In-Reply-To: <gl.b@example.test>\r\n"
    "References: <root@client.test> <gl.a@example.test>\r\n"
)


def mail(headers: str = "", body: str = "APPROVE\r\n", mail_from: str | None = None) -> Inbound:
    return from_bytes(f"{BASE}{headers}\r\n{body}".encode(), mail_from=mail_from)


def test_addresses_and_threading_ids() -> None:
    m = mail()
    assert m.sender == "ops@example.test"
    assert m.recipients == ["reply+abc@example.test", "someone@example.test"]
    assert m.thread_ids() == ["<gl.b@example.test>", "<gl.a@example.test>", "<root@client.test>"]
    assert m.root() == "<root@client.test>" and m.text == "APPROVE"
    assert m.automatic is None


def test_thread_ids_are_the_nearest_ones_then_the_root() -> None:
    # 4,000 ids (80 KB), about the most MAX_HEADER_BYTES holds: each id considered is a read.
    n = 4_000
    refs = [f"<r{i}@client.test>" for i in range(n)] + ["<gl.b@example.test>"]
    head = BASE.replace("<root@client.test> <gl.a@example.test>", " ".join(refs))
    started = time.process_time()
    m = from_bytes(f"{head}\r\nAPPROVE\r\n".encode())
    ids = m.thread_ids()
    assert time.process_time() - started < 3  # about 0.02 s
    assert len(ids) == MAX_THREAD_IDS + 1 and len(set(ids)) == len(ids)
    # In-Reply-To, then References from the end (it repeats In-Reply-To: once), then the root.
    assert ids[:3] == ["<gl.b@example.test>", f"<r{n - 1}@client.test>", f"<r{n - 2}@client.test>"]
    assert ids[-2:] == [f"<r{n - MAX_THREAD_IDS + 1}@client.test>", "<r0@client.test>"]
    assert m.root() == "<r0@client.test>" and len(m.references) == n + 1


@pytest.mark.parametrize(
    ("headers", "mail_from"),
    [
        ("Auto-Submitted: auto-replied\r\n", None),
        ("Auto-Submitted: auto-generated\r\n", None),
        ("Precedence: bulk\r\n", None),
        ("Precedence: auto_reply\r\n", None),
        ("X-Autoreply: yes\r\n", None),
        ("X-Autorespond: Out of office\r\n", None),
        ("Return-Path: <>\r\n", None),
        ("", ""),  # MAIL FROM:<> on the SMTP envelope, as a caller may pass it
        ("", "<>"),  # ... and as aiosmtpd keeps it (the built-in receiver)
        ("Return-Path: < >\r\n", None),
    ],
)
def test_auto_replies_and_bounces_are_recognised(headers: str, mail_from: str | None) -> None:
    assert mail(headers, mail_from=mail_from).automatic


def test_auto_submitted_no_is_a_person() -> None:
    assert mail("Auto-Submitted: no\r\n").automatic is None


def test_a_return_path_with_an_address_is_a_person() -> None:
    assert mail(mail_from="ops@example.test").automatic is None
    assert (
        mail("Return-Path: <ops@example.test>\r\n", mail_from="<ops@example.test>").automatic
        is None
    )


def test_delivery_reports_are_recognised() -> None:
    report = (
        "From: MAILER-DAEMON@mx.example.test\r\nTo: greenlight@example.test\r\n"
        "Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nI could not deliver it.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        "--b--\r\n"
    )
    assert from_bytes(report.encode()).automatic == "a delivery or read report"


@pytest.mark.parametrize(
    ("results", "ok"),
    [
        ("mx.example.test; dkim=pass header.d=example.test header.s=s1", True),
        ("mx.example.test; dkim=pass header.d=mail.example.test", True),
        ("mx.example.test; dmarc=pass (p=reject) header.from=example.test", True),
        (
            "mx.example.test; dkim=pass header.d=evil.test; dmarc=fail header.from=example.test",
            False,
        ),
        ("mx.example.test; spf=pass smtp.mailfrom=example.test", False),
        ("mx.example.test; none", False),
    ],
)
def test_authentication_results(results: str, ok: bool) -> None:
    assert mail(f"Authentication-Results: {results}\r\n").authenticated is ok
    assert mail().authenticated is False


def test_authentication_results_cost_time_linear_in_their_length() -> None:
    # A property's pattern, tried at every letter of a 100 KB word: 8 s on the loop.
    word = "a" * 100_000
    started = time.process_time()
    m = mail(f"Authentication-Results: mx.example.test; dkim=pass {word} header.d=example.test\r\n")
    assert time.process_time() - started < 1  # about 0.01 s
    assert m.authenticated


def test_a_missing_message_id_gets_a_stable_one() -> None:
    raw = b"From: a@example.test\r\nTo: deploy@example.test\r\n\r\nhello\r\n"
    assert from_bytes(raw).message_id == from_bytes(raw).message_id
    assert from_bytes(raw).message_id != from_bytes(raw + b"again\r\n").message_id


def test_malformed() -> None:
    with pytest.raises(InvalidInputError, match="no From address"):
        from_bytes(b"To: deploy@example.test\r\n\r\nhello\r\n")


@pytest.mark.parametrize(
    ("subject", "automatic"),
    [
        ("Automatic reply: Approval needed", True),
        ("Out of Office AutoReply: Approval needed", True),
        ("Out of Office", True),
        ("AW: Abwesenheitsnotiz: Approval needed", False),  # a person forwarding one
        ("Automatische Antwort: Approval needed", True),
        ("Réponse automatique : Approval needed", True),
        ("Respuesta automática: Approval needed", True),
        ("Out of office tomorrow, deploy api first", False),
        ("Re: Approval needed", False),
    ],
)
def test_auto_reply_subjects_are_recognised(subject: str, automatic: bool) -> None:
    headers = BASE.replace("Subject: Re: Approval needed", f"Subject: {subject}")
    raw = f"{headers}\r\nI am away until Monday.\r\n".encode()
    assert bool(from_bytes(raw).automatic) is automatic
