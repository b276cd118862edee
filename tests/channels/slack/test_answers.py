"""Typed answers in Slack: the Answer… button, the form it opens, errors kept in the form."""

from __future__ import annotations

import json
from typing import Any

from bot.domain.events import HumanAnswer
from bot.storage.embedded import EmbeddedRedis
from tests.channels.slack.conftest import ANN, BOB, MAL, slack_settings
from tests.channels.slack.slack import Slack, has_buttons, text_of, whispers
from tests.channels.slack.test_external import APPROVALS, only_card
from tests.channels.slack.test_flows import card_in, last_view, replies_in, thread_of
from tests.doubles import ScriptedModel, c, turns
from tests.harness import Harness
from tests.standins.slack_api import SlackAPI

PLAN = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "title": "Replicas"},
        "region": {"enum": ["eu", "us"], "title": "Region"},
        "extras": {"type": "array", "items": {"enum": ["cdn", "waf"]}, "title": "Extras"},
        "start": {"type": "string", "format": "date", "title": "Start"},
        "canary": {"type": "boolean", "title": "Canary first"},
        "owner": {
            "type": "object",
            "title": "Owner",
            "properties": {"name": {"type": "string", "description": "Who is paged."}},
            "required": ["name"],
        },
    },
    "required": ["replicas", "region", "canary", "owner"],
}


def picked(value: str) -> dict[str, Any]:
    return {"selected_option": {"value": value}}


def number(text: str) -> dict[str, Any]:
    return {"type": "number_input", "value": text}


async def test_a_typed_answer_is_a_form_whose_errors_stay_open_until_it_is_valid(
    redis_server: EmbeddedRedis, redis: Any, api: SlackAPI
) -> None:
    model = ScriptedModel(
        turns(
            c("ask_human", question="How should web scale?", answer_schema=PLAN),
            c("reply", text="scaling", final=True),
        )
    )
    async with Harness(redis_server.url, settings=slack_settings(api), model=model) as h:
        slack = Slack(h.http, api)
        root = await slack.mention("deploy: scale web for the launch", ANN)
        await h.drain()
        card = card_in(api, root)
        assert "Answer…" in json.dumps(api.messages[card]["blocks"], ensure_ascii=False)

        r = await slack.click(card, "gl_answer", BOB)
        assert r.status_code == 200
        (opened,) = api.calls_to("views.open")
        assert opened.params["trigger_id"]  # the click's, opened before Slack's 3 s ran out
        view = last_view(api)
        inputs = {
            b["block_id"]: (b["label"]["text"], b["element"]["type"], b["optional"])
            for b in view["blocks"]
            if b["type"] == "input"
        }
        assert inputs == {
            "f0": ("Replicas", "number_input", False),
            "f1": ("Region", "static_select", False),
            "f2": ("Extras", "multi_static_select", True),
            "f3": ("Start", "datepicker", True),
            "f4": ("Canary first", "radio_buttons", False),
            "f5": ("name", "plain_text_input", False),
        }
        assert "*Owner*" in json.dumps(view["blocks"])  # the nested object's heading
        version = (await h.thread(thread_of(root))).version

        values: dict[str, dict[str, Any]] = {
            "f0": {"value": number("12")},  # over the schema's maximum
            "f1": {"value": picked("1")},
            "f2": {"value": {"selected_options": [{"value": "0"}, {"value": "1"}]}},
            "f3": {"value": {"selected_date": "2026-12-01"}},
            "f4": {"value": picked("true")},
            "f5": {"value": "ann"},
        }
        r = await slack.submit(view, values, BOB)
        assert r.status_code == 200
        assert r.json()["response_action"] == "errors"
        assert set(r.json()["errors"]) == {"f0"}
        assert "maximum of 10" in r.json()["errors"]["f0"]
        assert (await h.thread(thread_of(root))).version == version  # nothing recorded

        r = await slack.submit(view, {**values, "f0": {"value": number("three")}}, BOB)
        assert r.json()["errors"] == {"f0": "Enter a whole number."}

        r = await slack.submit(view, {**values, "f0": {"value": number("3")}}, BOB)
        assert r.status_code == 200 and not r.content, r.text
        again = await slack.submit(view, {**values, "f0": {"value": number("4")}}, BOB)
        assert again.status_code == 200  # Slack's retry of the same submission: one answer
        await h.drain()

        events = await h.rt.log.events(thread_of(root))
        (answer,) = [e for e in events if isinstance(e, HumanAnswer)]
        value = {
            "replicas": 3,
            "region": "us",
            "extras": ["cdn", "waf"],
            "start": "2026-12-01",
            "canary": True,
            "owner": {"name": "ann"},
        }
        assert json.loads(answer.text) == value and answer.by.id == BOB
        seen = model.requests[-1].context_text()
        assert '<human_answer from="bob@example.com" format="json">' in seen
        assert json.dumps(value, sort_keys=True) in seen  # the value, not a quoted string
        assert "scaling" in replies_in(api, root)
        assert not has_buttons(api.messages[card])
        assert "Answered by" in text_of(api.messages[card])


async def test_only_who_may_answer_gets_the_form_and_any_schema_has_one(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    # Asked through the API, whose schemas may go beyond the form's subset: such a field
    # is typed as JSON.
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["tags"],
    }
    body = {
        "question": "Which tags?",
        "answer_schema": schema,
        "answerers": [f"slack:{BOB}"],
        "slack_channel": APPROVALS,
    }
    r = await h.api.post("/questions", json=body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    await h.drain()
    card = only_card(api, APPROVALS)

    r = await slack.click(card, "gl_answer", MAL)
    assert r.status_code == 200
    assert api.calls_to("views.open") == []  # no form that would be refused anyway
    assert any("can't answer" in n for n in await whispers(api, MAL)), await whispers(api, MAL)

    await slack.click(card, "gl_answer", BOB)
    view = last_view(api)
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert (field["block_id"], field["label"]["text"]) == ("f0", "tags (JSON)")

    r = await slack.submit(view, {"f0": {"value": "[web"}}, BOB)
    assert r.json()["response_action"] == "errors"
    assert r.json()["errors"]["f0"].startswith("Not valid JSON")
    r = await slack.submit(view, {"f0": {"value": '"web"'}}, BOB)
    assert r.json()["errors"] == {"f0": "'web' is not of type 'array'"}

    r = await slack.submit(view, {"f0": {"value": '["web", "launch"]'}}, BOB)
    assert r.status_code == 200 and not r.content, r.text
    out = (await h.api.get(f"/questions/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["value"]) == ("answered", {"tags": ["web", "launch"]})
    assert (out["answered_by"]["channel"], out["answered_by"]["id"]) == ("slack", BOB)


async def test_json_typed_in_the_form_that_could_not_be_read_back_is_an_error_on_its_input(
    h: Harness, api: SlackAPI, slack: Slack
) -> None:
    schema = {"type": "object", "properties": {"detail": {"type": "object"}}}
    body = {"question": "What?", "answer_schema": schema, "slack_channel": APPROVALS}
    rid = (await h.api.post("/questions", json=body)).json()["id"]
    await h.drain()
    await slack.click(only_card(api, APPROVALS), "gl_answer", BOB)
    view = last_view(api)
    deep = '{"a": ' * 300 + "1" + "}" * 300  # what Slack's 3,000 characters hold
    for typed, why in [
        (deep, "Nested deeper than 32 levels"),
        ('{"n": NaN}', "Not valid JSON"),
        ('{"s": "\\ud800"}', "Not valid JSON"),
    ]:
        r = await slack.submit(view, {"f0": {"value": typed}}, BOB)
        assert r.status_code == 200, r.text
        assert r.json()["response_action"] == "errors"
        assert r.json()["errors"]["f0"].startswith(why), r.json()
    out = (await h.api.get(f"/questions/{rid}")).json()
    assert out["status"] == "open"
