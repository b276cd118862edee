"""Captured replies sent for real (SMTP to the receiver, or POST /email/inbound): only a
person's explicit answer decides. The deploy agent's production deploys are risky."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from redis.asyncio import Redis

from bot.domain.clock import ManualClock
from bot.domain.events import ApprovalDecision, ApprovalRequested, Decision
from bot.domain.reducer import Status
from bot.storage.embedded import EmbeddedRedis
from tests.channels.email.helpers import ANN, OPS, Mailroom, email_settings, new_mail, reply_to
from tests.channels.email.provider import MailProvider, Sent
from tests.channels.email.test_email_inbound import signed_by, snapshot
from tests.harness import Harness

SAMPLES = Path(__file__).parents[2] / "samples" / "email"
# What every captured reply answers; replaced by the real ones of the request under test.
PLACEHOLDER_TOKEN = b"reply+" + b"a" * 48 + b"@example.test"
PLACEHOLDER_ID = b"<gl.ev_5b1f0c9a2e7d4c3b8a61.0c1d2e3f4a@example.test>"


def answering(name: str, ask: Sent) -> bytes:
    """A captured reply, as if it answered ``ask``: its reply address and Message-ID."""
    raw = (SAMPLES / name).read_bytes()
    assert PLACEHOLDER_TOKEN in raw and PLACEHOLDER_ID in raw
    raw = raw.replace(PLACEHOLDER_TOKEN, ask["Reply-To"].encode())
    return raw.replace(PLACEHOLDER_ID, ask["Message-ID"].encode())


async def send(room: Mailroom, raw: bytes, rcpt: str) -> str:
    """Over SMTP to the bot's receiver, as the approver's mail server would."""
    receiver = room.channel.receiver
    assert receiver is not None
    _, answer = await aiosmtplib.send(
        raw, hostname="127.0.0.1", port=receiver.port, sender=OPS, recipients=[rcpt]
    )
    return answer.removeprefix("2.0.0 ")


async def ask_ops(room: Mailroom, headers: dict[str, str] | None = None) -> tuple[str, Sent]:
    """Ann asks for a production deploy (``headers`` on her email); returns the thread and
    the email Olga got."""
    first = new_mail(
        ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod", headers=headers
    )
    await room.smtp(first)
    await room.h.drain()
    (tid,) = (await room.h.rt.indexes.threads(offset=0, limit=50))[0]
    (req,) = (await room.h.thread(tid)).open_requests()
    assert isinstance(req.asked, ApprovalRequested) and req.asked.risky
    return tid, room.provider.last_to(OPS)


async def decisions(room: Mailroom, tid: str) -> list[ApprovalDecision]:
    return [e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]


async def test_a_gmail_reaction_is_ignored(room: Mailroom) -> None:
    tid, ask = await ask_ops(room)
    told = len(room.provider.to(OPS))
    answer = await send(room, answering("gmail_reaction_thumbs_up.eml", ask), ask["Reply-To"])
    assert answer == "ignored: an emoji reaction is not an answer"
    r = await room.post(answering("gmail_reaction_thumbs_up.eml", ask))
    assert r.json()["status"] == "ignored", r.text
    assert len(room.provider.to(OPS)) == told  # not even asked again
    assert await decisions(room, tid) == []
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("mutt_bottom_posted_reject.eml", "not during the freeze"),
        ("outlook_web_separator_reject.eml", "The 1.5.0 build failed QA yesterday."),
    ],
)
async def test_bottom_posted_and_outlook_web_replies_decide_with_their_own_words(
    room: Mailroom, name: str, reason: str
) -> None:
    tid, ask = await ask_ops(room)
    answer = await send(room, answering(name, ask), ask["Reply-To"])
    assert answer == "decided: reject"
    (vote,) = await decisions(room, tid)
    assert (vote.decision, vote.reason, vote.by.id) == (Decision.REJECT, reason, OPS)
    await room.h.drain()
    assert (await room.h.thread(tid)).status is not Status.AWAITING_APPROVAL


async def test_hidden_html_approve_does_not_decide(room: Mailroom) -> None:
    tid, ask = await ask_ops(room)
    r = await room.post(answering("html_only_hidden_approve.eml", ask))
    assert r.json()["status"] == "unclear", r.text
    again = room.provider.last_to(OPS)
    assert again["Reply-To"] == ask["Reply-To"]
    assert "Let me check with Ann first" in again.text
    assert await decisions(room, tid) == []


async def test_two_from_addresses_are_refused_and_change_nothing(
    room: Mailroom, redis: Redis
) -> None:
    _, ask = await ask_ops(room)
    raw = answering("two_from_addresses_approve.eml", ask)
    before, told = await snapshot(redis), len(room.provider.sent)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(room, raw, ask["Reply-To"])
    assert refused.value.code == 554 and "From names 2 addresses" in refused.value.message
    r = await room.post(raw)
    assert r.status_code == 422 and "From names 2 addresses" in r.json()["detail"]
    assert await snapshot(redis) == before
    assert len(room.provider.sent) == told


async def test_authentication_results_of_another_server_do_not_count(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    settings = email_settings(
        provider, email_require_auth_results=True, email_authserv_id="mx.example.test"
    )
    async with Harness(redis_server.url, settings=settings, clock=ManualClock(time.time())) as h:
        room = Mailroom(h, provider)
        tid, ask = await ask_ops(room, signed_by("example.test"))
        raw = answering("foreign_authserv_approve.eml", ask)
        answer = await send(room, raw, ask["Reply-To"])
        assert answer.startswith("refused") and "could not be verified" in answer
        assert "mx.example.test" in room.provider.last_to(OPS).text
        assert await decisions(room, tid) == []
        # The same header written by our own server counts.
        ours = raw.replace(
            b"Authentication-Results: mx.evil.test", b"Authentication-Results: mx.example.test"
        ).replace(b"@mail.evil.test>", b"@mail.example.test>")
        assert await send(room, ours, ask["Reply-To"]) == "decided: approve"


@pytest.mark.parametrize("name", ["gmail_risky_yes.eml", "apple_mail_iphone_risky_thumbs_up.eml"])
async def test_a_risky_request_takes_only_the_keyword(room: Mailroom, name: str) -> None:
    tid, ask = await ask_ops(room)
    answer = await send(room, answering(name, ask), ask["Reply-To"])
    assert answer.startswith("unclear")
    again = room.provider.last_to(OPS)
    assert again["Reply-To"] == ask["Reply-To"] and "only the word APPROVE or REJECT" in again.text
    assert await decisions(room, tid) == []
    assert (await room.smtp(reply_to(ask, "APPROVE", sender=OPS))) == "decided: approve"


@pytest.fixture
async def strict_room(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> AsyncIterator[Mailroom]:
    settings = email_settings(provider, email_ask_again_per_hour=2)
    async with Harness(redis_server.url, settings=settings, clock=ManualClock(time.time())) as h:
        yield Mailroom(h, provider)


async def test_please_answer_again_is_rate_limited_per_sender(strict_room: Mailroom) -> None:
    room = strict_room
    _, ask = await ask_ops(room)

    async def unclear(asked: Sent, text: str, sender: str = OPS) -> int:
        """How many emails the sender got for an unclear reply."""
        before = len(room.provider.to(sender))
        assert (await room.smtp(reply_to(asked, text, sender=sender))).startswith("unclear")
        return len(room.provider.to(sender)) - before

    assert [await unclear(ask, t) for t in ("hm?", "what is this", "yes")] == [1, 1, 0]
    room.clock.advance(1800)
    assert await unclear(ask, "sure") == 0  # within the hour of the first two

    # Another sender is asked again all the same: Ann, answering a question with nothing.
    await room.smtp(new_mail(ANN, "deploy@example.test", "Release", "deploy api"))
    await room.h.drain()
    question = room.provider.last_to(ANN)
    assert "Which version of api" in question.text
    assert await unclear(question, "", sender=ANN) == 1

    # An hour after the first two, Olga is asked again (here on a new request).
    room.clock.advance(1801)
    await room.smtp(new_mail(ANN, "deploy@example.test", "Hotfix", "deploy web 2.0.1 to prod"))
    await room.h.drain()
    (ask2,) = [s for s in room.provider.to(OPS) if "web" in s.text and s["Reply-To"]]
    assert await unclear(ask2, "ok") == 1


async def test_refusal_notices_are_rate_limited_per_sender(strict_room: Mailroom) -> None:
    # Anyone who saw a reply address can send with it under a forged From: each refusal
    # would be an email to that address, as many as they send.
    room = strict_room
    tid, ask = await ask_ops(room)
    victim = "victim@elsewhere.test"

    async def refused(text: str, sender: str = victim) -> int:
        """How many emails the sender got for a reply that did not count."""
        before = len(room.provider.to(sender))
        answer = await room.smtp(reply_to(ask, text, sender=sender))
        assert answer.startswith("refused: This reply address"), answer
        return len(room.provider.to(sender)) - before

    assert [await refused(f"APPROVE {n}") for n in range(4)] == [1, 1, 0, 0]
    assert "sent to someone else" in room.provider.last_to(victim).text
    # One budget a sender, whichever the answer: Olga's unclear replies still get theirs.
    assert (await room.smtp(reply_to(ask, "hm?", sender=OPS))).startswith("unclear")
    assert "APPROVE" in room.provider.last_to(OPS).text
    room.clock.advance(3601)  # an hour on: told again (now that the address expired)
    assert await refused("APPROVE again") == 1
    assert "expired" in room.provider.last_to(victim).text
    assert await decisions(room, tid) == []


async def test_a_redelivered_reply_uses_no_more_of_the_senders_budget(
    strict_room: Mailroom,
) -> None:
    # A sending server retries after a lost 250, so the same email (same Message-ID) comes
    # again. It is told nothing twice (one notice a Message-ID), and costs nothing twice.
    room = strict_room
    _, ask = await ask_ops(room)
    victim = "victim@elsewhere.test"

    async def sent(msg: EmailMessage, said: str) -> int:
        """How many emails the sender got for ``msg``, whose answer starts with ``said``."""
        sender = msg["From"]
        before = len(room.provider.to(sender))
        answer = await room.smtp(msg)
        assert answer.startswith(said), answer
        return len(room.provider.to(sender)) - before

    for sender, text, said in ((OPS, "hm?", "unclear"), (victim, "APPROVE", "refused")):
        first = reply_to(ask, text, sender=sender)
        assert [await sent(first, said) for _ in range(3)] == [1, 0, 0]
        # The budget is 2 an hour: the redeliveries used none of it, so one more is told.
        assert await sent(reply_to(ask, f"{text} 2", sender=sender), said) == 1
        assert await sent(reply_to(ask, f"{text} 3", sender=sender), said) == 0
