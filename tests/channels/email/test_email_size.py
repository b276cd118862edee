"""Whole emails are large: the inbound route takes them; the REST API keeps its limit, and
the text an email carries is held to it (MAX_BODY_BYTES) on both ways in, its header text
to MAX_HEADER_BYTES (see test_email_headers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import pytest
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from channels.email.headers import MAX_FIELD_BYTES, MAX_HEADER_BYTES
from tests.channels.email.helpers import (
    ANN,
    OPS,
    Mailroom,
    email_settings,
    new_mail,
    reply_to,
    with_header_text,
)
from tests.channels.email.provider import MailProvider
from tests.harness import Harness
from tests.scenarios.test_rest import snapshot

DEPLOY = {"agent": "deploy", "text": "deploy api 1.5.0 to production"}
AGENT = "deploy@example.test"
LIMIT = 50_000


async def test_a_reply_with_a_large_image_is_taken_but_rest_keeps_its_limit(
    room: Mailroom,
) -> None:
    mail = new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod")
    mail.add_attachment(b"\x89PNG" + b"\0" * 3_000_000, maintype="image", subtype="png")
    r = await room.post(mail.as_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "created"

    too_big = {**DEPLOY, "text": "x" * 1_100_000}
    r = await room.h.api.post("/threads", json=too_big)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")


@pytest.fixture
async def small(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> AsyncIterator[Mailroom]:
    settings = email_settings(provider, max_body_bytes=LIMIT)
    async with Harness(redis_server.url, settings=settings) as h:
        yield Mailroom(h, provider)


async def question(room: Mailroom) -> str:
    """Ann asks refunds for a refund; returns its thread once her question is out."""
    r = await room.post(new_mail(ANN, "refunds@example.test", "Refund", "refund A-1002").as_bytes())
    assert r.json()["status"] == "created", r.text
    await room.h.drain()
    return str(r.json()["thread_id"])


async def test_an_answer_over_max_body_bytes_is_413_and_records_nothing(
    small: Mailroom, redis: Redis
) -> None:
    await question(small)
    asked = small.provider.last_to(ANN)
    before = await snapshot(redis)
    r = await small.post(reply_to(asked, "because " * (LIMIT // 8 + 1), sender=ANN).as_bytes())
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large"), r.text
    assert f"over {LIMIT} bytes" in r.json()["detail"]
    long_subject = new_mail(ANN, "deploy@example.test", "x" * (LIMIT + 1), "deploy api")
    r = await small.post(long_subject.as_bytes())
    assert r.status_code == 413 and "subject" in r.json()["detail"], r.text
    assert await snapshot(redis) == before

    # Within the limit, and with an image larger than it: the answer counts.
    ok = reply_to(asked, "Charged twice.", sender=ANN)
    ok.add_attachment(b"\x89PNG" + b"\0" * (LIMIT * 2), maintype="image", subtype="png")
    r = await small.post(ok.as_bytes())
    assert (r.status_code, r.json()["status"]) == (200, "answered"), r.text


async def test_a_reason_over_max_body_bytes_is_a_permanent_smtp_refusal(
    small: Mailroom, redis: Redis
) -> None:
    r = await small.post(
        new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod").as_bytes()
    )
    assert r.json()["status"] == "created", r.text
    await small.h.drain()
    ask = small.provider.last_to(OPS)
    before = await snapshot(redis)
    reject = reply_to(ask, "REJECT: " + "not now " * (LIMIT // 8 + 1), sender=OPS)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await small.smtp(reject)
    assert refused.value.code == 552 and f"over {LIMIT} bytes" in refused.value.message
    assert await snapshot(redis) == before


def release(subject: str = "Release") -> EmailMessage:
    return new_mail(ANN, "deploy@example.test", subject, "deploy api 1.5.0 to prod")


OVER = {  # refused unread, whatever they say: the header text, or a Subject, too long
    "headers": with_header_text(release(), MAX_HEADER_BYTES + 1),
    "subject": with_header_text(release("word " * (MAX_FIELD_BYTES // 5 + 1)), 4_000),
}


@pytest.mark.parametrize("what", OVER)
async def test_headers_over_the_limits_are_413_and_record_nothing(
    room: Mailroom, redis: Redis, what: str
) -> None:
    before = await snapshot(redis)
    r = await room.post(OVER[what])
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large"), r.text
    assert what in r.json()["detail"] and "nothing was read" in r.json()["detail"]
    assert await snapshot(redis) == before

    r = await room.post(with_header_text(release(), MAX_HEADER_BYTES))
    assert (r.status_code, r.json()["status"]) == (200, "created"), r.text


@pytest.mark.parametrize("what", OVER)
async def test_headers_over_the_limits_are_a_permanent_smtp_refusal(
    room: Mailroom, redis: Redis, what: str
) -> None:
    receiver = room.channel.receiver
    assert receiver is not None
    before = await snapshot(redis)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(
            OVER[what], hostname="127.0.0.1", port=receiver.port, sender=ANN, recipients=[AGENT]
        )
    assert refused.value.code == 552 and what in refused.value.message, refused.value
    assert await snapshot(redis) == before

    _, answer = await aiosmtplib.send(
        with_header_text(release(), MAX_HEADER_BYTES),
        hostname="127.0.0.1",
        port=receiver.port,
        sender=ANN,
        recipients=[AGENT],
    )
    assert answer.startswith("2.0.0 created"), answer
