"""Events round-trip through their stored form, whatever they leave out."""

from __future__ import annotations

import types
import typing

import pytest
from pydantic import BaseModel

from bot.domain.events import Event, HumanQuestion, from_json, to_json


def event_classes() -> list[type[BaseModel]]:
    union = typing.get_args(Event)[0]
    return list(typing.get_args(union))


def may_be_none(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)
def test_a_field_that_may_be_none_defaults_to_none(cls: type[BaseModel]) -> None:
    # Stored events leave None out: a required field that may be None would not read back.
    required = [
        name
        for name, field in cls.model_fields.items()
        if field.is_required() and may_be_none(field.annotation)
    ]
    assert required == []


def test_greenlights_own_question_reads_back() -> None:
    asked = HumanQuestion(request_id="th_x.r1", question="The agent needs help. How?")
    assert from_json(to_json(asked)) == asked
