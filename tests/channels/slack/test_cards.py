"""Cards wherever they are: an approvals channel, REST threads, expiry and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.clock import ManualClock
from bot.domain.events import Actor, ApprovalDecision, Origin
from bot.storage.embedded import EmbeddedRedis
from bot.storage.retries import Retries
from tests.channels.slack.conftest import ANN, BOB, slack_settings
from tests.channels.slack.slack import CHANNEL, TEAM, Slack, has_buttons, text_of, whispers
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI

APPROVALS = "C0APPROVE1"


def cards_in(api: SlackAPI, channel: str) -> list[tuple[str, str]]:
    return [k for k, m in api.messages.items() if k[0] == channel and m.get("blocks")]


@pytest.fixture
def clock() -> ManualClock:
    """The time of ``approvals_h``'s harness, moved by the test: retries and reminders come
    due when it says, not when the machine gets round to it."""
    return ManualClock(time.time())


@pytest.fixture
async def approvals_h(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI, clock: ManualClock
) -> AsyncIterator[Harness]:
    """A harness whose cards go to the APPROVALS channel, on ``clock``."""
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings, clock=clock) as h:
        yield h


async def test_cards_in_the_approvals_channel_link_back_and_follow_every_decision(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy api 1.5.0 to production", ANN)
        await h.drain()

        (card,) = cards_in(api, APPROVALS)
        assert "thread_ts" not in api.messages[card] or not api.messages[card]["thread_ts"]
        permalink = f"https://acme.slack.com/archives/{CHANNEL}/p{root.replace('.', '')}"
        assert f"<{permalink}|this conversation>" in text_of(api.messages[card])
        (note,) = [m for m in api.messages.values() if m.get("thread_ts") == root]
        assert (
            "Waiting for approval of *deploy*" in note["text"]
            and "archives/C0APPROVE1" in (note["text"])
        )

        # A REST thread's request gets a card there too, and a Slack click decides it.
        r = await h.api.post(
            "/threads",
            json={"agent": "deploy", "user": "erin", "text": "deploy web 2.1.0 to production"},
        )
        rest_thread = r.json()["id"]
        await h.drain()
        (_, rest_card) = sorted(cards_in(api, APPROVALS), key=lambda k: k[1])
        assert rest_thread in text_of(api.messages[rest_card])
        await slack.click(rest_card, "gl_approve", BOB)
        await h.drain()
        assert f"*Approved* by <@{BOB}>" in text_of(api.messages[rest_card])
        assert (await h.api.get(f"/threads/{rest_thread}")).json()["status"] == "done"

        # Cancelling the Slack thread through the API closes its card.
        r = await h.api.post(
            f"/threads/{ids.thread_id_for('slack', f'{TEAM}:{CHANNEL}:{root}')}/cancel",
            json={"by": "erin", "reason": "wrong day"},
        )
        assert r.status_code == 200, r.text
        await h.drain()
        assert not has_buttons(api.messages[card])
        assert "*Cancelled* by erin" in text_of(api.messages[card])


async def test_reminder_under_the_card_then_expiry_closes_it(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=slack_settings(api), clock=clock) as h:
        slack = Slack(h.http, api)
        await slack.mention("deploy api 1.5.0 to production", ANN)
        await h.drain()
        (card,) = cards_in(api, CHANNEL)

        clock.advance(3100)  # past the reminder, 10 minutes before expiry
        await h.drain()
        (reminder,) = [m for m in api.messages.values() if m.get("thread_ts") == card[1]]
        assert "Still waiting for" in reminder["text"] and f"<@{BOB}>" in reminder["text"]
        assert has_buttons(api.messages[card])

        clock.advance(4100)  # two hours on: past the one-hour expiry
        await h.drain()

        assert "*Expired*" in text_of(api.messages[card]) and not has_buttons(api.messages[card])
        await slack.interact(slack.click_payload(card, "gl_approve", BOB, as_first_posted=True))
        assert "expired" in (await whispers(api, BOB))[-1]


async def test_a_click_after_expiry_is_refused_before_the_worker_sweeps(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=slack_settings(api), clock=clock) as h:
        slack = Slack(h.http, api)
        await slack.mention("deploy api 1.5.0 to production", ANN)
        await h.drain()
        (card,) = cards_in(api, CHANNEL)

        clock.advance(7200)  # past the one-hour expiry; no worker has looked yet
        await slack.interact(slack.click_payload(card, "gl_reject", BOB, as_first_posted=True))
        assert "expired" in (await whispers(api, BOB))[-1]
        (req,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
        assert req["status"] == "open"  # refused, not decided: expiry is the worker's to record


async def test_a_deleted_card_is_not_retried(h: Harness, api: SlackAPI, slack: Slack) -> None:
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    (card,) = cards_in(api, CHANNEL)
    del api.messages[card]  # someone deleted the card in Slack

    (req,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
    await h.api.post(f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "dave"})
    await h.drain()

    assert api.calls_to("chat.update")  # it tried once
    assert await Retries(h.redis).count() == 0
    thread = await h.thread(ids.thread_id_for("slack", f"{TEAM}:{CHANNEL}:{root}"))
    assert thread.failed_deliveries == [] and thread.status.value == "done"


async def test_a_rest_threads_question_is_answered_by_a_reply_under_it(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        r = await h.api.post(
            "/threads", json={"agent": "deploy", "user": "erin", "text": "deploy api to production"}
        )
        tid = r.json()["id"]
        await h.drain()
        (question,) = cards_in(api, APPROVALS)
        assert "Which version of api" in text_of(api.messages[question])

        await slack.reply("1.4.2", BOB, question[1], channel=APPROVALS)
        await h.drain()

        assert (await h.api.get(f"/threads/{tid}")).json()["status"] == "awaiting_approval"
        assert "Answered by" in text_of(api.messages[question])
        (_, card) = sorted(cards_in(api, APPROVALS), key=lambda k: k[1])
        assert "1.4.2" in text_of(api.messages[card])

        # Talk under a card with no open question is for people, not the agent.
        version = (await h.thread(tid)).version
        await slack.reply("looks fine to me", ANN, card[1], channel=APPROVALS)
        assert (await h.thread(tid)).version == version


@pytest.mark.parametrize("slack_knows_who", [True, False])
async def test_the_requester_by_email_may_not_approve_in_slack_even_when_slack_is_failing(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI, slack_knows_who: bool
) -> None:
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        bob = Actor(channel="email", id="bob@example.com", email="bob@example.com")
        asked = await h.rt.inbox.message(
            agent="deploy",
            text="deploy api 1.5.0 to production",
            by=bob,
            origin=Origin(channel="email", conversation="<1@example.com>"),
        )
        await h.drain()
        (card,) = cards_in(api, APPROVALS)
        if not slack_knows_who:
            api.fail_next("users.info", status=500, times=5)  # Slack has a bad minute

        r = await slack.click(card, "gl_approve", BOB)  # Bob again, as Slack's U0BOB0001
        assert r.status_code == 200
        events = await h.rt.log.events(asked.thread.id)
        assert not [e for e in events if isinstance(e, ApprovalDecision)]
        notes = await whispers(api, BOB)
        assert len(notes) == 1 and "nothing changed" in notes[0].lower(), notes


async def test_a_reminder_while_the_card_is_still_to_post_waits_for_it(
    approvals_h: Harness, api: SlackAPI, clock: ManualClock
) -> None:
    slack = Slack(approvals_h.http, api)
    api.refusing[APPROVALS] = "internal_error"  # Slack refuses the card for now
    await slack.mention("deploy api 1.5.0 to production", ANN)
    await approvals_h.drain()
    assert not cards_in(api, APPROVALS)

    clock.advance(3100)  # past the reminder, 10 minutes before expiry; still refused
    await approvals_h.drain()
    assert not cards_in(api, APPROVALS)

    del api.refusing[APPROVALS]
    for _ in range(2):  # the retries come due: the card's, then the reminder's again
        clock.advance(60)
        await approvals_h.drain()

    (card,) = cards_in(api, APPROVALS)
    (reminder,) = [m for m in api.messages.values() if m.get("thread_ts") == card[1]]
    assert "Still waiting for" in reminder["text"] and f"<@{BOB}>" in reminder["text"]


async def test_a_card_a_retry_posts_while_its_request_closes_shows_it_closed(
    approvals_h: Harness, api: SlackAPI, clock: ManualClock
) -> None:
    api.refusing[APPROVALS] = "internal_error"  # the card's first post fails
    r = await approvals_h.api.post(
        "/threads",
        json={"agent": "deploy", "user": "erin", "text": "deploy web 2.1.0 to production"},
    )
    await approvals_h.drain()
    assert not cards_in(api, APPROVALS)

    # Its retry reads the thread, then Slack is slow to take the post...
    del api.refusing[APPROVALS]
    api.hold("chat.postMessage")
    clock.advance(60)
    retrying = asyncio.create_task(approvals_h.rt.outbox.retry_due())

    async def held() -> bool:
        return api.waiting("chat.postMessage") == 1

    await approvals_h.wait_for(held)
    # ...while the request is decided, and the decision delivered (no card to update yet).
    (req,) = (await approvals_h.api.get("/requests", params={"status": "open"})).json()["items"]
    decided = await approvals_h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "dave"}
    )
    assert decided.status_code == 200, decided.text
    await approvals_h.drain()
    api.release("chat.postMessage")
    await retrying
    await approvals_h.drain()

    (card,) = cards_in(api, APPROVALS)
    assert r.json()["id"] in text_of(api.messages[card])
    assert "*Approved* by" in text_of(api.messages[card])
    assert not has_buttons(api.messages[card])
