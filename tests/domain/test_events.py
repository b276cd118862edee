"""Events round-trip through their stored form, whatever they leave out."""

from __future__ import annotations

import json
import types
import typing

import pytest
from pydantic import BaseModel

from bot.domain.events import (
    Actor,
    AgentReply,
    ApprovalRequested,
    Event,
    HumanQuestion,
    Origin,
    Paused,
    Resumed,
    ThreadCreated,
    ToolCall,
    ToolStarted,
    UserMessage,
    args_hash,
    from_log,
    record,
    started_key,
    stored_id,
    stored_type,
)
from bot.domain.reducer import fold


def to_json(event: Event, **where: typing.Any) -> str:
    """``event`` as the thread log stores it, which gives it the id its hash makes."""
    return record(event, **where)[0]


def event_classes() -> list[type[BaseModel]]:
    union = typing.get_args(Event)[0]
    return list(typing.get_args(union))


def may_be_none(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)
def test_a_field_that_may_be_none_defaults_to_none(cls: type[BaseModel]) -> None:
    # Stored events leave defaults out: a required field that may be None would not read back.
    required = [
        name
        for name, field in cls.model_fields.items()
        if field.is_required() and may_be_none(field.annotation)
    ]
    assert required == []


def test_greenlights_own_question_reads_back() -> None:
    asked = HumanQuestion(request_id="th_x.r1", question="The agent needs help. How?")
    assert from_log([to_json(asked)]) == [asked]


def test_every_event_reads_back_as_it_was_written() -> None:

    ann = Actor(channel="api", id="ann")
    written = [
        ThreadCreated(agent="deploy", origin=Origin(channel="api"), by=ann),
        ApprovalRequested(
            request_id="th_x.r1",
            call_id="c1",
            tool="deploy",
            args={"a": [1, None]},
            args_hash="h",
            requester=ann,
            approvers=["bob"],
            min_approvals=2,
        ),
    ]
    for event in written:
        raw = to_json(event)
        assert len(json.loads(raw)["type"]) < len(event.type)  # stored under a short code
        assert from_log([raw]) == [event]


def test_an_event_is_stored_without_its_id_and_reads_back_with_the_one_its_hash_makes() -> None:
    event = Paused(by=Actor(channel="api", id="ann"), at=1.0)
    made_here = event.id
    raw, event_hash = record(event)
    assert "id" not in json.loads(raw) and event.id == stored_id(event_hash) != made_here
    assert len(event.id) == len(made_here)  # as long as a random one
    assert from_log([raw]) == [event]


def test_a_stored_events_type_is_told_in_either_shape_without_parsing_it() -> None:
    said = UserMessage(text="hi", by=Actor(channel="api", id="ann"), at=1.0)
    assert stored_type(to_json(said)) == "user_message"
    assert stored_type('{"type":"user_message","id":"ev_1","at":1.0,"text":"hi"}') == (
        "user_message"
    )


@pytest.mark.parametrize(
    "event_id", ["ev_AbC-d_9", "ev_\u00e9t\u00e9 \U0001f600", 'a"b', "a\\b", "a\nb\x1fc\x7f", ""]
)
def test_an_id_stored_before_reads_back_whatever_its_characters(event_id: str) -> None:
    # Events stored before kept their id, escaped as JSON is.
    event = Paused(id=event_id, by=Actor(channel="api", id="ann"), at=1.0)
    raw = '{"type":"paused",' + event.model_dump_json(exclude_defaults=True)[1:]
    assert json.loads(raw)["id"] == event_id
    assert from_log([raw]) == [event]


def test_events_stored_in_the_first_shape_still_read() -> None:
    # As stored before: "v":1 written out, ids of 20 hex digits, times to the microsecond.
    old = [
        '{"type":"thread_created","v":1,"id":"ev_6ea12bd483700ec914b5","at":1796012662.8131785,'
        '"agent":"deploy","origin":{"channel":"api"},"by":{"channel":"api","id":"ann"}}',
        '{"type":"user_message","v":1,"id":"ev_7a97433ec364d9e64d3a","at":1796012662.8131785,'
        '"prev":"uTQhUG91IxgDJYYTV_bAhA","text":"deploy api","by":{"channel":"api","id":"ann"}}',
    ]
    created, said = from_log(old)
    assert isinstance(created, ThreadCreated) and isinstance(said, UserMessage)
    assert (created.v, created.id, created.at) == (1, "ev_6ea12bd483700ec914b5", 1796012662.8131785)
    assert (said.at, said.prev, said.text) == (
        1796012662.8131785,
        "uTQhUG91IxgDJYYTV_bAhA",
        "deploy api",
    )


def test_what_events_appended_together_repeat_is_stored_once() -> None:
    ann = Actor(channel="api", id="ann")
    args = {"service": "api", "version": "1.5.0"}
    first = ThreadCreated(agent="deploy", origin=Origin(channel="api"), by=ann, at=1000.25)
    call = ToolCall(turn="turn_1", call_id="call_1", tool="deploy", args=args, at=1000.5)
    asked = to_approval(call, at=1000.5)
    other = to_approval(call, at=1000.5).model_copy(update={"args": {"service": "web"}})
    raws = [to_json(first), to_json(call), to_json(asked, after=[first, call])]
    assert '"at"' in raws[1] and '"v"' not in raws[0]
    assert all(f not in raws[2] for f in ('"at"', '"args"', '"tool"', '"requester"'))
    assert from_log(raws) == [first, call, asked]
    # A run read from the middle of a log takes what it left out from the events before it.
    assert from_log(raws[2:], before=[first, call]) == [asked]
    # Whatever its text says, a request reads back its call's arguments.
    odd = asked.model_copy(update={"reason": 'quoted {"args": {}}', "args_schema": {"args": {}}})
    assert from_log([to_json(odd, after=[call])], before=[call]) == [odd]
    # A requester other than who spoke last is kept.
    bob = asked.model_copy(update={"requester": Actor(channel="api", id="bob")})
    raw = to_json(bob, after=[first, call])
    assert '"requester"' in raw and from_log([raw], before=[first, call]) == [bob]
    # Arguments that differ from the call's are kept.
    kept = to_json(other, after=[call])
    assert '"service":"web"' in kept
    assert from_log([kept], before=[call]) == [other]


def test_an_approval_request_without_who_asked_does_not_read() -> None:
    ann = Actor(channel="api", id="ann")
    first = ThreadCreated(agent="deploy", origin=Origin(channel="api"), by=ann, at=1.0)
    call = ToolCall(turn="turn_1", call_id="call_1", tool="deploy", args={}, at=1.0)
    raw = to_json(to_approval(call, at=1.0), after=[first, call])
    with pytest.raises(ValueError, match="no one spoke before it"):
        from_log([raw], before=[call])


def test_an_approval_request_without_its_call_does_not_read() -> None:
    call = ToolCall(turn="turn_1", call_id="call_1", tool="deploy", args={}, at=1.0)
    asked = to_approval(call, at=1.0)
    raw = to_json(asked, after=[call])
    assert '"call_id"' not in raw  # the call just before it
    assert from_log([raw], before=[call]) == [asked]
    with pytest.raises(ValueError, match="follows no call"):
        from_log([raw])
    later = to_json(asked, after=[call, AgentReply(text="checking", at=1.0)])
    assert '"call_id"' in later and '"args"' not in later
    with pytest.raises(ValueError, match="names no call"):
        from_log([later])


def to_approval(call: ToolCall, *, at: float) -> ApprovalRequested:
    return ApprovalRequested(
        at=at,
        request_id="th_x.r1",
        call_id=call.call_id,
        tool=call.tool,
        args=call.args,
        args_hash="h",
        requester=Actor(channel="api", id="ann"),
        approvers=["bob"],
    )


def test_the_requester_left_out_is_who_the_reducer_says_spoke_last() -> None:
    ann, bob, carol = (Actor(channel="api", id=n) for n in ("ann", "bob", "carol"))
    log: list[Event] = [
        ThreadCreated(agent="deploy", origin=Origin(channel="api"), by=ann, at=1.0),
        UserMessage(text="deploy", by=bob, at=2.0),
        Paused(by=carol, at=3.0),
        Resumed(by=carol, at=4.0),
        AgentReply(text="on it", at=5.0),
    ]
    for n in range(1, len(log) + 1):
        call = ToolCall(turn="turn_1", call_id="call_1", tool="deploy", args={}, at=9.0)
        asked = to_approval(call, at=9.0)
        asked.requester = fold("th_x", log[:n]).last_user or ann
        raw = to_json(asked, after=[*log[:n], call])
        assert '"requester"' not in raw
        assert from_log([raw], before=[*log[:n], call]) == [asked]


def test_an_event_that_leaves_out_its_time_reads_only_after_one_that_has_it() -> None:
    first = AgentReply(text="on it", at=7.5)
    second = AgentReply(text="done", at=7.5)
    raw = to_json(second, after=[first])
    assert '"at"' not in raw and from_log([raw], before=[first])[0].at == 7.5
    with pytest.raises(ValueError, match="without its time"):
        from_log([raw])


def test_a_turn_is_named_by_its_first_call_and_stored_only_when_another_names_it() -> None:
    first = ToolCall(call_id="call_1", tool="deploy", args={}, at=1.0)
    second = ToolCall(turn="call_1", call_id="call_2", tool="deploy", args={}, at=1.0)
    assert first.turn == "call_1"
    stored = [to_json(first), to_json(second, after=[first])]
    assert '"turn"' not in stored[0] and '"turn":"call_1"' in stored[1]
    read = from_log(stored)
    assert [e.turn for e in read if isinstance(e, ToolCall)] == ["call_1", "call_1"]
    # Calls stored before, each with a turn of its own name, read as they were.
    (old,) = from_log(
        [
            '{"type":"tool_call","v":1,"id":"ev_1","at":1.0,"turn":"turn_9",'
            '"call_id":"call_1","tool":"deploy","args":{}}'
        ]
    )
    assert isinstance(old, ToolCall) and old.turn == "turn_9"
    # The reducer counts one model turn for both calls of a turn.
    assert fold("th_0", [first, second]).turns_since_input == 1


def test_an_approval_request_made_without_a_hash_carries_its_arguments_hash() -> None:
    """The hash approvers' decisions must name is that of the arguments shown; stored
    without it, it reads back the same. A different hash is stored as it is."""
    call = ToolCall(call_id="call_1", tool="deploy", args={"service": "api"}, at=9.0)
    asked = ApprovalRequested(
        at=9.0,
        request_id="th_x.r1",
        call_id=call.call_id,
        tool=call.tool,
        args=call.args,
        requester=Actor(channel="api", id="ann"),
        approvers=["bob"],
    )
    assert asked.args_hash == args_hash({"service": "api"})
    raw = to_json(asked, after=[call])
    assert '"args_hash"' not in raw
    assert from_log([raw], before=[call]) == [asked]
    assert '"args_hash":"h"' in to_json(to_approval(call, at=9.0), after=[call])


def test_a_tools_start_leaves_out_the_arguments_and_key_its_call_and_thread_make() -> None:
    call = ToolCall(call_id="call_1", tool="deploy", args={"service": "api"}, at=9.0)
    started = ToolStarted(
        call_id="call_1", idempotency_key=started_key("th_x", "call_1"), args=call.args, at=9.5
    )
    raw = to_json(started, after=[call], thread_id="th_x")
    assert '"args"' not in raw and '"idempotency_key"' not in raw
    assert from_log([raw], before=[call], thread_id="th_x") == [started]
    assert from_log([to_json(call), raw], thread_id="th_x") == [call, started]
    # Read without what it leaves out: a named error, not a start with no arguments.
    with pytest.raises(ValueError, match="names no call"):
        from_log([raw], thread_id="th_x")
    with pytest.raises(ValueError, match="without its thread"):
        from_log([raw], before=[call])


def test_a_tools_start_keeps_what_its_call_and_thread_do_not_say() -> None:
    call = ToolCall(call_id="call_1", tool="deploy", args={"service": "api"}, at=9.0)
    # An approver's edit, a key of its own (another thread's), and arguments that hold
    # the start's own field names: each stored, and read back as it was.
    edited = ToolStarted(
        call_id="call_1",
        idempotency_key=started_key("th_x", "call_1"),
        args={"service": "web", "idempotency_key": "k", "args": {}},
        at=9.5,
    )
    raw = to_json(edited, after=[call], thread_id="th_x")
    assert '"args":{"service":"web"' in raw and '"idempotency_key":"th_x:' not in raw
    assert from_log([raw], before=[call], thread_id="th_x") == [edited]
    # Equal in Python, not as stored: 1, 1.0 and True; the same keys in another order.
    numbers = ToolCall(call_id="call_2", tool="pay", args={"n": 1, "ok": True}, at=9.0)
    for args in ({"n": 1.0, "ok": True}, {"n": 1, "ok": 1}, {"ok": True, "n": 1}):
        start = ToolStarted(
            call_id="call_2", idempotency_key=started_key("th_x", "call_2"), args=args
        )
        raw = to_json(start, after=[numbers], thread_id="th_x")
        (back,) = from_log([raw], before=[numbers], thread_id="th_x")
        assert isinstance(back, ToolStarted) and json.dumps(back.args) == json.dumps(args)
    other_key = ToolStarted(call_id="call_1", idempotency_key="th_y:call_1", args=call.args)
    raw = to_json(other_key, after=[call], thread_id="th_x")
    assert '"idempotency_key":"th_y:call_1"' in raw and '"args"' not in raw
    assert from_log([raw], before=[call], thread_id="th_x") == [other_key]
    # Stored with no thread named, or before this shape: every field is there.
    whole = to_json(edited.model_copy(update={"args": call.args}), after=[call])
    assert '"idempotency_key"' in whole and '"args"' not in whole
    (old,) = from_log(
        [
            '{"type":"tool_started","v":1,"id":"ev_1","at":9.5,"call_id":"call_1",'
            '"idempotency_key":"th_x:call_1","args":{"service":"api"}}'
        ],
        thread_id="th_x",
    )
    assert isinstance(old, ToolStarted) and old.args == {"service": "api"}
    assert old.idempotency_key == "th_x:call_1" and old.id == "ev_1"
