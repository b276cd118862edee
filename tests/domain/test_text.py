"""The one tool-call formatter, the one cutter every channel and the CLI use, and URLs cut to
where they point."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from bot.domain.text import cut, redact_urls, to_args, to_call, to_shown, to_site
from channels.slack.blocks import cut_escaped

ARGS = {"service": "api", "replicas": 3, "canary": True, "tags": ["a", "é"]}


def test_a_call_reads_the_same_everywhere() -> None:
    assert to_shown("api") == "api" and to_shown({"é": None}) == '{"é": null}'
    assert to_args(ARGS) == 'service=api, replicas=3, canary=true, tags=["a", "é"]'
    assert to_call("deploy", ARGS) == f"deploy({to_args(ARGS)})"
    # The terminal quotes strings, so "1.5.0" and 1.5 look different.
    assert to_call("deploy", {"version": "1.5.0"}, show=repr) == "deploy(version='1.5.0')"
    assert to_call("list_services", {}) == "list_services()"


def test_a_long_call_is_cut_inside_its_parentheses() -> None:
    long = to_call("deploy", {"note": "x" * 500}, limit=40)
    assert len(long) == 40 and long.startswith("deploy(note=xxx") and long.endswith("x…)")
    assert to_call("deploy", {"a": 1}, limit=40) == "deploy(a=1)"  # short: untouched
    assert to_call("a_very_long_tool_name", {"a": 1}, limit=5) == "a_very_long_tool_name(…)"


def test_cut_marks_what_it_shortened() -> None:
    assert cut("short", 5) == "short"
    assert cut("longer", 5) == "long…" and len(cut("x" * 100, 10)) == 10
    # A boundary moves the cut back, never forward.
    assert cut("ab cd ef", 7, boundary=lambda text, at: text.rfind(" ", 0, at)) == "ab cd…"


def test_slack_cuts_escaped_text_without_splitting_an_entity() -> None:
    cut_there = cut_escaped("ab<cd", 6)  # "ab&lt;cd": a plain cut would end in "ab&lt"
    assert cut_there == "ab…"
    assert cut_escaped("a<b", 10) == "a&lt;b"


def test_a_url_is_cut_to_its_scheme_host_and_port() -> None:
    assert to_site("https://me:pw@Hooks.example.com:8443/t/abc?key=k#f") == (
        "https://hooks.example.com:8443"
    )
    assert to_site("http://[::1]/x") == "http://[::1]" and to_site("http://h:port/x") == "http://?"
    said = "ConnectError('to http://h.example.com/t/abc?key=k: refused'), see https://b/c"
    assert redact_urls(said) == "ConnectError('to http://h.example.com: refused'), see https://b"
    # A URL given is cut wherever it is, even where it holds what ends a URL in text.
    assert redact_urls("POST http://h/a'b?k=1 failed", "http://h/a'b?k=1") == "POST http://h failed"


def test_a_url_in_a_repr_ends_where_an_escape_begins() -> None:
    # slack_sdk's own error: its message puts the server's answer after a newline, which a
    # repr writes as a backslash and an n; the URL ended at the next space before.
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={},
        data={"ok": False, "error": "channel_not_found"},
        headers={},
        status_code=200,
    )
    with pytest.raises(SlackApiError) as raised:
        response.validate()
    assert redact_urls(repr(raised.value)) == (
        'SlackApiError("The request to the Slack API failed. (url: https://slack.com)\\n'
        "The server responded with: {'ok': False, 'error': 'channel_not_found'}\")"
    )
    # The other escapes a repr writes for what no URL holds end a URL too; a backslash
    # the URL holds (two in a repr) does not, so nothing after it is left.
    said = repr(ValueError("to https://h/k?x=1\tthen https://u:pw@g/a\x85next, https://f/a\\b?k=1"))
    assert redact_urls(said) == "ValueError('to https://h\\tthen https://g\\x85next, https://f')"
