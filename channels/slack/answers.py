"""The typed-answer modal: a question's answer schema as one input per field. Pure.

The form is ``bot.domain.forms``' (leniently: a question asked through the API may carry
any JSON Schema; what the subset cannot show is typed as JSON). Inputs are numbered in
form order (``f0``, ``f1``…), so a submission is read back against the same form, rebuilt
from the question; ``private_metadata`` carries only the request id. What people fill in
becomes the JSON value; the decision path validates it against the whole schema, and its
errors are placed on their inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date
from typing import Any

from bot.domain.events import HumanQuestion
from bot.domain.forms import Field, Item, Kind, Section, to_form
from bot.domain.forms import to_value as to_answer_value
from bot.domain.limits import from_json
from bot.domain.reducer import Request
from bot.domain.text import cut, to_sentence
from channels.slack.blocks import Block, cut_escaped
from channels.slack.payloads import to_value
from channels.slack.views import INPUT_MAX

ANSWER_VIEW = "gl_answer_form"
ACTION = "value"
WHOLE = "f0"
"""The one input of a form too large for a modal: the whole answer as JSON."""
MODAL_BLOCKS_MAX = 100
LABEL_MAX = 2000
ERROR_MAX = 150
"""Slack shows at most this much of an input's error."""


def answer_form(asked: HumanQuestion) -> list[Item]:
    """The form a question's modal shows, and its submission is read against."""
    form = to_form(asked.answer_schema or {}, strict=False)
    if len(form) + 1 > MODAL_BLOCKS_MAX:
        return [Field((), "Answer", Kind.JSON)]
    return form


def answer_modal(req: Request, asked: HumanQuestion) -> Block:
    """The question, then a section per nested object and an input per field."""
    text = f"*{cut_escaped(asked.question, 1000)}*"
    if asked.context:
        text += "\n" + cut_escaped(asked.context, 1500)
    blocks: list[Block] = [_mrkdwn_section(text)]
    fields = 0
    for item in answer_form(asked):
        if isinstance(item, Section):
            heading = f"*{cut_escaped(item.label, 200)}*"
            if item.description:
                heading += "\n" + cut_escaped(item.description, 1000)
            blocks.append(_mrkdwn_section(heading))
        else:
            blocks.append(_input(f"f{fields}", item))
            fields += 1
    return {
        "type": "modal",
        "callback_id": ANSWER_VIEW,
        "private_metadata": to_value(r=req.id),
        "title": _plain("Answer"),
        "submit": _plain("Send"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def from_answer(values: Mapping[str, Any], form: list[Item]) -> tuple[Any, dict[str, str]]:
    """The answer a submission gives, or the errors to show (by block id) instead."""
    given: dict[tuple[str, ...], Any] = {}
    errors: dict[str, str] = {}
    for block_id, field in _inputs(form).items():
        state = (values.get(block_id) or {}).get(ACTION) or {}
        try:
            value = _read(field, state)
        except ValueError as exc:
            errors[block_id] = cut(str(exc), ERROR_MAX)
            continue
        if value is None and field.required:
            errors[block_id] = "Please fill this in."
        given[field.path] = value
    if errors:
        return None, errors
    return to_answer_value(form, given), {}


def to_answer_errors(errors: list[dict[str, Any]], form: list[Item]) -> dict[str, str]:
    """Schema errors (``{"field": "a.b", "error": …}``) placed on the inputs they concern:
    the field at that path, or the nearest one around it, else the first input."""
    inputs = _inputs(form)
    by_path = {f.path: block for block, f in inputs.items()}
    first = next(iter(inputs), WHOLE)
    found: dict[str, list[str]] = {}
    for e in errors:
        field = str(e.get("field") or "")
        path = tuple(field.split(".")) if field else ()
        block = next(
            (by_path[path[:n]] for n in range(len(path), -1, -1) if path[:n] in by_path), None
        )
        detail = str(e.get("error"))
        if block is None:
            block, detail = first, f"{field or '(answer)'}: {detail}"
        found.setdefault(block, []).append(detail)
    return {block: cut("; ".join(details), ERROR_MAX) for block, details in found.items()}


def _inputs(form: list[Item]) -> dict[str, Field]:
    fields = [item for item in form if isinstance(item, Field)]
    return {f"f{i}": field for i, field in enumerate(fields)}


def _read(field: Field, state: Mapping[str, Any]) -> Any:
    """One input's value (None: left empty). Raises ValueError with what is wrong."""
    match field.kind:
        case Kind.BOOLEAN:
            picked = (state.get("selected_option") or {}).get("value")
            return None if picked is None else picked == "true"
        case Kind.CHOICE:
            picked = (state.get("selected_option") or {}).get("value")
            return None if picked is None else _choice(field, picked)
        case Kind.CHOICES:
            picked = [_choice(field, o.get("value")) for o in state.get("selected_options") or []]
            return picked if picked or field.required else None
        case Kind.DATE:
            return state.get("selected_date") or None
    text = state.get("value")
    if not isinstance(text, str) or not text.strip():
        return None
    match field.kind:
        case Kind.INTEGER:
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError("Enter a whole number.") from None
        case Kind.NUMBER:
            return _number(text.strip())
        case Kind.JSON:
            try:
                return from_json(text, "")
            except ValueError as exc:
                raise ValueError(to_sentence(str(exc))) from None
    return text


def _number(text: str) -> int | float:
    try:
        number = int(text)
    except ValueError:
        try:
            number_f = float(text)
        except ValueError:
            raise ValueError("Enter a number.") from None
        if not math.isfinite(number_f):
            raise ValueError("Enter a number.") from None
        return number_f
    return number


def _choice(field: Field, value: Any) -> str:
    try:
        return field.choices[int(value)]
    except (TypeError, ValueError, IndexError):
        raise ValueError("That option is no longer offered.") from None


def _input(block_id: str, field: Field) -> Block:
    block: Block = {
        "type": "input",
        "block_id": block_id,
        "optional": not field.required,
        "label": _plain(cut(field.label + (" (JSON)" if field.kind is Kind.JSON else ""), 150)),
        "element": {"action_id": ACTION, **_element(field)},
    }
    if field.description:
        block["hint"] = _plain(cut(field.description, LABEL_MAX))
    return block


def _element(field: Field) -> Block:
    default = field.default
    match field.kind:
        case Kind.NUMBER | Kind.INTEGER:
            element: Block = {
                "type": "number_input",
                "is_decimal_allowed": field.kind is Kind.NUMBER,
            }
            for key, bound in (("min_value", field.minimum), ("max_value", field.maximum)):
                if bound is not None:
                    element[key] = _shown_number(bound, field.kind)
            if isinstance(default, int | float) and not isinstance(default, bool):
                element["initial_value"] = _shown_number(default, field.kind)
            return element
        case Kind.BOOLEAN:
            yes, no = _option("Yes", "true"), _option("No", "false")
            element = {"type": "radio_buttons", "options": [yes, no]}
            if isinstance(default, bool):
                element["initial_option"] = yes if default else no
            return element
        case Kind.DATE:
            element = {"type": "datepicker", "placeholder": _plain("Pick a date")}
            if isinstance(default, str) and _is_date(default):
                element["initial_date"] = default
            return element
        case Kind.CHOICE | Kind.CHOICES:
            options = [_option(c, str(i)) for i, c in enumerate(field.choices)]
            several = field.kind is Kind.CHOICES
            element = {
                "type": "multi_static_select" if several else "static_select",
                "placeholder": _plain("Choose…"),
                "options": options,
            }
            chosen = default if isinstance(default, list) else [default]
            initial = [options[field.choices.index(c)] for c in chosen if c in field.choices]
            if several and initial:
                element["initial_options"] = initial
            elif initial:
                element["initial_option"] = initial[0]
            if several and field.max_items:
                element["max_selected_items"] = field.max_items
            return element
    element = {
        "type": "plain_text_input",
        "max_length": min(field.max_length or INPUT_MAX, INPUT_MAX),
    }
    if field.kind is Kind.JSON:
        element["multiline"] = True
        shown = json.dumps(default, ensure_ascii=False) if default is not None else ""
    else:
        element["multiline"] = (field.max_length or INPUT_MAX) > 150
        shown = default if isinstance(default, str) else ""
    if shown and len(shown) <= element["max_length"]:
        element["initial_value"] = shown
    return element


def _shown_number(value: float, kind: Kind) -> str:
    return str(int(value)) if kind is Kind.INTEGER or float(value).is_integer() else str(value)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _option(text: str, value: str) -> Block:
    return {"text": _plain(text), "value": value}


def _mrkdwn_section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, 3000)}}


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}
