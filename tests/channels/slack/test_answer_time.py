"""Slack gets its answer before the slow calls: private notes, refreshes, posts run after it.

The stand-in holds a Web API method's calls unanswered (``api.hold``); an answer
that arrives while they are held did not wait for them.
"""

from __future__ import annotations

import time

from bot.domain import ids
from bot.domain.events import ApprovalDecision
from channels.slack.channel import IDENTITY_BUDGET
from channels.slack.clicks import OPEN_WITHIN
from tests.channels.slack.conftest import ANN, BOB, MAL
from tests.channels.slack.slack import CHANNEL, TEAM, Slack, text_of, whispers
from tests.harness import Harness, eventually
from tests.standins.slack_api import SlackAPI

MARGIN = 0.8
"""Seconds an answer may take beyond a budget: still inside Slack's 3."""


def thread_of(root_ts: str) -> str:
    return ids.thread_id_for("slack", f"{TEAM}:{CHANNEL}:{root_ts}")


async def card_for(h: Harness, slack: Slack, api: SlackAPI) -> tuple[str, tuple[str, str]]:
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    (card,) = [k for k, m in api.messages.items() if m.get("thread_ts") == root]
    return root, card


async def held(api: SlackAPI, method: str, n: int = 1) -> int:
    async def arrived() -> int | None:
        return api.waiting(method) if api.waiting(method) >= n else None

    return await eventually(arrived)


async def test_a_refused_click_is_answered_before_its_private_note_goes_out(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await card_for(h, slack, api)
    version = (await h.thread(thread_of(root))).version
    api.hold("chat.postEphemeral")

    r = await slack.click(card, "gl_approve", MAL)
    assert r.status_code == 200
    assert await held(api, "chat.postEphemeral") == 1  # the note is still on its way
    assert api.calls_to("chat.postEphemeral") == []

    api.release("chat.postEphemeral")
    (note,) = await whispers(api, MAL)
    assert "can't decide" in note and f"<@{BOB}>" in note
    assert (await h.thread(thread_of(root))).version == version


async def test_a_stale_click_is_answered_before_the_card_is_refreshed(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    _root, card = await card_for(h, slack, api)
    (req,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
    await h.api.post(f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "dave"})
    await h.drain()
    updates = len(api.calls_to("chat.update"))
    api.hold("chat.postEphemeral")
    api.hold("chat.update")

    click = slack.click_payload(card, "gl_approve", BOB, as_first_posted=True)
    r = await slack.interact(click)
    assert r.status_code == 200
    await held(api, "chat.postEphemeral")
    assert len(api.calls_to("chat.update")) == updates

    api.release("chat.postEphemeral")
    api.release("chat.update")
    assert "already approved by dave" in (await whispers(api, BOB))[-1]
    refreshed = await api.called("chat.update", updates + 1)
    assert refreshed[-1].params["ts"] == card[1]
    assert "*Approved* by dave" in text_of(api.messages[card])


async def test_a_slow_users_info_decides_nothing_and_asks_to_try_again(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await card_for(h, slack, api)
    version = (await h.thread(thread_of(root))).version
    api.hold("users.info")  # Bob's first click: who is he?

    started = time.monotonic()
    r = await slack.click(card, "gl_approve", BOB)
    assert r.status_code == 200
    assert time.monotonic() - started < IDENTITY_BUDGET + MARGIN
    assert (await h.thread(thread_of(root))).version == version  # no unverified decision

    api.release("users.info")
    (note,) = await whispers(api, BOB)
    assert "try again" in note and "nothing changed" in note

    r = await slack.click(card, "gl_approve", BOB)  # Slack is quick again
    assert r.status_code == 200
    events = await h.rt.log.events(thread_of(root))
    (decision,) = [e for e in events if isinstance(e, ApprovalDecision)]
    assert decision.by.id == BOB


async def test_a_slow_views_open_still_answers_in_time(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    _root, card = await card_for(h, slack, api)
    api.hold("views.open")

    started = time.monotonic()
    r = await slack.click(card, "gl_reject", BOB)
    assert r.status_code == 200
    assert time.monotonic() - started < OPEN_WITHIN + MARGIN
    api.release("views.open")
    assert "please click again" in (await whispers(api, BOB))[-1]
