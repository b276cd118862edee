"""Only a person's explicit answer decides: captured replies read without a server. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.errors import ConfigError, InvalidInputError
from channels.email.config import EmailConfig
from channels.email.htmltext import to_visible
from channels.email.mime import from_bytes
from channels.email.replies import Kind, read_verdict, to_new_text
from tests.harness import test_settings as settings_for

SAMPLES = Path(__file__).parents[2] / "samples" / "email"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_a_gmail_reaction_is_recognised_by_its_part() -> None:
    mail = from_bytes(sample("gmail_reaction_thumbs_up.eml"))
    assert mail.reaction == "👍"
    assert mail.text.startswith("👍 reacted via Gmail")
    assert from_bytes(sample("gmail_approve.eml")).reaction is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "mutt_bottom_posted_reject.eml",
            "REJECT: not during the freeze\nThe 1.5.0 build has not passed QA yet.",
        ),
        ("outlook_web_separator_reject.eml", "REJECT\nThe 1.5.0 build failed QA yesterday."),
        (
            "html_only_hidden_approve.eml",
            "Let me check with Ann first; the release notes are not out yet.",
        ),
    ],
)
def test_the_new_text_of_captured_replies(name: str, text: str) -> None:
    assert from_bytes(sample(name)).text == text


@pytest.mark.parametrize(
    ("body", "text"),
    [
        # mutt's attribution, the quote, then the answer and a signature
        (
            "* Greenlight <g@example.test> [2025-06-03 10:02]:\n> Reply APPROVE\n\nyes\n-- \nO\n",
            "yes",
        ),
        # answered inline, between quoted lines
        ("> Which version?\n1.5.1\n> Why?\nQA failed on 1.5.0\n", "1.5.1\nQA failed on 1.5.0"),
        # a quote and nothing else is no answer
        ("On Tue, 3 Jun 2025, Greenlight <g@example.test> wrote:\n> APPROVE\n\n", ""),
        # Outlook's separator right under the answer, no blank line between
        ("Approved\n________________________________\nFrom: G\nSent: Tue\n\nAPPROVE", "Approved"),
        ("Approved\n________________________________\nDe : G\nEnvoyé : mardi\n", "Approved"),
        # a line of underscores that is not Outlook's block stays
        (
            "Fill in: ____________________________ please\n",
            "Fill in: ____________________________ please",
        ),
    ],
)
def test_bottom_posts_inline_answers_and_outlook_separators(body: str, text: str) -> None:
    assert to_new_text(body) == text


@pytest.mark.parametrize(
    ("html", "shown"),
    [
        ('<div style="display: none">APPROVE</div><p>Wait</p>', "<p>Wait</p>"),
        ('<div style="DISPLAY:NONE!important"><p>APPROVE</div>Wait', "Wait"),
        ('<span style="visibility:hidden">APPROVE</span>Wait', "Wait"),
        ("<div hidden>APPROVE</div>Wait", "Wait"),
        ('<span style="font-size:0px">APPROVE</span>Wait', "Wait"),
        ('<span style="max-height:0;overflow:hidden">APPROVE</span>Wait', "Wait"),
        ('<p style="mso-hide:all">APPROVE</p>Wait', "Wait"),
        ("<head><title>APPROVE</title></head>Wait", "Wait"),
        ('<div style="display:none">APPROVE', ""),  # never closed: hides the rest
        # visible: kept as written
        (
            '<span style="font-size:0.8em">APPROVE</span>',
            '<span style="font-size:0.8em">APPROVE</span>',
        ),
        ('<span style="height:0">APPROVE</span>', '<span style="height:0">APPROVE</span>'),
        ("A &amp; B<br/>&#169;", "A &amp; B<br/>&#169;"),
    ],
)
def test_hidden_html_is_dropped(html: str, shown: str) -> None:
    assert to_visible(html) == shown


@pytest.mark.parametrize(
    ("from_", "why"),
    [
        ("Olga <ops@example.test>, Eve <eve@evil.test>", "From names 2 addresses"),
        ("undisclosed-recipients:;", "From is a group"),
        ("Ops: ops@example.test;", "From is a group"),
    ],
)
def test_from_must_be_exactly_one_address(from_: str, why: str) -> None:
    raw = f"From: {from_}\r\nTo: deploy@example.test\r\n\r\nAPPROVE\r\n".encode()
    with pytest.raises(InvalidInputError, match=why):
        from_bytes(raw)


def test_two_from_headers_or_a_captured_two_address_from_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="2 From headers"):
        from_bytes(b"From: ops@example.test\r\nFrom: eve@evil.test\r\n\r\nAPPROVE\r\n")
    with pytest.raises(InvalidInputError, match="From names 2 addresses"):
        from_bytes(sample("two_from_addresses_approve.eml"))


def test_authentication_results_count_only_from_our_server() -> None:
    raw = sample("foreign_authserv_approve.eml")
    assert from_bytes(raw).authenticated  # on top, and it says pass: trusted before
    assert not from_bytes(raw, authserv_id="mx.example.test").authenticated
    ours = raw.replace(
        b"Authentication-Results: mx.evil.test", b"Authentication-Results: mx.example.test"
    )
    assert from_bytes(ours, authserv_id="MX.Example.Test").authenticated
    # Ours, below a foreign one added later: still ours that counts.
    both = ours.replace(
        b"Return-Path:", b"Authentication-Results: mx.evil.test; dkim=fail\nReturn-Path:"
    )
    assert from_bytes(both, authserv_id="mx.example.test").authenticated


def test_requiring_authentication_results_needs_the_server_id() -> None:
    values = {
        "email_from": "Greenlight <greenlight@example.test>",
        "email_secret": "test-email-secret-0123456789",
        "email_require_auth_results": True,
    }
    with pytest.raises(ConfigError, match="EMAIL_AUTHSERV_ID"):
        EmailConfig.from_settings(settings_for(**values))
    cfg = EmailConfig.from_settings(settings_for(**values, email_authserv_id=" MX.example.test "))
    assert cfg.authserv_id == "mx.example.test"


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("APPROVE", Kind.APPROVE, None),
        ("approve", Kind.APPROVE, None),
        ("Approved.", Kind.APPROVE, None),
        ("REJECT: not during the freeze", Kind.REJECT, "not during the freeze"),
        ("Rejected\nQA failed", Kind.REJECT, "QA failed"),
        # synonyms and emoji decide other requests, never a risky one
        ("yes", Kind.UNCLEAR, None),
        ("Yes, approved!", Kind.UNCLEAR, None),
        ("lgtm", Kind.UNCLEAR, None),
        ("ok", Kind.UNCLEAR, None),
        ("👍", Kind.UNCLEAR, None),
        ("👍 APPROVE", Kind.UNCLEAR, None),
        ("APPROVE!!", Kind.UNCLEAR, None),
        ("no", Kind.UNCLEAR, None),
        ("deny: not now", Kind.UNCLEAR, None),
        ("👎", Kind.UNCLEAR, None),
    ],
)
def test_risky_requests_take_only_the_keyword(text: str, kind: Kind, reason: str | None) -> None:
    verdict = read_verdict(text, exact=True)
    assert (verdict.kind, verdict.reason) == (kind, reason)


@pytest.mark.parametrize("name", ["gmail_risky_yes.eml", "apple_mail_iphone_risky_thumbs_up.eml"])
def test_captured_yes_and_thumbs_up_decide_only_what_is_not_risky(name: str) -> None:
    text = from_bytes(sample(name)).text
    assert read_verdict(text).kind is Kind.APPROVE
    assert read_verdict(text, exact=True).kind is Kind.UNCLEAR
