"""MIME depth and part count are bounded at both ways in: ``POST /email/inbound`` answers a
4xx and the SMTP receiver a permanent 5xx, and nothing refused changes Redis."""

from __future__ import annotations

import aiosmtplib
import pytest
from redis.asyncio import Redis

from channels.email.mime import MAX_DEPTH, MAX_PARTS
from tests.channels.email.helpers import ANN, Mailroom
from tests.scenarios.test_rest import snapshot

AGENT = "deploy@example.test"


def nested(depth: int) -> bytes:
    """A new request whose text sits ``depth`` multipart levels down."""
    head = f"From: {ANN}\r\nTo: {AGENT}\r\nSubject: Release\r\nMIME-Version: 1.0\r\n".encode()
    body = b"Content-Type: text/plain\r\n\r\ndeploy api 1.5.0 to prod\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (
            (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body)
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return head + body


def flat(parts: int) -> bytes:
    """A new request with ``parts`` sibling text parts."""
    head = f"From: {ANN}\r\nTo: {AGENT}\r\nSubject: Release\r\nMIME-Version: 1.0\r\n".encode()
    one = b"--b\r\nContent-Type: text/plain\r\n\r\ndeploy api 1.5.0 to prod\r\n"
    return head + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + one * parts + b"--b--\r\n"


REFUSED = [nested(MAX_DEPTH), nested(300), nested(1_000), flat(MAX_PARTS + 1)]


@pytest.mark.parametrize("raw", REFUSED, ids=["16", "300", "1000", "flat"])
async def test_deep_or_wide_mime_is_4xx_over_http(room: Mailroom, redis: Redis, raw: bytes) -> None:
    before = await snapshot(redis)
    r = await room.post(raw)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and "malformed email" in r.json()["detail"]
    r = await room.post(raw, secret="wrong")
    assert r.status_code == 401, r.text
    assert await snapshot(redis) == before


@pytest.mark.parametrize("raw", REFUSED, ids=["16", "300", "1000", "flat"])
async def test_deep_or_wide_mime_is_a_permanent_smtp_refusal(
    room: Mailroom, redis: Redis, raw: bytes
) -> None:
    before = await snapshot(redis)
    receiver = room.channel.receiver
    assert receiver is not None
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(
            raw, hostname="127.0.0.1", port=receiver.port, sender=ANN, recipients=[AGENT]
        )
    assert refused.value.code == 554, refused.value  # permanent: the sender does not retry
    assert "malformed email" in refused.value.message
    assert await snapshot(redis) == before


async def test_mime_within_the_bounds_is_read(room: Mailroom) -> None:
    r = await room.post(nested(MAX_DEPTH - 2))
    assert r.status_code == 200, r.text
    tid = r.json()["thread_id"]
    got = await room.h.api.get(f"/threads/{tid}")
    assert got.status_code == 200 and "deploy api 1.5.0" in str(got.json()["events"])
