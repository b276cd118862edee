"""Typed answers: which schemas a hosted agent may ask with, their forms, the value back."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.context import to_blocks
from bot.domain.errors import InvalidInputError
from bot.domain.events import Actor, HumanAnswer, HumanQuestion
from bot.domain.forms import DRAFT, MAX_FIELDS, Field, Kind, Section, to_form, to_value
from bot.domain.tools import BUILTINS
from bot.domain.validate import check_answer_schema, to_answer

PLAN: dict[str, Any] = {
    "$schema": DRAFT,
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1, "title": "Replicas"},
        "ratio": {"type": "number", "exclusiveMaximum": 1},
        "note": {"type": "string", "maxLength": 200, "description": "Anything else."},
        "start": {"type": "string", "format": "date"},
        "canary": {"type": "boolean", "default": True},
        "region": {"enum": ["eu", "us"]},
        "extras": {"type": "array", "items": {"type": "string", "enum": ["cdn"]}, "maxItems": 1},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "pager": {
            "type": "object",
            "title": "Pager",
            "properties": {"team": {"type": "string"}},
            "required": ["team"],
        },
    },
    "required": ["replicas", "owner"],
}


def test_the_supported_subset_becomes_one_field_per_input() -> None:
    check_answer_schema(PLAN)
    form = to_form(PLAN)
    kinds = [(i.path, i.kind, i.required) for i in form if isinstance(i, Field)]
    assert kinds == [
        (("replicas",), Kind.INTEGER, True),
        (("ratio",), Kind.NUMBER, False),
        (("note",), Kind.TEXT, False),
        (("start",), Kind.DATE, False),
        (("canary",), Kind.BOOLEAN, False),
        (("region",), Kind.CHOICE, False),
        (("extras",), Kind.CHOICES, False),
        (("owner", "name"), Kind.TEXT, True),
        # Required inside an object that is not: filled in only when the object is wanted.
        (("pager", "team"), Kind.TEXT, False),
    ]
    assert [(s.path, s.label) for s in form if isinstance(s, Section)] == [
        (("owner",), "owner"),
        (("pager",), "Pager"),
    ]
    replicas = form[0]
    assert isinstance(replicas, Field) and (replicas.label, replicas.minimum) == ("Replicas", 1)
    value = to_value(form, {("replicas",): 2, ("owner", "name"): "ann", ("note",): None})
    assert value == {"replicas": 2, "owner": {"name": "ann"}}


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "array", "items": {"type": "string"}}, "an array must be several choices"),
        ({"type": ["string", "null"]}, "type ['string', 'null'] is not supported"),
        ({"type": "string", "format": "email"}, "format 'email' is not supported"),
        ({"oneOf": [{"type": "string"}]}, "oneOf not supported"),
        ({"type": "object", "properties": {"a": {"$ref": "#"}}}, "at /a: $ref not supported"),
        ({"enum": [1, 2]}, "enum must list"),
        ({"enum": ["x" * 76]}, "enum must list"),
        ({"type": "object", "properties": {}}, "an object needs properties"),
        ({"type": "string", "$schema": "http://json-schema.org/draft-07/schema#"}, "2020-12"),
        ({"type": "integer", "minimum": "one"}, "not a valid JSON Schema at /minimum"),
        (
            {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(41)}},
            f"at most {MAX_FIELDS}",
        ),
    ],
)
def test_a_schema_outside_the_subset_is_refused_saying_where_and_why(
    schema: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_answer_schema(schema)
    assert why in caught.value.message


def test_leniently_what_a_form_cannot_show_is_a_json_field() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array"}, "n": {"type": "number"}}}
    form = to_form(schema, strict=False)
    assert [(i.path, i.kind) for i in form if isinstance(i, Field)] == [
        (("tags",), Kind.JSON),
        (("n",), Kind.NUMBER),
    ]
    (whole,) = to_form({"anyOf": [{"type": "string"}]}, strict=False)
    assert isinstance(whole, Field) and (whole.path, whole.kind) == ((), Kind.JSON)


def test_the_model_asking_with_a_bad_schema_gets_an_error_it_can_read() -> None:
    ask = next(t for t in BUILTINS if t.name == "ask_human")
    with pytest.raises(InvalidInputError) as caught:
        ask.validate({"question": "Which?", "answer_schema": {"type": "array"}})
    assert "answer_schema at /: an array must be several choices" in caught.value.message
    with pytest.raises(InvalidInputError, match="for format free_text"):
        ask.validate({"question": "Ok?", "format": "yes_no", "answer_schema": {"type": "boolean"}})
    assert ask.validate({"question": "How many?", "answer_schema": {"type": "integer"}})


def test_a_typed_answer_reaches_the_model_as_json_not_a_quoted_string() -> None:
    bob = Actor(channel="slack", id="U0BOB0001", name="Bob")
    q = HumanQuestion(request_id="r1", question="How?", answer_schema=PLAN)
    text = to_answer(q, '{ "owner": {"name": "ann"}, "replicas": 3 }')
    assert text == '{"owner":{"name":"ann"},"replicas":3}'
    with pytest.raises(InvalidInputError) as caught:
        to_answer(q, '{"owner": {}, "replicas": 0}')
    fields = {e["field"] for e in caught.value.detail["errors"]}
    assert fields == {"owner", "replicas"}  # every error, by where it is
    blocks = to_blocks([q, HumanAnswer(request_id="r1", text=text, by=bob)])
    assert blocks[-1].attrs == {"from": "Bob", "format": "json"}
    assert blocks[-1].body == '{"owner": {"name": "ann"}, "replicas": 3}'
    plain = HumanQuestion(request_id="r2", question="Why?")
    said = to_blocks([plain, HumanAnswer(request_id="r2", text='{"a": 1}', by=bob)])
    assert said[-1].attrs == {"from": "Bob"}  # free text stays text, whatever it looks like
