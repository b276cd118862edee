"""HTML forms for JSON Schemas (edits and typed answers) and the values posted back."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.web.forms import from_posted, inline, to_inputs


class Window(BaseModel):
    start: str = Field(json_schema_extra={"format": "date"})
    hours: int | None = None


class Change(BaseModel):
    service: str = Field(description="Which service.")
    window: Window
    canary: bool = False
    note: str | None = None


def test_a_tools_pydantic_schema_lays_out_as_plain_inputs_with_their_values() -> None:
    schema = Change.model_json_schema()  # $defs, $ref and anyOf-null, as tools give
    assert "$ref" not in str(inline(schema)) and "anyOf" not in str(inline(schema))
    value = {"service": "api", "window": {"start": "2026-12-01", "hours": 2}, "canary": True}
    inputs = {f.name: f for f in to_inputs(schema, value, prefix="arg")}
    service = inputs["arg.service"]
    assert (service.kind, service.value, service.help, service.required) == (
        "text",
        "api",
        "Which service.",
        True,
    )
    assert inputs["arg.window"].kind == "section"
    assert (inputs["arg.window.start"].kind, inputs["arg.window.hours"].kind) == ("date", "integer")
    assert inputs["arg.window.hours"].value == "2" and not inputs["arg.window.hours"].required
    assert inputs["arg.canary"].value is True and inputs["arg.note"].kind == "text"


def test_posted_values_come_back_typed_and_blanks_left_out() -> None:
    schema = Change.model_json_schema()
    posted = {
        "arg.service": ["api"],
        "arg.window.start": ["2026-12-01"],
        "arg.window.hours": ["3"],
        "arg.note": [""],
    }
    assert from_posted(schema, posted, prefix="arg") == (
        {"service": "api", "window": {"start": "2026-12-01", "hours": 3}, "canary": False},
        {},
    )


def test_errors_by_input_what_cannot_be_read_first_then_what_the_schema_refuses() -> None:
    schema = Change.model_json_schema()
    unreadable = {"arg.service": ["api"], "arg.window.start": ["x"], "arg.window.hours": ["2.5"]}
    _, errors = from_posted(schema, unreadable, prefix="arg")
    assert errors == {"/window/hours": "'2.5' is not a whole number"}
    _, errors = from_posted(schema, {"arg.window.hours": ["2"]}, prefix="arg")
    assert errors == {
        "/service": "'service' is a required property",
        "/window/start": "'start' is a required property",
    }


def test_a_whole_answer_of_one_kind() -> None:
    assert from_posted({"type": "number"}, {"v": ["2.5"]}, prefix="v") == (2.5, {})
    assert from_posted({"enum": ["eu", "us"]}, {"v": ["mars"]}, prefix="v")[1] == {
        "/": "'mars' is not one of ['eu', 'us']"
    }
    several = {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1}
    assert from_posted(several, {"v": ["a", "c"]}, prefix="v") == (["a", "c"], {})
    assert from_posted(several, {}, prefix="v")[1] == {"/": "[] should be non-empty"}
    free = {"type": "array", "items": {"type": "integer"}}  # outside the subset: JSON
    assert to_inputs(free, prefix="v")[0].kind == "json"
    assert from_posted(free, {"v": ["[1, 2]"]}, prefix="v") == ([1, 2], {})
