"""Slack Connect: people of another organisation's workspace, in a shared channel, decide nothing.

In a shared channel the payload's ``team.id`` stays the host's (the app's
installation) whoever clicks; the clicker's own workspace is ``user.team_id``,
and a message's is ``event.user_team``. The other workspace's user here has
Carol's email, so without the workspace check they would pass for Carol, an
approver named by email.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot.domain.events import ApprovalDecision, HumanAnswer
from bot.storage.embedded import EmbeddedRedis
from channels.slack.payloads import to_click, to_message
from tests.channels.slack.conftest import ANN, BOB, slack_settings
from tests.channels.slack.slack import TEAM, Slack, has_buttons, sample, text_of, whispers
from tests.channels.slack.test_cards import APPROVALS, cards_in
from tests.channels.slack.test_flows import ask_for_approval, card_in, last_view, thread_of
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI, SlackUser

OTHER = "T0VENDOR01"
EXT = "U0EXT0001"
"""A user of the other organisation's workspace, with an approver's email."""
CONNECT_NOTE = f"Only people of the Slack workspace this was asked in ({TEAM})"


def from_other_team(payload: dict[str, Any]) -> dict[str, Any]:
    """A click or submission as Slack sends it when the other workspace's user acts."""
    payload["user"]["team_id"] = OTHER
    assert payload["team"]["id"] == TEAM  # the host's, as in a shared channel
    return payload


def reply_from_other_team(slack: Slack, text: str, thread_ts: str, **kw: Any) -> dict[str, Any]:
    """A thread reply in a shared channel by the other workspace's user.

    The wrapper's ``team_id`` names the writer's workspace; ``authorizations`` the app's.
    """
    payload = slack.reply_payload(text, EXT, thread_ts, **kw)
    payload["is_ext_shared_channel"] = True
    payload["team_id"] = OTHER
    payload["event"].update(team=OTHER, user_team=OTHER, source_team=OTHER)
    return payload


def with_the_other_user(api: SlackAPI) -> SlackAPI:
    api.add_user(SlackUser(EXT, "carol", "carol@example.com"))
    return api


def test_the_actors_own_workspace_is_read_never_the_hosts() -> None:
    click = to_click(from_other_team(sample("block_actions")))
    assert (click.team, click.user_team) == (TEAM, OTHER)
    missing = sample("block_actions")
    del missing["user"]["team_id"]
    assert to_click(missing).user_team == ""  # unknown: matches no request

    connect = sample("message_in_thread")
    connect.update(team_id=OTHER, is_ext_shared_channel=True)
    connect["event"].update(team=TEAM, user_team=OTHER)
    message = to_message(connect, "U0BOT0001")
    assert message is not None and message.user_team == OTHER
    assert message.team == TEAM  # the installation's (authorizations): the conversation key
    same = to_message(sample("message_in_thread"), "U0BOT0001")
    assert same is not None and same.user_team == same.team == TEAM


async def test_clicks_from_another_workspace_are_refused_privately_and_change_nothing(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    with_the_other_user(api)
    root, card = await ask_for_approval(h, slack, api)
    before = await h.thread(thread_of(root))

    for action in ("gl_approve", "gl_reject", "gl_edit"):
        r = await slack.interact(from_other_team(slack.click_payload(card, action, EXT)))
        assert r.status_code == 200, r.text
    notes = await whispers(api, EXT, 3)
    assert len(notes) == 3 and all(CONNECT_NOTE in n and OTHER in n for n in notes), notes
    assert all("Nothing changed" in n for n in notes)
    assert api.calls_to("views.open") == []  # no form opened for them
    assert (await h.thread(thread_of(root))).version == before.version
    assert has_buttons(api.messages[card])

    # Someone of the request's own workspace still decides it.
    r = await slack.click(card, "gl_approve", BOB)
    assert r.status_code == 200, r.text
    await h.drain()
    events = await h.rt.log.events(thread_of(root))
    (decision,) = [e for e in events if isinstance(e, ApprovalDecision)]
    assert decision.by.id == BOB
    assert f"*Approved* by <@{BOB}>" in text_of(api.messages[card])


async def test_a_modal_submitted_from_another_workspace_is_refused_in_the_form(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    with_the_other_user(api)
    root, card = await ask_for_approval(h, slack, api)
    await slack.click(card, "gl_reject", BOB)  # a form opened in the request's workspace
    view = last_view(api)
    version = (await h.thread(thread_of(root))).version

    # A view_submission has no channel for an ephemeral: the note is the form's error,
    # which only the submitter sees.
    values = {"reason": {"reason": "no"}}
    r = await slack.interact(from_other_team(slack.submit_payload(view, values, EXT)))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["response_action"] == "errors"
    assert CONNECT_NOTE in answer["errors"]["reason"] and OTHER in answer["errors"]["reason"]
    assert (await h.thread(thread_of(root))).version == version
    assert api.calls_to("chat.postEphemeral") == []  # nothing said in the channel either

    r = await slack.submit(view, {"reason": {"reason": "not today"}}, BOB)
    assert r.status_code == 200 and not r.content, r.text
    await h.drain()
    assert f"*Rejected* by <@{BOB}>" in text_of(api.messages[card])


async def test_a_thread_answer_from_another_workspace_is_refused_and_not_kept(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    with_the_other_user(api)
    root = await slack.mention("deploy api to production", ANN)
    await h.drain()
    question = card_in(api, root)
    version = (await h.thread(thread_of(root))).version

    r = await slack.event(reply_from_other_team(slack, "1.4.2", root))
    assert r.status_code == 200, r.text
    (note,) = await whispers(api, EXT)
    assert CONNECT_NOTE in note and "can answer it" in note and OTHER in note
    (call,) = api.calls_to("chat.postEphemeral")
    assert call.params["thread_ts"] == root  # said in the thread, to the writer only
    await h.drain()
    assert (await h.thread(thread_of(root))).version == version  # no answer, no message
    assert "Answered by" not in text_of(api.messages[question])

    await slack.reply("1.4.2 please", ANN, root)
    await h.drain()
    events = await h.rt.log.events(thread_of(root))
    (answer,) = [e for e in events if isinstance(e, HumanAnswer)]
    assert answer.text == "1.4.2 please" and answer.by.id == ANN


async def test_a_card_for_a_thread_started_elsewhere_belongs_to_the_apps_workspace(
    redis_server: EmbeddedRedis, redis: Redis, api: SlackAPI
) -> None:
    with_the_other_user(api)
    settings = slack_settings(api, slack_approvals_channel=APPROVALS)
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        r = await h.api.post(
            "/threads",
            json={"agent": "deploy", "user": "erin", "text": "deploy web 2.1.0 to production"},
        )
        tid = r.json()["id"]
        await h.drain()
        (card,) = cards_in(api, APPROVALS)
        version = (await h.thread(tid)).version

        await slack.interact(from_other_team(slack.click_payload(card, "gl_approve", EXT)))
        (note,) = await whispers(api, EXT)
        assert CONNECT_NOTE in note  # TEAM: the workspace auth.test names for the bot token
        assert (await h.thread(tid)).version == version

        await slack.click(card, "gl_approve", BOB)
        await h.drain()
        assert (await h.api.get(f"/threads/{tid}")).json()["status"] == "done"
