"""An agent elsewhere asks over REST; a Slack click decides; the agent's long-poll sees it."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.channels.slack.conftest import BOB, MAL
from tests.channels.slack.slack import Slack, has_buttons, text_of, whispers
from tests.channels.slack.test_flows import last_view
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI

APPROVALS = "C0APPROV01"


def only_card(api: SlackAPI, channel: str) -> tuple[str, str]:
    found = [k for k, m in api.messages.items() if k[0] == channel and m.get("blocks")]
    assert len(found) == 1, api.messages
    return found[0]


async def asked(h: Harness, body: dict[str, Any]) -> str:
    """Ask for approval over the API and let a worker post its card: the request's id."""
    r = await h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    await h.drain()
    return str(r.json()["id"])


async def test_a_click_approves_an_external_request_and_the_long_poll_returns(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    body: dict[str, Any] = {
        "agent": "billing-bot",
        "tool": "refund",
        "arguments": {"order": "A-17", "amount": 120},
        "summary": "Customer was charged twice",
        "context": "Ticket 4411",
        "policy": {"approvers": [f"slack:{BOB}"]},
        "slack_channel": APPROVALS,
    }
    rid = await asked(h, body)

    card = only_card(api, APPROVALS)
    shown = text_of(api.messages[card])
    assert "refund" in shown and "A-17" in shown and f"<@{BOB}>" in shown
    assert "Customer was charged twice" in shown and "Ticket 4411" in shown

    polling = asyncio.create_task(h.api.get(f"/approvals/{rid}", params={"wait": 10}))
    r = await slack.click(card, "gl_approve", MAL)  # not an approver: refused privately
    assert r.status_code == 200
    assert any("can't decide" in n for n in await whispers(api, MAL))
    r = await slack.click(card, "gl_approve", BOB)
    assert r.status_code == 200, r.text

    out = (await polling).json()
    assert (out["status"], out["decision"]) == ("approved", "approve")
    assert [(a["channel"], a["id"]) for a in out["decided_by"]] == [("slack", BOB)]
    await h.drain()
    assert not has_buttons(api.messages[card])
    assert f"*Approved* by <@{BOB}>" in text_of(api.messages[card])


async def test_a_question_is_asked_in_the_channel_and_a_button_answers_it(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    body = {"question": "Is the freeze over?", "format": "yes_no", "slack_channel": APPROVALS}
    r = await h.api.post("/questions", json=body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    await h.drain()

    card = only_card(api, APPROVALS)
    assert "Is the freeze over?" in text_of(api.messages[card])
    r = await slack.click(card, "gl_choice_0", BOB)
    assert r.status_code == 200, r.text
    out = (await h.api.get(f"/questions/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["answer"], out["value"]) == ("answered", "yes", True)


async def test_json_typed_in_the_edit_form_that_could_not_be_read_back_is_an_error(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    # Too many arguments for an input each: the modal takes them as one JSON input.
    arguments: dict[str, Any] = {f"k{i:02d}": i for i in range(41)}
    body: dict[str, Any] = {
        "tool": "tune",
        "arguments": arguments,
        "arguments_schema": {"type": "object"},
        "summary": "Tune the knobs",
        "policy": {"approvers": [f"slack:{BOB}"]},
        "slack_channel": APPROVALS,
    }
    rid = await asked(h, body)
    await slack.click(only_card(api, APPROVALS), "gl_edit", BOB)
    view = last_view(api)
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == ["args"]
    deep = '{"a": ' * 300 + "1" + "}" * 300
    for typed, why in [
        (deep, "Nested deeper than 32 levels"),
        ('{"n": NaN}', "Not valid JSON"),
        ('{"s": "\\ud800"}', "Not valid JSON"),
    ]:
        r = await slack.submit(view, {"args": {"value": typed}}, BOB)
        assert r.status_code == 200, r.text
        assert r.json()["response_action"] == "errors"
        assert r.json()["errors"]["args"].startswith(why), r.json()
    out = (await h.api.get(f"/approvals/{rid}")).json()
    assert out["status"] == "open"
