"""Sending: durable retries, idempotent redelivery, other channels' decisions, decision links."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from bot.domain.clock import ManualClock
from bot.domain.events import ApprovalRequested, DeliveryFailed
from bot.domain.reducer import Status
from bot.storage.embedded import EmbeddedRedis
from bot.storage.retries import Retries
from channels.email import tokens
from tests.channels.email.helpers import (
    ANN,
    DOMAIN,
    FIN,
    OPS,
    Mailroom,
    ask_publish,
    email_settings,
    new_mail,
)
from tests.channels.email.provider import MailProvider
from tests.harness import Harness

GONE = "gone@example.test"
"""An approver who left: the mail server refuses the address (550 at RCPT)."""
LINK = re.compile(r"/email/decide/[a-z2-7]{48}\?a=[^\s\"<>]+")


async def start_by_api(room: Mailroom) -> str:
    r = await room.h.api.post(
        "/threads",
        json={"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_a_refused_send_is_retried_until_delivered(room: Mailroom) -> None:
    room.provider.refuse_next = 1
    tid = await start_by_api(room)
    await room.h.drain()
    assert room.provider.refused == 1 and room.provider.to(OPS) == []

    await room.drain_until(lambda: room.provider.to(OPS))
    (ask,) = room.provider.to(OPS)
    assert "Approval needed" in ask["Subject"]
    # A thread that did not start by email: the approval email starts its own conversation.
    assert ask["In-Reply-To"] == "" and ask["Reply-To"].startswith("reply+")
    state = await room.h.thread(tid)
    assert state.failed_deliveries == []
    assert not [e for e in await room.events(tid) if isinstance(e, DeliveryFailed)]


async def ask_gone_ops_and_fin(room: Mailroom) -> str:
    """An approval whose approvers include one the mail server refuses, between the other
    two (they are asked in order: fin, gone, ops); its thread."""
    room.provider.refuse_rcpt.add(GONE)
    # A day to answer: the hour after which the outbox gives up does not expire it.
    asked = await ask_publish(room, {"approvers": [GONE, OPS, FIN], "expires_in": 86400})
    return str(asked["thread_id"])


async def test_a_refused_recipient_does_not_stop_the_others(room: Mailroom) -> None:
    tid = await ask_gone_ops_and_fin(room)
    assert room.provider.refused_rcpts == [GONE]
    assert len(room.provider.to(OPS)) == len(room.provider.to(FIN)) == 1

    # Retried for the one that failed only: the others are not asked twice.
    await room.drain_until(lambda: len(room.provider.refused_rcpts) >= 3)
    assert len(room.provider.to(OPS)) == len(room.provider.to(FIN)) == 1
    room.provider.refuse_rcpt.clear()  # the address works again
    await room.drain_until(lambda: room.provider.to(GONE))
    assert len(room.provider.to(GONE)) == len(room.provider.to(OPS)) == 1
    assert len(room.provider.to(FIN)) == 1
    assert not [e for e in await room.events(tid) if isinstance(e, DeliveryFailed)]
    assert await Retries(room.h.redis).count() == 0


async def test_giving_up_on_a_refused_recipient_names_it(room: Mailroom) -> None:
    tid = await ask_gone_ops_and_fin(room)
    (asked,) = [e for e in await room.events(tid) if isinstance(e, ApprovalRequested)]
    room.clock.advance(3600)  # DELIVERY_GIVE_UP_AFTER since the first failure

    async def gave_up() -> list[DeliveryFailed]:
        await room.h.drain()
        return [e for e in await room.events(tid) if isinstance(e, DeliveryFailed)]

    (failed,) = await room.h.wait_for(gave_up)
    assert (failed.channel, failed.event_id) == ("email", asked.id)
    assert "1 of 3 emails not sent (to gone@example.test)" in failed.error
    assert "550" in failed.error and OPS not in failed.error
    assert room.provider.refused_rcpts == [GONE, GONE]  # tried again once, then given up
    assert len(room.provider.to(OPS)) == len(room.provider.to(FIN)) == 1
    assert await Retries(room.h.redis).count() == 0
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL


async def test_redelivering_an_event_sends_nothing_twice(room: Mailroom) -> None:
    tid = await start_by_api(room)
    await room.h.drain()
    assert len(room.provider.to(OPS)) == 1
    state = await room.h.thread(tid)
    (asked,) = [e for e in await room.events(tid) if isinstance(e, ApprovalRequested)]
    await room.channel.deliver(state, asked)  # what a worker that died mid-way leaves behind
    assert len(room.provider.to(OPS)) == 1


async def test_a_decision_in_another_channel_is_told_by_email(room: Mailroom) -> None:
    tid = await start_by_api(room)
    await room.h.drain()
    ask = room.provider.last_to(OPS)
    (req,) = (await room.h.thread(tid)).open_requests()

    r = await room.h.api.post(
        f"/requests/{req.id}/decision", json={"decision": "approve", "by": "bob"}
    )
    assert r.status_code == 200, r.text
    await room.h.drain()

    told = room.provider.last_to(OPS)
    assert "bob approved deploy" in told.text
    assert told["In-Reply-To"] == ask["Message-ID"] and told["Subject"] == f"Re: {ask['Subject']}"
    assert (await room.h.thread(tid)).status is Status.DONE


async def test_the_decision_link_page_decides_only_on_post(room: Mailroom) -> None:
    tid = await start_by_api(room)
    await room.h.drain()
    match = LINK.search(room.provider.last_to(OPS).text)
    assert match, room.provider.last_to(OPS).text
    link = match.group(0)

    page = await room.h.http.get(link)  # what a mail scanner does
    assert page.status_code == 200 and "Approve" in page.text and "api" in page.text
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL

    r = await room.h.http.post(
        link,
        content=b"decision=reject&reason=wrong+window",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "Rejected" in r.text
    await room.h.drain()
    state = await room.h.thread(tid)
    (req,) = state.requests.values()
    assert (req.status.value, req.reason) == ("rejected", "wrong window")
    assert req.closed_by[0].email == OPS

    again = await room.h.http.post(link, content=b"decision=approve")
    assert again.status_code == 409 and "already rejected" in again.text
    forged = await room.h.http.get(link.replace("?a=ops", "?a=eve"))
    assert forged.status_code == 404


async def test_a_decision_link_expires_with_its_request_on_the_shared_clock(
    room: Mailroom,
) -> None:
    tid = await start_by_api(room)
    await room.h.drain()
    match = LINK.search(room.provider.last_to(OPS).text)
    assert match
    room.clock.advance(3600)  # the deploy policy's hour; no worker has swept yet

    page = await room.h.http.get(match.group(0))
    assert page.status_code == 200 and "This request has expired." in page.text
    r = await room.h.http.post(match.group(0), content=b"decision=approve")
    assert r.status_code == 409 and "This request has expired." in r.text
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL


async def test_threads_from_other_channels_send_no_replies_by_email(room: Mailroom) -> None:
    r = await room.h.api.post(
        "/threads", json={"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to staging"}
    )
    assert r.status_code == 201
    await room.h.drain()
    assert (await room.h.thread(r.json()["id"])).status is Status.DONE
    assert room.provider.sent == []


async def test_a_second_email_in_the_same_conversation_continues_the_thread(
    room: Mailroom,
) -> None:
    first = new_mail(ANN, "deploy@example.test", "Releases", "deploy api 1.5.0 to staging")
    await room.smtp(first)
    await room.h.drain()
    done = room.provider.last_to(ANN)
    assert done["In-Reply-To"] == first["Message-ID"] and "Done:" in done.text

    follow = new_mail(
        ANN,
        "deploy@example.test",
        "Re: Releases",
        "now list services",
        in_reply_to=done["Message-ID"],
        references=f"{first['Message-ID']} {done['Message-ID']}",
    )
    assert (await room.smtp(follow)).startswith("message")
    await room.h.drain()
    _, total = await room.h.rt.indexes.threads(offset=0, limit=50)
    assert total == 1
    assert "Running now" in room.provider.last_to(ANN).text


async def test_a_reply_address_is_not_a_decision_link(room: Mailroom) -> None:
    # Reply addresses show up where the email's body does not: MTA logs, the To of a
    # reply someone Cc'd. Knowing one must not let anyone decide on the web page, where
    # neither the sender nor DKIM is checked.
    tid = await start_by_api(room)
    await room.h.drain()
    ask = room.provider.last_to(OPS)
    token = tokens.token_of(ask["Reply-To"], DOMAIN)
    assert token is not None
    link = LINK.search(ask.text)
    assert link and token not in link.group(0)

    guessed = f"/email/decide/{token}?a={OPS}"
    assert (await room.h.http.get(guessed)).status_code == 404
    r = await room.h.http.post(
        guessed,
        content=b"decision=approve",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 404
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL
    # Nor is a link's token a reply address.
    link_token = link.group(0).split("/")[-1].partition("?")[0]
    assert room.channel.intake.check_recipient(f"reply+{link_token}@{DOMAIN}") is not None


async def test_a_decision_link_is_not_logged_when_redis_is_down(
    tmp_path: Path, provider: MailProvider, caplog: pytest.LogCaptureFixture
) -> None:
    # A link's token lets whoever holds it (and knows the approver's address) decide:
    # a log line about the request names its route, never its path.
    server = EmbeddedRedis(tmp_path / "redis")  # our own: the session's server stays up
    server.start()
    clock = ManualClock(time.time())
    try:
        async with Harness(server.url, settings=email_settings(provider), clock=clock) as h:
            room = Mailroom(h, provider)
            await start_by_api(room)
            await h.drain()
            link = LINK.search(room.provider.last_to(OPS).text)
            assert link
            token = link.group(0).split("/")[-1].partition("?")[0]
            server.stop()
            caplog.clear()
            with caplog.at_level(logging.DEBUG):
                shown = await h.http.get(link.group(0))
                posted = await h.http.post(
                    link.group(0),
                    content=b"decision=approve",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
            assert (shown.status_code, posted.status_code) == (503, 503), shown.text
            client = ("httpx", "httpcore")  # the test's own client, not Greenlight
            said = [r.getMessage() for r in caplog.records if not r.name.startswith(client)]
            assert any("/email/decide/{token}" in line for line in said), said
            assert not [line for line in said if token in line]
    finally:
        server.stop()
