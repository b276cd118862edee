"""A typed answer as a form: the JSON Schema subset people can fill in, one field each. Pure.

A question's ``answer_schema`` is shown as a form (a Slack modal, the web inbox) whose
fields are flattened from the schema; what people fill in is put back together into
the JSON value, which ``bot.domain.validate`` checks against the whole schema.

The supported subset (what a hosted agent's ``ask_human`` may use):

- ``{"type": "string"}`` with ``minLength``, ``maxLength``, ``pattern``: text;
- ``{"type": "string", "format": "date"}``: a date, ``YYYY-MM-DD``;
- ``{"type": "number"}`` or ``{"type": "integer"}`` with ``minimum``, ``maximum``,
  ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``;
- ``{"type": "boolean"}``: yes or no;
- ``{"enum": [...]}`` of strings (``"type": "string"`` optional): one choice;
- ``{"type": "array", "items": {"enum": [...]}}`` with ``minItems``, ``maxItems``,
  ``uniqueItems``: several choices;
- ``{"type": "object", "properties": {...}}`` with ``required`` and
  ``additionalProperties``: objects of these, nested up to ``MAX_NESTING`` levels;
- everywhere ``title``, ``description``, ``default``, ``examples``, ``$comment``; at the
  root ``$schema`` (draft 2020-12 only).

Anything else (``$ref``, ``oneOf``, a list of types, an array of free text, ...) is
refused by ``to_form(strict=True)``; leniently (questions asked through the API, which
accept any JSON Schema) it becomes a field whose value is typed as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.domain.errors import InvalidInputError

MAX_FIELDS = 40
"""The most inputs one form shows (Slack's modals hold 100 blocks, and people tire)."""
MAX_CHOICES = 100
"""The most options of one choice (Slack's selects hold 100)."""
MAX_CHOICE_LENGTH = 75
"""The longest option (what Slack shows of an option's text)."""
MAX_NESTING = 4
"""How deep objects may nest."""
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_NOTES = frozenset({"title", "description", "default", "examples", "$comment"})
_NUMBER = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_ALLOWED = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": _NUMBER,
    "integer": _NUMBER,
    "boolean": frozenset(),
    "enum": frozenset({"enum"}),
    "array": frozenset({"items", "minItems", "maxItems", "uniqueItems"}),
    "object": frozenset({"properties", "required", "additionalProperties"}),
}


class Kind(StrEnum):
    """What one field takes, and so which input shows it."""

    TEXT = "text"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATE = "date"
    CHOICE = "choice"
    CHOICES = "choices"
    JSON = "json"
    """Outside the subset (lenient forms only): the value typed as JSON."""


@dataclass(frozen=True)
class Field:
    """One input of a form.

    Attributes:
        path: where its value goes in the answer (``()``: the answer itself).
        label: what people read: the schema's ``title``, else the property's name.
        kind: what it takes.
        required: it must be filled in: the schema requires it, and every object around it.
        description: the schema's ``description``, shown as a hint.
        choices: the options of a choice (the enum, in order).
        default: the schema's ``default``, shown filled in.
        minimum: the smallest number allowed, when the schema says.
        maximum: the largest number allowed, when the schema says.
        max_length: the longest text allowed, when the schema says.
        max_items: the most choices allowed, when the schema says.
    """

    path: tuple[str, ...]
    label: str
    kind: Kind
    required: bool = True
    description: str | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    max_items: int | None = None


@dataclass(frozen=True)
class Section:
    """The heading of a nested object: the fields after it, up to the next, are its."""

    path: tuple[str, ...]
    label: str
    description: str | None = None


Item = Field | Section


class UnsupportedSchemaError(InvalidInputError):
    """The schema is outside the subset a form can show."""


def to_form(schema: Mapping[str, Any], *, strict: bool = True) -> list[Item]:
    """The form of ``schema``: sections and fields, in the schema's order.

    Args:
        strict: refuse what is outside the subset; else show it as a JSON field (and
            the whole answer as one JSON field when the form would be too large).

    Raises:
        UnsupportedSchemaError: (strict) the schema is outside the subset; the message
            says where and what is supported.
    """
    if strict and "$schema" in schema and schema["$schema"] != DRAFT:
        raise UnsupportedSchemaError(f"answer_schema must be draft 2020-12 ($schema {DRAFT})")
    items: list[Item] = []
    _walk({k: v for k, v in schema.items() if k != "$schema"}, (), True, items, strict)
    fields = [i for i in items if isinstance(i, Field)]
    if len(fields) > MAX_FIELDS:
        if strict:
            raise UnsupportedSchemaError(
                f"answer_schema has {len(fields)} fields; a form shows at most {MAX_FIELDS}"
            )
        return [Field((), _label(schema, "Answer"), Kind.JSON, description=_text(schema))]
    return items


def is_form(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema`` is within the subset."""
    try:
        to_form(schema)
    except UnsupportedSchemaError:
        return False
    return True


def to_value(form: list[Item], given: Mapping[tuple[str, ...], Any]) -> Any:
    """The answer from the values filled in, by field path; a field left empty (absent or
    None) is left out of its object. The root field's value is the answer itself."""
    root: dict[str, Any] = {}
    for item in form:
        if not isinstance(item, Field) or given.get(item.path) is None:
            continue
        if not item.path:
            return given[item.path]
        at = root
        for key in item.path[:-1]:
            at = at.setdefault(key, {})
        at[item.path[-1]] = given[item.path]
    return root


def _walk(
    schema: Any, path: tuple[str, ...], required: bool, out: list[Item], strict: bool
) -> None:
    where = "/" + "/".join(path)
    kind = _kind(schema, where)
    if isinstance(kind, Kind):
        out.append(_field(schema, path, kind, required))
        return
    if kind is not None:  # why it is unsupported
        if strict:
            raise UnsupportedSchemaError(f"answer_schema at {where}: {kind}. {_SUPPORTED}")
        out.append(Field(path, _label(schema, path), Kind.JSON, required, _text(schema)))
        return
    if len(path) >= MAX_NESTING:
        if strict:
            raise UnsupportedSchemaError(
                f"answer_schema at {where}: objects nest deeper than {MAX_NESTING} levels"
            )
        out.append(Field(path, _label(schema, path), Kind.JSON, required, _text(schema)))
        return
    if path:
        out.append(Section(path, _label(schema, path), _text(schema)))
    needed = set(schema.get("required") or ())
    for name, sub in schema["properties"].items():
        # A field must be filled in only when every object around it is required too.
        _walk(sub, (*path, name), required and name in needed, out, strict)


def _kind(schema: Any, where: str) -> Kind | str | None:
    """The field kind of ``schema``; None for an object of fields; else why not."""
    if not isinstance(schema, dict):
        return "a schema must be an object"
    shape = "enum" if "enum" in schema else schema.get("type")
    if shape is None:
        other = sorted(set(schema) - _NOTES)
        return f"{', '.join(other)} not supported" if other else "it names no type or enum"
    if not isinstance(shape, str) or shape not in _ALLOWED:
        return f"type {shape!r} is not supported"
    extra = sorted(set(schema) - _NOTES - {"type"} - _ALLOWED[shape])
    if extra:
        return f"{', '.join(extra)} not supported for {shape}"
    match shape:
        case "enum":
            return Kind.CHOICE if _is_options(schema, "enum") else _OPTIONS_ARE
        case "array":
            items = schema.get("items")
            if isinstance(items, dict) and "enum" in items and _kind(items, where) is Kind.CHOICE:
                return Kind.CHOICES
            return "an array must be several choices: items {'enum': [...]} of strings"
        case "object":
            props = schema.get("properties")
            if not isinstance(props, dict) or not props:
                return "an object needs properties"
            if not isinstance(schema.get("additionalProperties", False), bool):
                return "additionalProperties must be true or false"
            return None
        case "string":
            fmt = schema.get("format")
            if fmt not in (None, "date"):
                return f"format {fmt!r} is not supported (only 'date')"
            return Kind.DATE if fmt == "date" else Kind.TEXT
    return Kind(shape)


_OPTIONS_ARE = (
    f"enum must list 1 to {MAX_CHOICES} different strings of 1 to "
    f"{MAX_CHOICE_LENGTH} characters (and type, if any, 'string')"
)
_SUPPORTED = (
    "Supported: string (format date), number, integer, boolean, enum of strings (one "
    "choice), array of an enum (several choices), and objects of these."
)


def _is_options(schema: dict[str, Any], key: str) -> bool:
    values = schema.get(key)
    return (
        schema.get("type", "string") == "string"
        and isinstance(values, list)
        and 0 < len(values) <= MAX_CHOICES
        and len(set(map(str, values))) == len(values)
        and all(isinstance(v, str) and 0 < len(v) <= MAX_CHOICE_LENGTH for v in values)
    )


def _field(schema: dict[str, Any], path: tuple[str, ...], kind: Kind, required: bool) -> Field:
    choices = schema.get("enum") or (schema.get("items") or {}).get("enum") or ()
    return Field(
        path,
        _label(schema, path),
        kind,
        required,
        _text(schema),
        choices=tuple(choices),
        default=schema.get("default"),
        minimum=_number(schema.get("minimum")),
        maximum=_number(schema.get("maximum")),
        max_length=_whole(schema.get("maxLength")),
        max_items=_whole(schema.get("maxItems")),
    )


def _label(schema: Any, path: tuple[str, ...] | str) -> str:
    title = schema.get("title") if isinstance(schema, dict) else None
    if isinstance(title, str) and title.strip():
        return title.strip()
    if isinstance(path, str):
        return path
    return path[-1] if path else "Answer"


def _text(schema: Any) -> str | None:
    text = schema.get("description") if isinstance(schema, dict) else None
    return text.strip() or None if isinstance(text, str) else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
