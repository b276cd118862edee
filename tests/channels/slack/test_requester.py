"""Who asked, when Slack did not say at first: never the one who approves it by email.

Bob asks in Slack while ``users.info`` fails or is slow, so his message is recorded
with his Slack id alone. Deployers are named by email, so he gets the approval email;
his reply must not count as somebody else's approval.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.domain.events import ApprovalDecision, ApprovalRequested
from bot.storage.embedded import EmbeddedRedis
from channels.slack.channel import IDENTITY_BUDGET
from tests.channels.email.helpers import Mailroom, reply_to
from tests.channels.email.provider import MailProvider
from tests.channels.slack.conftest import BOB, CAROL
from tests.channels.slack.slack import CHANNEL, Slack
from tests.channels.slack.test_answer_time import MARGIN, thread_of
from tests.harness import Harness
from tests.signin import signin_settings
from tests.standins.slack_api import SlackAPI

BOB_MAIL, CAROL_MAIL = "bob@example.com", "carol@example.com"
DEPLOYERS = {"deployers": [BOB_MAIL, CAROL_MAIL], "finance": [CAROL_MAIL]}


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, api: SlackAPI
) -> AsyncIterator[Harness]:
    settings = signin_settings(provider, api, approver_groups=DEPLOYERS)
    async with Harness(redis_server.url, settings=settings) as harness:
        yield harness


async def bob_asks(h: Harness, api: SlackAPI) -> tuple[str, ApprovalRequested]:
    """Bob asks in Slack for a deploy; the thread and its request once the worker asked."""
    root = await Slack(h.http, api).mention("deploy api 1.5.0 to production", BOB)
    await h.drain()
    tid = thread_of(root)
    (asked,) = [e for e in await h.rt.log.events(tid) if isinstance(e, ApprovalRequested)]
    return tid, asked


async def approve_by_mail(room: Mailroom, who: str) -> str:
    """``who`` answers APPROVE to the approval email they got; the receiver's answer."""
    return await room.smtp(reply_to(room.provider.last_to(who), "APPROVE", sender=who))


async def decisions(h: Harness, tid: str) -> list[ApprovalDecision]:
    return [e for e in await h.rt.log.events(tid) if isinstance(e, ApprovalDecision)]


async def test_a_requester_slack_never_described_may_not_approve_by_email_nor_anyone_by_email(
    h: Harness, api: SlackAPI, provider: MailProvider
) -> None:
    api.fail_next("users.info", status=500, times=100)  # Slack has a bad minute
    tid, asked = await bob_asks(h, api)
    # Asked again when the request opened: Slack still would not say.
    assert (asked.requester.id, asked.requester.email) == (BOB, None)
    assert len(api.calls_to("users.info")) == 2

    room = Mailroom(h, provider)
    answer = await approve_by_mail(room, BOB_MAIL)
    assert answer.startswith("refused"), answer
    assert "can't tell you apart from who asked" in answer
    assert await decisions(h, tid) == []
    # Carol by email cannot be told from U0BOB0001 either: nothing says she is not him.
    assert (await approve_by_mail(room, CAROL_MAIL)).startswith("refused")
    assert await decisions(h, tid) == []

    # In Slack, where she is known by her own id, Carol decides.
    api.fail_next("users.info", times=0)
    card = next(k for k, m in api.messages.items() if m.get("blocks") and k[0] == CHANNEL)
    r = await Slack(h.http, api).click(card, "gl_approve", CAROL)
    assert r.status_code == 200
    (vote,) = await decisions(h, tid)
    assert vote.by.id == CAROL and vote.by.email == CAROL_MAIL


async def test_a_requester_slack_was_slow_to_describe_is_known_by_email_when_the_request_opens(
    h: Harness, api: SlackAPI, provider: MailProvider
) -> None:
    api.hold("users.info")
    payload = Slack(h.http, api).mention_payload("deploy api 1.5.0 to production", BOB)
    started = time.monotonic()
    r = await Slack(h.http, api).event(payload)
    assert r.status_code == 200
    assert time.monotonic() - started < IDENTITY_BUDGET + MARGIN  # recorded by id alone
    api.release("users.info")
    await h.drain()
    tid = thread_of(payload["event"]["ts"])
    (asked,) = [e for e in await h.rt.log.events(tid) if isinstance(e, ApprovalRequested)]
    assert (asked.requester.id, asked.requester.email) == (BOB, BOB_MAIL)

    room = Mailroom(h, provider)
    answer = await approve_by_mail(room, BOB_MAIL)
    assert answer.startswith("refused") and "You asked for this" in answer, answer
    assert await decisions(h, tid) == []
    assert (await approve_by_mail(room, CAROL_MAIL)).startswith("decided")
    (vote,) = await decisions(h, tid)
    assert vote.by.email == CAROL_MAIL


async def test_who_typed_a_slash_command_slack_did_not_describe_is_known_by_email(
    h: Harness, api: SlackAPI, provider: MailProvider
) -> None:
    api.fail_next("users.info", status=500)  # as the command is answered
    r = await Slack(h.http, api).command("deploy api 1.5.0 to production", BOB)
    assert r.status_code == 200
    await h.drain()
    (tid,) = (await h.rt.indexes.threads(offset=0, limit=10))[0]
    (asked,) = [e for e in await h.rt.log.events(tid) if isinstance(e, ApprovalRequested)]
    assert (asked.requester.id, asked.requester.email) == (BOB, BOB_MAIL)
    assert "You asked for this" in await approve_by_mail(Mailroom(h, provider), BOB_MAIL)
    assert await decisions(h, tid) == []


async def test_a_slack_user_named_as_requester_over_rest_is_known_by_their_email(
    h: Harness, api: SlackAPI, provider: MailProvider
) -> None:
    body = {
        "agent": "release-bot",
        "requester": f"slack:{BOB}",
        "tool": "deploy",
        "arguments": {"version": "1.5.0"},
        "summary": "Release 1.5.0",
        "policy": {"approvers": ["group:deployers"]},
    }
    r = await h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    tid = r.json()["thread_id"]
    (asked,) = [e for e in await h.rt.log.events(tid) if isinstance(e, ApprovalRequested)]
    assert (asked.requester.id, asked.requester.email) == (BOB, BOB_MAIL)
    await h.drain()
    room = Mailroom(h, provider)
    assert "You asked for this" in await approve_by_mail(room, BOB_MAIL)
    assert (await approve_by_mail(room, CAROL_MAIL)).startswith("decided")
