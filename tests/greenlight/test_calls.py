"""A call as an approval sees it: JSON arguments, their schema, the key, the call rebuilt."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from greenlight import ConfigError, require_approval
from greenlight.calls import Signature, Slots, call_key


def ship(when: dt.date, /, *names: str, force: bool = False, **labels: int) -> None:
    """Positional-only, variadic, keyword-only and variadic keywords at once."""


class Opaque:
    pass


def test_an_edit_is_typed_by_the_hints_and_rebuilt_into_the_same_kinds_of_argument() -> None:
    sig = Signature.of(ship, (), typed=True)
    bound = sig.arguments((dt.date(2026, 1, 2), "api", "web"), {"env": 1})
    shown = sig.to_json(bound)
    assert shown == {
        "when": "2026-01-02",
        "names": ["api", "web"],
        "force": False,
        "labels": {"env": 1},
    }
    schema = sig.schema()
    assert schema is not None and schema["additionalProperties"] is False
    assert schema["properties"]["when"]["format"] == "date" and schema["required"] == ["when"]

    assert sig.rebuild(bound, shown, edited=False) == (bound.args, bound.kwargs)
    edit = {**shown, "when": "2026-02-03", "names": ["api"], "force": True}
    args, kwargs = sig.rebuild(bound, edit, edited=True)
    assert args == (dt.date(2026, 2, 3), "api") and kwargs == {"force": True, "env": 1}


def test_arguments_that_are_not_json_must_be_left_out_by_name() -> None:
    def tool(ctx: Opaque, n: int) -> None: ...

    with pytest.raises(ConfigError, match="ctx"):
        Signature.of(tool, (), typed=True)
    untyped = Signature.of(tool, (), typed=False)
    with pytest.raises(ConfigError, match=r"exclude=\('ctx',\)"):
        untyped.to_json(untyped.arguments((Opaque(), 1), {}))
    sig = Signature.of(tool, ("ctx",), typed=True)
    ctx = Opaque()
    bound = sig.arguments((ctx, 1), {})
    assert sig.to_json(bound) == {"n": 1}
    args, _ = sig.rebuild(bound, {"n": 2}, edited=True)
    assert args == (ctx, 2)
    with pytest.raises(ConfigError, match="exclude names no parameter"):
        Signature.of(tool, ("context",), typed=True)


def test_the_key_names_the_call_and_a_decided_slot_is_not_reused() -> None:
    args: dict[str, Any] = {"version": "1.5.0", "replicas": 3}
    key = call_key("approval", "m.deploy", args, None)
    assert key == call_key("approval", "m.deploy", dict(reversed(args.items())), None)
    assert key != call_key("approval", "m.deploy", args, "run-2")
    assert key != call_key("approval", "m.deploy", {**args, "replicas": 4}, None)
    assert len(key) <= 200  # the server's limit on an Idempotency-Key

    slots = Slots()
    assert slots.take(key) == 0 and slots.take(key) == 1
    slots.give_back(key, 0)
    assert slots.take(key) == 0 and slots.take(key) == 2


def test_the_decorator_says_how_to_fix_a_policy_or_a_function_given_as_the_tool() -> None:
    with pytest.raises(ConfigError, match=r"used with a dict.*@require_approval\(policy=\.\.\.\)"):
        require_approval({"approvers": ["bob"]})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"used without parentheses.*@require_approval\(\)"):
        require_approval(ship)  # type: ignore[arg-type]
