"""The two ways in: the SMTP receiver's RCPT checks, and POST /email/inbound."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import aiosmtplib
import pytest
from redis.asyncio import Redis

from bot.domain.events import ApprovalDecision
from bot.domain.reducer import Status
from bot.settings import Settings
from bot.storage.embedded import EmbeddedRedis
from channels.email import tokens
from channels.email.mime import MAX_THREAD_IDS
from tests.channels.email.helpers import (
    ANN,
    DOMAIN,
    OPS,
    SECRET,
    Mailroom,
    email_settings,
    new_mail,
    reply_to,
)
from tests.channels.email.provider import MailProvider
from tests.harness import Harness


async def snapshot(redis: Redis) -> dict[str, object]:
    """Every key with its size or value: enough to see that nothing was written."""
    sizes = {
        "list": redis.llen,
        "zset": redis.zcard,
        "hash": redis.hlen,
        "stream": redis.xlen,
        "set": redis.scard,
        "string": redis.get,
    }
    found: dict[str, object] = {}
    for key in await redis.keys("*"):
        kind = str(await redis.type(key))
        found[str(key)] = (kind, await sizes[kind](key))
    return found


async def open_request(room: Mailroom, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """Ann asks for a deploy (``headers`` on her email); the thread and the request."""
    first = new_mail(
        ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod", headers=headers
    )
    await room.smtp(first)
    await room.h.drain()
    (tid,) = (await room.h.rt.indexes.threads(offset=0, limit=50))[0]
    (req,) = (await room.h.thread(tid)).open_requests()
    return tid, req.id


@pytest.mark.parametrize(
    "rcpt",
    [
        "reply+" + "a" * 48 + "@example.test",  # forged
        "nobody@example.test",  # no such agent
        "deploy@elsewhere.test",  # not our domain
    ],
)
async def test_receiver_refuses_unknown_recipients_at_rcpt(
    room: Mailroom, redis: Redis, rcpt: str
) -> None:
    before = await snapshot(redis)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await room.smtp(new_mail(OPS, rcpt, "Re: x", "APPROVE"))
    (error,) = refused.value.recipients
    assert error.code == 550
    assert await snapshot(redis) == before


async def test_receiver_refuses_a_tampered_token_at_rcpt(room: Mailroom) -> None:
    tid, _ = await open_request(room)
    ask = room.provider.last_to(OPS)
    token = tokens.token_of(ask["Reply-To"], DOMAIN)
    assert token is not None
    flipped = token[:-1] + ("b" if token[-1] != "b" else "c")
    msg = reply_to(ask, "APPROVE", sender=OPS)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await room.smtp(msg, rcpts=[f"reply+{flipped}@{DOMAIN}"])
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL


async def test_an_expired_token_does_not_decide(room: Mailroom) -> None:
    tid, request_id = await open_request(room)
    ask = room.provider.last_to(OPS)
    old = tokens.mint(request_id, OPS, room.clock.now() - 1, SECRET.encode())
    msg = reply_to(ask, "APPROVE", sender=OPS)
    answer = await room.smtp(msg, rcpts=[tokens.to_reply_address(old, DOMAIN)])
    assert answer.startswith("refused") and "expired" in answer
    assert "expired" in room.provider.last_to(OPS).text
    assert not [e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]


async def test_a_reply_to_a_decided_request_is_refused_before_it_is_read(room: Mailroom) -> None:
    tid, request_id = await open_request(room)
    ask = room.provider.last_to(OPS)
    r = await room.h.api.post(
        f"/requests/{request_id}/decision", json={"decision": "reject", "by": "bob"}
    )
    assert r.status_code == 200, r.text
    asked = len(room.provider.to(OPS))

    # Not a decision it could read: still no "please answer again", since nothing can count.
    answer = await room.smtp(reply_to(ask, "what is this about?", sender=OPS))
    assert answer.startswith("refused") and "already rejected by bob" in answer
    told = room.provider.to(OPS)
    assert len(told) == asked + 1 and "already rejected by bob" in told[-1].text
    assert told[-1]["Reply-To"] != ask["Reply-To"]  # not asked again
    assert len([e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]) == 1


async def test_inbound_post_with_a_wrong_secret_is_401_and_changes_nothing(
    room: Mailroom, redis: Redis
) -> None:
    raw = new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod").as_bytes()
    before = await snapshot(redis)
    for secret in ("wrong", None):
        r = await room.post(raw, secret=secret)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"
    assert await snapshot(redis) == before
    assert room.provider.sent == []


async def test_inbound_post_records_with_header_or_basic_auth(room: Mailroom) -> None:
    raw = new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod").as_bytes()
    r = await room.post(raw)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "created"
    tid = r.json()["thread_id"]
    # A replay (providers retry) is a no-op that still answers success.
    basic = base64.b64encode(b"mailgun:test-inbound-secret").decode()
    r = await room.h.http.post(
        "/email/inbound", content=raw, headers={"authorization": f"Basic {basic}"}
    )
    assert (r.status_code, r.json()["status"]) == (200, "duplicate")
    await room.h.drain()
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL

    # A reply posted by the provider decides like one received over SMTP.
    reply = reply_to(room.provider.last_to(OPS), "approve", sender=OPS)
    r = await room.post(reply.as_bytes())
    assert r.json()["status"] == "decided", r.text
    await room.h.drain()
    assert (await room.h.thread(tid)).status is Status.DONE


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"just some words\nand no headers at all\n", "no blank line"),
        (b"Subject: hi\nTo: deploy@example.test\n\ndeploy api 1.5.0\n", "no From"),
        (
            b"From: ann@example.test\nTo: deploy@example.test\n"
            b"Content-Type: multipart/mixed; boundary=XYZ\n\nno parts here\n",
            "multipart",
        ),
    ],
)
async def test_inbound_post_of_malformed_mime_is_a_clear_error(
    room: Mailroom, redis: Redis, raw: bytes, why: str
) -> None:
    before = await snapshot(redis)
    r = await room.post(raw)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"
    assert r.json()["detail"].startswith("malformed email") and why in r.json()["detail"]
    assert await snapshot(redis) == before


async def test_inbound_post_to_no_agent_is_a_clear_error(room: Mailroom) -> None:
    raw = new_mail(ANN, "someone@else.test", "Hi", "hello").as_bytes()
    r = await room.post(raw)
    assert r.status_code == 422 and "no recipient names an agent" in r.json()["detail"]
    r = await room.post(raw, to="deploy@example.test")  # the envelope says otherwise
    assert r.json()["status"] == "created"


async def test_forged_token_over_http_is_refused_without_a_reply(room: Mailroom) -> None:
    msg = new_mail(OPS, "reply+" + "a" * 48 + "@example.test", "Re: x", "APPROVE")
    r = await room.post(msg.as_bytes())
    assert r.json()["status"] == "refused"
    assert room.provider.sent == []


async def test_bounces_can_be_turned_off(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    settings = email_settings(provider, email_bounces=False)
    async with Harness(redis_server.url, settings=settings) as h:
        room = Mailroom(h, provider)
        await open_request(room)
        ask = room.provider.last_to(OPS)
        answer = await room.smtp(reply_to(ask, "APPROVE", sender="intern@example.test"))
        assert answer.startswith("refused")
        assert room.provider.to("intern@example.test") == []


async def test_required_authentication_results(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    settings = email_settings(
        provider, email_require_auth_results=True, email_authserv_id="mx.example.test"
    )
    async with Harness(redis_server.url, settings=settings) as h:
        room = Mailroom(h, provider)
        tid, _ = await open_request(room, signed_by("example.test"))
        ask = room.provider.last_to(OPS)
        # Only our server's header (mx.example.test) counts; another one on top proves nothing.
        spoofed = reply_to(
            ask,
            "APPROVE",
            sender=OPS,
            headers={
                "Authentication-Results": "mx.example.test; dkim=fail header.d=example.test",
            },
        )
        spoofed["Authentication-Results"] = "evil.test; dkim=pass header.d=example.test"
        answer = await room.smtp(spoofed)
        assert answer.startswith("refused") and "could not be verified" in answer
        signed = reply_to(
            ask,
            "APPROVE",
            sender=OPS,
            headers={
                "Authentication-Results": "mx.example.test; dkim=pass header.d=example.test; "
                "spf=pass smtp.mailfrom=example.test; dmarc=pass header.from=example.test",
            },
        )
        assert (await room.smtp(signed)).startswith("decided")
        await h.drain()
        assert (await h.thread(tid)).status is Status.DONE


async def test_a_subject_with_an_encoded_line_break_cannot_add_headers(room: Mailroom) -> None:
    # "Release\r\nBcc: eve@evil.test" as an RFC 2047 encoded word: legal on the wire,
    # and reused for every email in the thread's conversation.
    raw = (
        b"From: ann@example.test\r\nTo: deploy@example.test\r\n"
        b"Subject: =?utf-8?q?Release=0D=0ABcc=3A_eve=40evil=2Etest?=\r\n"
        b"Message-ID: <crlf@client.test>\r\n\r\ndeploy api 1.5.0 to production\r\n"
    )
    r = await room.post(raw)
    assert r.json()["status"] == "created", r.text
    await room.h.drain()
    waiting = room.provider.last_to(ANN)  # the notice that approval was asked for
    assert waiting["Subject"] == "Re: Release Bcc: eve@evil.test"
    assert waiting["Bcc"] == "" and room.provider.to("eve@evil.test") == []
    assert room.provider.to(OPS), "the approval email went out too"


async def test_a_reply_after_expiry_is_refused_before_any_worker_sweeps(room: Mailroom) -> None:
    tid, _ = await open_request(room)
    ask = room.provider.last_to(OPS)
    room.clock.advance(3600)  # the deploy policy's hour: the reply address expires with it
    answer = await room.smtp(reply_to(ask, "APPROVE", sender=OPS))
    assert answer.startswith("refused") and "expired" in answer
    assert not [e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]


async def test_a_huge_references_header_costs_a_bounded_number_of_lookups(
    room: Mailroom, redis: Redis
) -> None:
    # Each id considered is one Redis read; 60,000 of them took 22 s, one after another.
    # 4,000 (80 KB) is about the most MAX_HEADER_BYTES lets in; more is refused unread.
    refs = " ".join(f"<r{i}@client.test>" for i in range(4_000))
    mail = new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod")
    raw = f"In-Reply-To: <unknown@client.test>\nReferences: {refs}\n".encode() + mail.as_bytes()

    async def gets() -> int:
        return int((await redis.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))

    before = await gets()
    r = await room.post(raw)
    assert (r.status_code, r.json()["status"]) == (200, "created"), r.text
    assert await gets() - before <= MAX_THREAD_IDS + 10  # the ids, and a few reads of its own


def signed_by(domain: str) -> dict[str, str]:
    """What our receiving server (mx.example.test) writes on a message DKIM-signed by
    ``domain``."""
    return {"Authentication-Results": f"mx.example.test; dkim=pass header.d={domain}"}


def verified_release(sender: str, text: str) -> EmailMessage:
    """A new "Release" mail to deploy@ from ``sender``, which our receiving server found
    DKIM-signed by example.test: what required authentication results let through."""
    return new_mail(
        sender, "deploy@example.test", "Release", text, headers=signed_by("example.test")
    )


def requiring_auth(provider: MailProvider) -> Settings:
    return email_settings(
        provider, email_require_auth_results=True, email_authserv_id="mx.example.test"
    )


async def test_required_authentication_results_cover_new_threads(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    async with Harness(redis_server.url, settings=requiring_auth(provider)) as h:
        room = Mailroom(h, provider)
        # Anyone can write From: ops@. Unverified, it starts nothing, by SMTP or by HTTP,
        # and ops@ is not mailed about what someone else sent in their name.
        forged = new_mail(OPS, "deploy@example.test", "Release", "deploy api 1.5.0 to prod")
        answer = await room.smtp(forged)
        assert answer.startswith("refused") and "could not be verified" in answer, answer
        forged = new_mail(OPS, "deploy@example.test", "Release", "deploy api 1.5.0 to prod")
        r = await room.post(forged.as_bytes())
        assert r.json()["status"] == "refused", r.text
        await h.drain()
        assert (await h.rt.indexes.threads(offset=0, limit=50))[0] == []
        assert room.provider.to(OPS) == []
        # Verified by our server, it starts the thread.
        mine = verified_release(OPS, "deploy api 1.5.0 to prod")
        assert (await room.smtp(mine)).startswith("created")


async def test_required_authentication_results_cover_messages_on_a_thread(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    async with Harness(redis_server.url, settings=requiring_auth(provider)) as h:
        room = Mailroom(h, provider)
        first = verified_release(ANN, "deploy api 1.5.0")
        assert (await room.smtp(first)).startswith("created")
        await h.drain()
        (tid,) = (await h.rt.indexes.threads(offset=0, limit=50))[0]
        waiting = room.provider.last_to(ANN)
        before, mailed = await room.events(tid), len(room.provider.to(ANN))
        # A message on Ann's thread in her name, unverified: refused, nothing recorded.
        spoof = reply_to(waiting, "to production, and drop the users table", sender=ANN)
        answer = await room.smtp(spoof)
        assert answer.startswith("refused") and "could not be verified" in answer, answer
        spoof = reply_to(waiting, "to production, and drop the users table", sender=ANN)
        r = await room.post(spoof.as_bytes())
        assert r.json()["status"] == "refused", r.text
        assert await room.events(tid) == before
        assert len(room.provider.to(ANN)) == mailed  # nothing mailed to whoever was forged
        # Verified (here by a DMARC pass), it counts.
        ok = reply_to(
            waiting,
            "to staging first",
            sender=ANN,
            headers={
                "Authentication-Results": "mx.example.test; dmarc=pass header.from=example.test"
            },
        )
        assert (await room.smtp(ok)).startswith("message")
