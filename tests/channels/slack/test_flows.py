"""Chat and approvals end to end: signed Slack traffic in, Web API calls out, events in Redis."""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

from bot.domain import ids
from bot.domain.events import ApprovalDecision, HumanAnswer, ToolResult, UserMessage
from bot.domain.policy import ApprovalPolicy
from tests.channels.slack.conftest import ANN, BOB, CAROL, DAN, MAL, slack_settings
from tests.channels.slack.slack import (
    CHANNEL,
    TEAM,
    Slack,
    has_buttons,
    text_of,
    whispers,
)
from tests.doubles import Ledger, ScriptedModel, c, make_agent, turns
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI, SlackUser


def thread_of(root_ts: str, channel: str = CHANNEL) -> str:
    return ids.thread_id_for("slack", f"{TEAM}:{channel}:{root_ts}")


def card_in(api: SlackAPI, root_ts: str) -> tuple[str, str]:
    """The (channel, ts) of the one card with buttons posted in a Slack thread."""
    found = [
        k for k, m in api.messages.items() if m.get("thread_ts") == root_ts and m.get("blocks")
    ]
    assert len(found) == 1, api.messages
    return found[-1]


def replies_in(api: SlackAPI, root_ts: str) -> list[str]:
    """The agent's plain-text replies in a Slack thread, unescaped."""
    return [
        html.unescape(m["text"])
        for m in api.messages.values()
        if m.get("thread_ts") == root_ts and not m.get("blocks")
    ]


def last_view(api: SlackAPI) -> dict[str, Any]:
    call = api.calls_to("views.open")[-1]
    view: dict[str, Any] = call.params["view"]
    return {**view, "id": f"V0VIEW{len(api.calls_to('views.open')):04d}"}


async def ask_for_approval(h: Harness, slack: Slack, api: SlackAPI) -> tuple[str, tuple[str, str]]:
    root = await slack.mention("deploy api 1.5.0 to production", ANN)
    await h.drain()
    return root, card_in(api, root)


async def test_mention_card_approve_runs_and_replies(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    (post,) = [c for c in api.calls_to("chat.postMessage") if c.params.get("blocks")]
    assert post.params["channel"] == CHANNEL and post.params["thread_ts"] == root
    shown = text_of(api.messages[card])
    assert "Approval needed: deploy" in shown and "1.5.0" in shown and "production" in shown
    assert f"Asked by <@{ANN}>" in shown and "deploy api 1.5.0 to production" in shown
    assert f"<@{BOB}>" in shown and "expires <!date^" in shown  # approvers, expiry
    approve = next(
        e
        for b in api.messages[card]["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == "gl_approve"
    )
    assert approve["style"] == "primary" and "confirm" in approve  # deploys are risky

    await bob_approves(h, slack, card)

    events = await h.rt.log.events(thread_of(root))
    assert [e.outcome for e in events if isinstance(e, ToolResult)] == ["ok"]
    updated = api.messages[card]
    assert not has_buttons(updated)
    assert f"*Approved* by <@{BOB}>" in text_of(updated)
    assert any("-> 1.5.0 on production" in text for text in replies_in(api, root))


async def test_reject_with_reason_updates_card_and_tells_the_model(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)

    r = await slack.click(card, "gl_reject", BOB)
    assert r.status_code == 200
    view = last_view(api)
    assert view["callback_id"] == "gl_reject"
    r = await slack.submit(view, {"reason": {"reason": "not during the freeze"}}, BOB)
    assert r.status_code == 200 and not r.content, r.text  # modal closes
    await h.drain()

    assert f"*Rejected* by <@{BOB}>" in text_of(api.messages[card])
    assert "not during the freeze" in text_of(api.messages[card])
    assert not has_buttons(api.messages[card])
    assert any("not during the freeze" in text for text in replies_in(api, root))
    events = await h.rt.log.events(thread_of(root))
    assert [e.outcome for e in events if isinstance(e, ToolResult)] == ["rejected"]


async def test_reject_without_reason_is_refused_in_the_modal(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    await slack.click(card, "gl_reject", BOB)
    version = (await h.thread(thread_of(root))).version

    r = await slack.submit(last_view(api), {"reason": {"reason": "  "}}, BOB)
    assert r.json()["response_action"] == "errors" and "reason" in r.json()["errors"]
    assert (await h.thread(thread_of(root))).version == version


async def test_edit_shows_schema_errors_then_runs_the_edited_arguments(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    await slack.click(card, "gl_edit", CAROL)
    view = last_view(api)
    inputs = {
        b["block_id"]: b["element"].get("initial_value")
        for b in view["blocks"]
        if b["type"] == "input"
    }
    assert inputs == {"arg:service": "api", "arg:version": "1.5.0", "arg:environment": "production"}
    version = (await h.thread(thread_of(root))).version

    bad = {
        "arg:service": {"value": "api"},
        "arg:version": {"value": "1.4.2"},
        "arg:environment": {"value": "the moon"},
    }
    r = await slack.submit(view, bad, CAROL)
    assert r.status_code == 200
    answer = r.json()
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"arg:environment"}
    assert "production" in answer["errors"]["arg:environment"]
    assert (await h.thread(thread_of(root))).version == version  # nothing recorded

    good = {**bad, "arg:environment": {"value": "production"}}
    r = await slack.submit(view, good, CAROL)
    assert r.status_code == 200 and not r.content, r.text
    await h.drain()

    events = await h.rt.log.events(thread_of(root))
    (decision,) = [e for e in events if isinstance(e, ApprovalDecision)]
    assert decision.edited_args == {
        "service": "api",
        "version": "1.4.2",
        "environment": "production",
    }
    assert decision.by.email == "carol@example.com"  # an approver named by email
    assert any("-> 1.4.2 on production" in text for text in replies_in(api, root))
    assert "edited arguments" in text_of(api.messages[card])


async def test_non_approver_gets_an_ephemeral_and_nothing_changes(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    before = await h.thread(thread_of(root))

    for action in ("gl_approve", "gl_reject", "gl_edit"):
        r = await slack.click(card, action, MAL)
        assert r.status_code == 200
    assert (await h.thread(thread_of(root))).version == before.version
    notes = await whispers(api, MAL, 3)
    assert len(notes) == 3 and all("can't decide" in n for n in notes), notes
    assert f"<@{BOB}>" in notes[0]  # says who can
    assert api.calls_to("views.open") == []


async def test_requester_may_not_approve_their_own_request(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root = await slack.mention("deploy api 1.5.0 to production", BOB)
    await h.drain()
    card = card_in(api, root)
    version = (await h.thread(thread_of(root))).version

    await slack.click(card, "gl_approve", BOB)
    await slack.click(card, "gl_reject", BOB)
    notes = await whispers(api, BOB, 2)
    assert all("themselves" in n or "someone else" in n for n in notes)
    assert len(notes) == 2
    assert (await h.thread(thread_of(root))).version == version


async def test_user_group_member_may_approve(h: Harness, api: SlackAPI, slack: Slack) -> None:
    root, card = await ask_for_approval(h, slack, api)
    r = await slack.click(card, "gl_approve", DAN)
    assert r.status_code == 200
    events = await h.rt.log.events(thread_of(root))
    (decision,) = [e for e in events if isinstance(e, ApprovalDecision)]
    assert decision.by.id == DAN and decision.by.groups == ("S0OPS0001",)
    assert api.calls_to("usergroups.users.list")


async def test_two_approvers_at_once_make_one_decision(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    clicks = [slack.click_payload(card, "gl_approve", who) for who in (BOB, CAROL)]

    answers = await asyncio.gather(*(slack.interact(p) for p in clicks))
    assert [r.status_code for r in answers] == [200, 200]

    events = await h.rt.log.events(thread_of(root))
    (decision,) = [e for e in events if isinstance(e, ApprovalDecision)]
    loser = CAROL if decision.by.id == BOB else BOB
    (note,) = await whispers(api, loser)
    assert f"already approved by <@{decision.by.id}>" in note


async def test_stale_click_after_a_decision_elsewhere(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    (req,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
    r = await h.api.post(
        f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "dave"}
    )
    assert r.status_code == 200, r.text
    await h.drain()
    assert "*Approved* by dave" in text_of(api.messages[card])  # updated by the worker
    updates = len(api.calls_to("chat.update"))
    version = (await h.thread(thread_of(root))).version

    # A card still showing its buttons in someone's client is clicked.
    r = await slack.interact(slack.click_payload(card, "gl_approve", BOB, as_first_posted=True))
    assert r.status_code == 200
    assert "already approved by dave" in (await whispers(api, BOB))[-1]
    refreshes = await api.called("chat.update", updates + 1)
    assert len(refreshes) == updates + 1 and refreshes[-1].params["ts"] == card[1]
    assert (await h.thread(thread_of(root))).version == version


async def test_a_click_on_a_decided_card_by_someone_it_does_not_ask_tells_only_that(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    await bob_approves(h, slack, card)
    assert "*Approved* by" in text_of(api.messages[card])
    version = (await h.thread(thread_of(root))).version

    # Mallory's client still shows the buttons: she hears what she would of an open card,
    # not who decided it.
    for action in ("gl_approve", "gl_reject", "gl_edit"):
        r = await slack.interact(slack.click_payload(card, action, MAL, as_first_posted=True))
        assert r.status_code == 200
    notes = await whispers(api, MAL, 3)
    assert len(notes) == 3 and all("can't decide" in n for n in notes), notes
    assert not any("already" in n or f"<@{BOB}> at" in n for n in notes), notes
    assert (await h.thread(thread_of(root))).version == version
    assert api.calls_to("views.open") == []


async def test_free_text_reply_in_the_thread_answers_the_question(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root = await slack.mention("deploy api to production", ANN)
    await h.drain()
    question = card_in(api, root)
    assert "Which version of api" in text_of(api.messages[question])

    await slack.reply("1.4.2 please", ANN, root)
    await h.drain()

    events = await h.rt.log.events(thread_of(root))
    (answer,) = [e for e in events if isinstance(e, HumanAnswer)]
    assert answer.text == "1.4.2 please" and answer.by.id == ANN
    assert "Answered by" in text_of(api.messages[question])
    # The agent went on: it now asks to deploy the version it was told.
    cards = [m for m in api.messages.values() if m.get("thread_ts") == root and has_buttons(m)]
    assert len(cards) == 1 and "1.4.2" in text_of(cards[0])


async def test_thread_reply_without_a_question_is_a_user_message(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root = await slack.mention("deploy: list services", ANN)
    await h.drain()
    assert any("Running now" in t for t in replies_in(api, root))

    await slack.reply("thanks, now deploy web 2.1.0 to staging", ANN, root)
    await h.drain()
    events = await h.rt.log.events(thread_of(root))
    assert [e.text for e in events if isinstance(e, UserMessage)][-1].startswith("thanks")
    assert any("-> 2.1.0 on staging" in t for t in replies_in(api, root))


async def test_slash_command_starts_a_thread(h: Harness, api: SlackAPI, slack: Slack) -> None:
    r = await slack.command("deploy: list services", ANN)
    assert r.status_code == 200 and not r.content, r.text
    await h.drain()  # a worker posts the opening message, then the agent answers under it
    intro = api.calls_to("chat.postMessage")[0]
    assert "*deploy* agent" in intro.params["text"] and "thread_ts" not in intro.params
    root = next(ts for (ch, ts), m in api.messages.items() if m["text"] == intro.params["text"])
    assert any("Running now" in t for t in replies_in(api, root))

    # Replies under the opening post are the conversation, mention or not.
    await slack.reply("thanks, now deploy web 2.1.0 to staging", ANN, root)
    await h.drain()
    (tid,) = (await h.rt.indexes.threads(offset=0, limit=10))[0]
    events = await h.rt.log.events(tid)
    assert [e.text for e in events if isinstance(e, UserMessage)][-1].startswith("thanks")
    assert any("-> 2.1.0 on staging" in t for t in replies_in(api, root))

    r = await slack.command("", ANN)
    assert "Agents:" in r.text and "`deploy`" in r.text


async def test_an_empty_mention_gets_help(h: Harness, api: SlackAPI, slack: Slack) -> None:
    await slack.mention("", ANN)
    assert "Agents:" in (await whispers(api, ANN))[-1]
    _ids, total = await h.rt.indexes.threads(offset=0, limit=50)
    assert total == 0


def choice_model() -> ScriptedModel:
    return ScriptedModel(
        turns(
            c(
                "ask_human",
                question="Which environment?",
                format="choices",
                choices=["staging", "production"],
            ),
            c("reply", text="ok", final=True),
        )
    )


async def test_ask_human_choices_are_buttons(redis_server: Any, redis: Any, api: SlackAPI) -> None:
    from tests.channels.slack.conftest import slack_settings

    model = choice_model()
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy something", ANN)
        await h.drain()
        question = card_in(api, root)
        buttons = [
            e
            for b in api.messages[question]["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        ]
        assert [b["text"]["text"] for b in buttons] == ["staging", "production"]

        r = await slack.click(question, "gl_choice_0", BOB)
        assert r.status_code == 200
        await h.drain()

        events = await h.rt.log.events(thread_of(root))
        (answer,) = [e for e in events if isinstance(e, HumanAnswer)]
        assert answer.text == "staging" and answer.by.id == BOB
        assert "staging" in model.requests[-1].context_text()
        assert not has_buttons(api.messages[question])
        assert "ok" in replies_in(api, root)
        assert json.dumps(api.messages[question]).count("Answered by") == 1


async def test_a_display_name_never_passes_for_an_approver(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    api.add_user(SlackUser("U0EVE0001", "api:dave", "eve@example.com"))  # Dave's identity

    await slack.click(card, "gl_approve", "U0EVE0001")
    events = await h.rt.log.events(thread_of(root))
    assert not [e for e in events if isinstance(e, ApprovalDecision)]
    assert "can't decide" in (await whispers(api, "U0EVE0001"))[-1]


PASTED = "<li>&nbsp;</li>" * 120
"""A reason or answer pasted from a web page: 1,800 characters, twice that once escaped."""


async def test_a_long_reason_full_of_markup_still_updates_the_card(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root, card = await ask_for_approval(h, slack, api)
    await slack.click(card, "gl_reject", BOB)
    r = await slack.submit(last_view(api), {"reason": {"reason": PASTED}}, BOB)
    assert r.status_code == 200 and not r.content, r.text
    await h.drain()

    assert f"*Rejected* by <@{BOB}>" in text_of(api.messages[card])
    assert not has_buttons(api.messages[card])
    assert (await h.thread(thread_of(root))).failed_deliveries == []


async def test_a_long_answer_full_of_markup_still_updates_the_question(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    root = await slack.mention("deploy api to production", ANN)
    await h.drain()
    question = card_in(api, root)

    await slack.reply(PASTED, ANN, root)
    await h.drain()

    assert "Answered by" in text_of(api.messages[question])
    assert (await h.thread(thread_of(root))).failed_deliveries == []


async def test_model_written_mentions_never_ping_from_a_cards_text(
    redis_server: Any, redis: Any, api: SlackAPI
) -> None:
    model = ScriptedModel(
        turns(
            c("ask_human", question="<!channel> which service?"),
            c("deploy", service="<!here> <@U0MAL0001>", version="1.5.0", environment="production"),
        )
    )
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy something", ANN)
        await h.drain()
        await slack.reply("api", ANN, root)
        await h.drain()

        posts = [c.params for c in api.calls_to("chat.postMessage") if c.params.get("blocks")]
        assert len(posts) == 2, posts
        for post in posts:
            shown = " ".join([post["text"], *mrkdwn_in(post["blocks"])])  # plain_text never pings
            assert "<!channel>" not in shown and "<!here>" not in shown, shown
            assert "<@U0MAL0001>" not in shown, shown


def mrkdwn_in(found: Any) -> list[str]:
    """Every mrkdwn text in some blocks: what Slack parses for mentions and links."""
    if isinstance(found, list):
        return [t for item in found for t in mrkdwn_in(item)]
    if not isinstance(found, dict):
        return []
    own = [str(found["text"])] if found.get("type") == "mrkdwn" else []
    return own + [t for value in found.values() for t in mrkdwn_in(value)]


async def test_an_empty_group_allowed_on_purpose_lets_only_admins_click(
    redis_server: Any, redis: Any, api: SlackAPI
) -> None:
    settings = slack_settings(
        api,
        approver_groups={"deployers": [], "finance": [f"slack:{BOB}"]},
        approver_groups_allow_empty=["deployers"],
        admins=[f"slack:{CAROL}"],
    )
    async with Harness(redis_server.url, settings=settings) as h:
        slack = Slack(h.http, api)
        root, card = await ask_for_approval(h, slack, api)
        before = await h.thread(thread_of(root))
        for user in (MAL, BOB, DAN):
            await slack.click(card, "gl_approve", user)
            assert "can't decide" in (await whispers(api, user))[-1]
        assert (await h.thread(thread_of(root))).version == before.version

        await slack.click(card, "gl_approve", CAROL)
        await h.drain()
        assert any("-> 1.5.0 on production" in text for text in replies_in(api, root))


async def test_an_approver_who_already_voted_is_told_so_and_no_form_opens(
    redis_server: Any, redis: Any, api: SlackAPI
) -> None:
    policy = ApprovalPolicy(approvers=(f"slack:{BOB}", f"slack:{CAROL}"), min_approvals=2)
    ledger = Ledger()
    agents = {"bank": make_agent(ledger, policy=policy)}
    model = ScriptedModel(turns(c("transfer", to="dan", amount=5)))
    async with Harness(
        redis_server.url, settings=slack_settings(api), agents=agents, model=model
    ) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("bank: pay dan 5", ANN)
        await h.drain()
        card = card_in(api, root)
        await slack.click(card, "gl_approve", BOB)  # one of the two approvals it needs
        await h.drain()
        version = (await h.thread(thread_of(root))).version

        # The same click again is a replay (one person, one button, one card): no change.
        assert (await slack.click(card, "gl_approve", BOB)).status_code == 200
        for action in ("gl_reject", "gl_edit"):
            assert (await slack.click(card, action, BOB)).status_code == 200
        notes = await whispers(api, BOB, 2)
        assert len(notes) == 2 and all("already approved" in n for n in notes), notes
        assert "1 more approval" in notes[0]
        assert api.calls_to("views.open") == []  # no form that would be refused anyway
        assert (await h.thread(thread_of(root))).version == version and ledger.runs == []

        await slack.click(card, "gl_approve", CAROL)
        await h.drain()
        assert [run[1] for run in ledger.runs] == [{"to": "dan", "amount": 5}]


async def bob_approves(h: Harness, slack: Slack, card: tuple[str, str]) -> None:
    """Bob clicks Approve on ``card``, and the worker does what follows."""
    r = await slack.click(card, "gl_approve", BOB)
    assert r.status_code == 200, r.text
    await h.drain()
