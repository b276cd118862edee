"""Forms from JSON Schemas (edits and typed answers) and the values posted back."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.web.forms import from_form, to_fields


class Window(BaseModel):
    start: str = Field(json_schema_extra={"format": "date"})
    hours: int | None = None


class Change(BaseModel):
    service: str = Field(description="Which service.")
    window: Window
    canary: bool = False
    note: str | None = None


def test_a_pydantic_schema_becomes_nested_fields_with_its_values() -> None:
    schema = Change.model_json_schema()  # $defs, $ref and anyOf-null, as tools give
    value = {"service": "api", "window": {"start": "2026-12-01", "hours": 2}, "canary": True}
    fields = {f.name: f for f in to_fields(schema, value, prefix="arg")}
    assert (fields["arg.service"].kind, fields["arg.service"].value) == ("text", "api")
    assert fields["arg.service"].help == "Which service." and fields["arg.service"].required
    window = {f.name: f for f in fields["arg.window"].children}
    assert (window["arg.window.start"].kind, window["arg.window.hours"].kind) == ("date", "integer")
    assert window["arg.window.hours"].value == "2"
    assert fields["arg.canary"].value is True and fields["arg.note"].kind == "text"


def test_posted_values_come_back_typed_and_optional_blanks_left_out() -> None:
    schema = Change.model_json_schema()
    posted = {
        "arg.service": ["api"],
        "arg.window.start": ["2026-12-01"],
        "arg.window.hours": ["3"],
        "arg.note": [""],
    }
    value, errors = from_form(schema, posted, prefix="arg")
    assert errors == {}
    assert value == {
        "service": "api",
        "window": {"start": "2026-12-01", "hours": 3},
        "canary": False,
    }


def test_errors_are_by_field_what_cannot_be_read_first_then_what_the_schema_refuses() -> None:
    schema = Change.model_json_schema()
    unreadable = {"arg.service": ["api"], "arg.window.start": ["x"], "arg.window.hours": ["2.5"]}
    _, errors = from_form(schema, unreadable, prefix="arg")
    assert errors == {"/window/hours": "'2.5' is not a whole number"}
    _, errors = from_form(schema, {"arg.window.hours": ["2"]}, prefix="arg")
    assert errors == {
        "/service": "'service' is a required property",
        "/window/start": "'start' is a required property",
    }


def test_a_whole_answer_of_one_kind() -> None:
    assert from_form({"type": "number"}, {"v": ["2.5"]}) == (2.5, {})
    assert from_form({"enum": ["eu", "us"]}, {"v": ["mars"]})[1] == {
        "/": "'mars' is not one of ['eu', 'us']"
    }
    several = {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1}
    assert from_form(several, {"v": ["a", "c"]}) == (["a", "c"], {})
    assert from_form(several, {})[1] == {"/": "[] should be non-empty"}
    assert from_form({"type": "array", "items": {"type": "integer"}}, {"v": ["[1, 2]"]}) == (
        [1, 2],
        {},
    )
