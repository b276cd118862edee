"""The App Home tab: what waits for the person looking, decided there, kept up to date."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot.domain.events import HumanAnswer, ToolResult
from bot.storage.embedded import EmbeddedRedis
from channels.slack.home import PUBLISHES
from tests.channels.slack.conftest import ANN, BOB, DAN, MAL, slack_settings
from tests.channels.slack.slack import Slack, has_buttons, home_of, publishes, text_of
from tests.channels.slack.test_flows import ask_for_approval, choice_model, thread_of
from tests.harness import Harness, eventually
from tests.standins.slack_api import SlackAPI


def shown(view: dict[str, Any]) -> str:
    return text_of({"blocks": view["blocks"]})


def buttons(view: dict[str, Any]) -> list[str]:
    return [
        e["action_id"]
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b.get("elements") or []
    ]


async def test_the_home_lists_what_each_person_may_decide(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    await ask_for_approval(h, slack, api)

    await slack.home_opened(BOB)
    bob = await home_of(api, BOB)
    assert "Approval needed: deploy" in shown(bob) and "1.5.0" in shown(bob)
    assert buttons(bob) == ["gl_approve", "gl_reject", "gl_edit"]
    assert "this conversation" in shown(bob)  # a link back to the Slack thread

    await slack.home_opened(DAN)  # through the user group
    assert "Approval needed: deploy" in shown(await home_of(api, DAN))
    for nobody in (MAL, ANN):  # not an approver; the requester may not approve
        await slack.home_opened(nobody)
        view = await home_of(api, nobody)
        assert "Nothing waits for you" in shown(view) and not buttons(view)


async def test_approve_from_the_home_decides_once_and_every_place_follows(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    for user in (BOB, DAN, MAL):
        await slack.home_opened(user)
        await home_of(api, user)

    r = await slack.home_click(BOB, "gl_approve")
    assert r.status_code == 200, r.text
    await h.drain()

    events = await h.rt.log.events(thread_of(root))
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    assert result.outcome == "ok"
    assert f"*Approved* by <@{BOB}>" in text_of(api.messages[card])
    assert not has_buttons(api.messages[card])
    for user in (BOB, DAN):  # the decision refreshed both approvers' Homes
        assert "Nothing waits for you" in shown(await home_of(api, user, n=2))
    assert publishes(api, MAL) == 1  # not concerned: left alone


async def test_a_new_request_appears_in_the_home_of_who_opened_it(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    await slack.home_opened(BOB)
    assert "Nothing waits for you" in shown(await home_of(api, BOB))
    await slack.home_opened(MAL)
    await home_of(api, MAL)

    await ask_for_approval(h, slack, api)

    assert "Approval needed: deploy" in shown(await home_of(api, BOB, n=2))
    assert publishes(api, MAL) == 1
    assert publishes(api, DAN) == 0  # never opened their Home: nothing published


async def test_a_stale_click_in_the_home_is_told_atop_it(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    _root, card = await ask_for_approval(h, slack, api)
    await slack.home_opened(DAN)
    await home_of(api, DAN)
    stale = slack.home_click_payload(DAN, "gl_approve")
    await slack.click(card, "gl_approve", BOB)
    await h.drain()
    before = publishes(api, DAN)

    r = await slack.interact(stale)
    assert r.status_code == 200

    async def told() -> dict[str, Any] | None:
        view = await home_of(api, DAN, n=before + 1)
        return view if "already approved" in shown(view) else None

    view = await eventually(told)
    assert f"<@{BOB}>" in shown(view) and "Nothing changed" in shown(view)
    assert "Nothing waits for you" in shown(view)


async def test_many_requests_most_urgent_first_within_a_views_blocks(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    for i in range(30):
        body = {
            "agent": "billing-bot",
            "tool": "refund",
            "arguments": {"order": f"A-{i}", "amount": 100 + i},
            "summary": f"Refund order A-{i}",
            "policy": {"approvers": [f"slack:{BOB}"], "expires_in": 7200 - i * 60},
        }
        r = await h.api.post("/approvals", json=body)
        assert r.status_code == 201, r.text
    await h.drain()

    await slack.home_opened(BOB)
    view = await home_of(api, BOB)  # the stand-in refuses a view past 100 blocks

    orders = [
        f["text"]
        for b in view["blocks"]
        if b["type"] == "section"
        for f in b.get("fields") or []
        if "*order*" in f["text"]
    ]
    assert orders[:3] == ["*order*\nA-29", "*order*\nA-28", "*order*\nA-27"]  # soonest expiry
    assert 10 <= len(orders) < 30
    assert f"and {30 - len(orders)} more waiting for you" in shown(view)


async def test_refreshes_of_one_home_are_rate_limited(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    await slack.home_opened(BOB)
    await home_of(api, BOB)
    for i in range(PUBLISHES + 3):
        body = {
            "agent": "billing-bot",
            "tool": "refund",
            "arguments": {"order": f"B-{i}"},
            "summary": f"Refund order B-{i}",
            "policy": {"approvers": [f"slack:{BOB}"]},
        }
        assert (await h.api.post("/approvals", json=body)).status_code == 201
    await h.drain()

    assert publishes(api, BOB) == 1 + PUBLISHES  # opening, then at most PUBLISHES a minute
    await slack.home_opened(BOB)  # opening it again always shows it as it stands
    view = await home_of(api, BOB, n=2 + PUBLISHES)
    assert len([b for b in view["blocks"] if b["type"] == "actions"]) == PUBLISHES + 3


async def test_a_question_for_its_conversation_waits_only_for_who_the_agent_talks_to(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    async with Harness(redis_server.url, settings=slack_settings(api), model=choice_model()) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy something", ANN)
        await h.drain()
        for user in (ANN, MAL):
            await slack.home_opened(user)
        ann, mal = await home_of(api, ANN), await home_of(api, MAL)
        assert "Which environment?" in shown(ann) and buttons(ann) == ["gl_choice_0", "gl_choice_1"]
        assert "Nothing waits for you" in shown(mal)

        r = await slack.home_click(ANN, "gl_choice_1")  # "production", from the Home
        assert r.status_code == 200
        await h.drain()
        events = await h.rt.log.events(thread_of(root))
        assert [e.text for e in events if isinstance(e, HumanAnswer)] == ["production"]
        assert "Nothing waits for you" in shown(await home_of(api, ANN, n=2))
