"""The pure translators: which payloads are a person talking, what cards and modals hold."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest

from bot.domain.errors import InvalidInputError
from bot.domain.events import Actor, ApprovalRequested
from bot.domain.reducer import Request
from bot.domain.triage import to_agent
from channels.slack.blocks import FIELDS_MAX, CardInfo, card, to_chunks
from channels.slack.payloads import from_value, is_self_event, to_click, to_message, to_value
from channels.slack.views import args_modal, edit_modal, from_edit, to_errors
from tests.channels.slack.slack import sample

BOT = "U0BOT0001"


@pytest.mark.parametrize(
    ("event", "own"),
    [
        ({"type": "app_home_opened", "user": BOT}, True),
        ({"type": "message", "user": {"id": BOT}}, True),
        ({"type": "message", "subtype": "bot_message", "bot_id": "B0BOT0001"}, True),
        ({"type": "app_home_opened", "user": "U0ANN0001"}, False),
        ({"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER01"}, False),
        ({"type": "message", "user": ""}, False),
        ({"type": "reaction_added"}, False),
    ],
)
def test_the_apps_own_events_are_told_by_its_user_or_bot(event: dict[str, Any], own: bool) -> None:
    assert is_self_event(event, BOT, "B0BOT0001") is own


def test_mentions_and_thread_replies_are_messages_bots_and_edits_are_not() -> None:
    mention = to_message(sample("app_mention"), BOT)
    assert mention is not None and mention.mention
    assert mention.text == "deploy api 1.5.0 to production"  # the bot's mention taken out
    assert mention.conversation == "T0TEAM0001:C0DEPLOY01:1718000000.000100"
    assert mention.delivery == "slack:C0DEPLOY01:1718000000.000100"

    reply = to_message(sample("message_in_thread"), BOT)
    assert reply is not None and reply.is_reply and reply.root == "1718000000.000100"

    assert to_message(sample("bot_message"), BOT) is None
    assert to_message(sample("message_changed"), BOT) is None
    top_level = sample("message_in_thread")
    del top_level["event"]["thread_ts"]
    assert to_message(top_level, BOT) is None  # channel chatter
    direct = sample("message_in_thread")
    del direct["event"]["thread_ts"]
    direct["event"].update(channel="D0DM000001", channel_type="im")
    found = to_message(direct, BOT)
    assert found is not None and found.direct and found.root == found.ts
    both = sample("message_in_thread")
    both["event"]["text"] = f"<@{BOT}> again"
    assert to_message(both, BOT) is None  # its app_mention twin carries it


def test_the_first_word_picks_the_agent() -> None:
    agents = {"deploy", "refunds"}
    assert to_agent("deploy api 1.5.0", agents) == "deploy"
    assert to_agent("Refunds: refund A-1001", agents) == "refunds"
    assert to_agent("please deploy", agents) is None
    assert to_agent("", agents) is None


def test_button_values_round_trip_and_junk_is_refused() -> None:
    assert from_value(to_value(r="th_x.r1", h="abc")) == {"r": "th_x.r1", "h": "abc"}
    for junk in ("", "nope", "[1]", '{"h": "x"}'):
        with pytest.raises(InvalidInputError):
            from_value(junk)
    click = to_click(sample("block_actions"))
    assert (click.user, click.channel, click.message_ts) == (
        "U0BOB0001",
        "C0DEPLOY01",
        "1718000001.000100",
    )


def request(args: dict[str, object], **asked: object) -> Request:
    ask = ApprovalRequested(
        request_id="th_0123456789abcdef0123.r01234567",
        call_id="call_1",
        tool="deploy",
        args=args,
        args_hash="h1",
        requester=Actor(channel="slack", id="U0ANN0001"),
        approvers=["slack:U0BOB0001"],
        **asked,  # type: ignore[arg-type]
    )
    return Request(asked=ask, args=args, args_hash="h1", approvers=ask.approvers)


def all_text(blocks: object) -> str:
    return json.dumps(blocks)


def test_long_arguments_are_cut_within_block_kit_limits_with_the_rest_a_click_away() -> None:
    args: dict[str, object] = {f"k{i}": "x" * 5000 for i in range(15)}
    args["note"] = "<!channel> & <https://evil|click>"
    _text, blocks = card(request(args), CardInfo(agent="deploy", approvers=["<@U0BOB0001>"]))
    fields = next(b for b in blocks if "fields" in b)["fields"]
    assert len(fields) <= FIELDS_MAX and all(len(f["text"]) <= 2000 for f in fields)
    assert all(
        len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section" and "text" in b
    )
    actions = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert actions == ["gl_approve", "gl_reject", "gl_edit", "gl_view"]
    assert all(
        len(e["value"]) <= 2000 for b in blocks if b["type"] == "actions" for e in b["elements"]
    )

    full = args_modal(request(args), request(args).asked)  # type: ignore[arg-type]
    assert len(full["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in full["blocks"])

    few = {"note": "<!channel> & <https://evil|click>"}
    _, blocks = card(request(few), CardInfo(agent="deploy", approvers=[]))
    shown = all_text(blocks)
    assert "<!channel>" not in shown and "&lt;!channel&gt; &amp;" in shown
    assert "gl_view" not in shown  # nothing was cut


def test_replies_are_escaped_and_split_within_slacks_length() -> None:
    chunks = to_chunks("line\n" * 2000 + "<!here>")
    assert len(chunks) > 1 and all(len(c) <= 3900 for c in chunks)
    assert "<!here>" not in "".join(chunks)


def test_edit_modal_reads_strings_as_typed_and_the_rest_as_json() -> None:
    req = request({"service": "api", "replicas": 3, "tags": ["a"]})
    view = edit_modal(req, req.asked)  # type: ignore[arg-type]
    meta = json.loads(view["private_metadata"])
    values = {
        "arg:service": {"value": {"type": "plain_text_input", "value": "42"}},
        "arg:replicas": {"value": {"type": "plain_text_input", "value": "5"}},
        "arg:tags": {"value": {"type": "plain_text_input", "value": '["b", "c"]'}},
    }
    edited, errors = from_edit(values, meta)
    assert edited == {"service": "42", "replicas": 5, "tags": ["b", "c"]} and not errors
    placed = to_errors(
        [
            {"field": "replicas", "error": "too many"},
            {"field": "tags.0", "error": "bad tag"},
            {"field": "", "error": "whole thing"},
        ],
        values,
        meta,
    )
    assert placed["arg:replicas"] == "too many" and placed["arg:tags"] == "bad tag"
    assert "whole thing" in placed["arg:service"]


def test_edit_modal_falls_back_to_one_json_input_for_big_arguments() -> None:
    req = request({f"k{i}": i for i in range(60)})
    view = edit_modal(req, req.asked)  # type: ignore[arg-type]
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    meta = json.loads(view["private_metadata"])
    broken = {"args": {"value": {"type": "plain_text_input", "value": "{nope"}}}
    edited, errors = from_edit(broken, meta)
    assert edited is None and "Not valid JSON" in errors["args"]
    ok = {
        "args": {"value": {"type": "plain_text_input", "value": field["element"]["initial_value"]}}
    }
    assert from_edit(ok, meta)[0] == {f"k{i}": i for i in range(60)}


def test_full_arguments_are_all_shown_even_when_escaping_lengthens_them() -> None:
    args = {"page": "<li>&nbsp;</li>" * 400}
    req = request(args)
    full = args_modal(req, req.asked)  # type: ignore[arg-type]
    texts = [b["text"]["text"] for b in full["blocks"]]
    assert all(len(t) <= 3000 for t in texts)
    shown = "".join(html.unescape(t.removeprefix("```").removesuffix("```")) for t in texts)
    assert shown == json.dumps(args, indent=2, ensure_ascii=False)
