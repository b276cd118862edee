"""Reading replies is pure: the new text, then a decision only when it is unmistakable."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.email.mime import from_bytes
from channels.email.replies import Kind, read_verdict, to_new_text

SAMPLES = Path(__file__).parents[2] / "samples" / "email"


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("APPROVE", Kind.APPROVE, None),
        ("approved.", Kind.APPROVE, None),
        ("*Approved*", Kind.APPROVE, None),
        ("Yes, approved!", Kind.APPROVE, None),
        ("lgtm", Kind.APPROVE, None),
        ("👍🏽", Kind.APPROVE, None),
        ("\n\n  Approve  \nsome more text", Kind.APPROVE, None),
        ("REJECT: not during the freeze", Kind.REJECT, "not during the freeze"),
        ("Rejected - wrong version", Kind.REJECT, "wrong version"),
        ("deny not now", Kind.REJECT, "not now"),
        ("Rejected\nthe freeze lasts\nuntil Monday", Kind.REJECT, "the freeze lasts\nuntil Monday"),
        ("No.", Kind.REJECT, None),
        ("no", Kind.REJECT, None),
        ("No, wait for the freeze to end", Kind.REJECT, "wait for the freeze to end"),
        # Never an approval: negated, hedged, or just polite.
        ("not approved", Kind.UNCLEAR, None),
        ("Don't approve this", Kind.UNCLEAR, None),
        ("do not approve", Kind.UNCLEAR, None),
        ("Approve, but only after 5pm", Kind.UNCLEAR, None),
        ("approved?", Kind.UNCLEAR, None),
        ("ok", Kind.UNCLEAR, None),
        ("OK!", Kind.UNCLEAR, None),
        ("sure", Kind.UNCLEAR, None),
        ("yes please wait", Kind.UNCLEAR, None),
        ("No problem, go ahead", Kind.UNCLEAR, None),
        ("I approve", Kind.UNCLEAR, None),
        ("", Kind.UNCLEAR, None),
    ],
)
def test_verdicts(text: str, kind: Kind, reason: str | None) -> None:
    verdict = read_verdict(text)
    assert (verdict.kind, verdict.reason) == (kind, reason)


def test_only_the_new_text_counts() -> None:
    body = "\n\nOn Tue, 3 Jun 2025 at 10:02, Greenlight <g@example.test> wrote:\n> APPROVE\n"
    assert to_new_text(body) == ""
    assert to_new_text("> APPROVE\n> quoted only\n") == ""
    assert to_new_text("Yes\n\n-- \nOlga\nSRE\n") == "Yes"


# Real clients' replies, as captured: (file, what the reader must find).
CLIENTS = [
    ("gmail_approve.eml", Kind.APPROVE, None),
    ("outlook_reject.eml", Kind.REJECT, "not during the freeze"),
    ("apple_mail_iphone_approve.eml", Kind.APPROVE, None),
    ("outlook_ios_yes.eml", Kind.APPROVE, None),
    ("outlook_german_reject.eml", Kind.REJECT, "nicht während des Release-Freeze"),
    ("gmail_french_approve.eml", Kind.APPROVE, None),
    ("html_only_approve.eml", Kind.APPROVE, None),
    ("gmail_not_approved.eml", Kind.UNCLEAR, None),
]


@pytest.mark.parametrize(("name", "kind", "reason"), CLIENTS)
def test_decisions_from_real_clients(name: str, kind: Kind, reason: str | None) -> None:
    mail = from_bytes((SAMPLES / name).read_bytes())
    assert mail.automatic is None
    assert "@" in mail.sender
    verdict = read_verdict(mail.text)
    assert (verdict.kind, verdict.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        (
            "outlook_topposted_signature_answer.eml",
            "The customer was charged twice for the same order.",
        ),
        ("thunderbird_answer_inline.eml", "1.5.1 please.\nThe 1.5.0 build failed QA yesterday."),
    ],
)
def test_answers_from_real_clients(name: str, answer: str) -> None:
    assert from_bytes((SAMPLES / name).read_bytes()).text == answer
