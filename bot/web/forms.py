"""HTML forms for JSON Schemas, and their posted values back: the web's side of the forms
``bot.domain.forms`` describes, for edited arguments and typed answers.

``bot.domain.forms.to_form`` lays a schema out as fields and sections (leniently: what
is outside its subset is a field typed as JSON). Here each becomes an HTML input named
``<prefix>.<path>`` (``arg.service``, ``ans.window.start``), and a posted form is read
back into the value: what cannot be read (``"x"`` for a number) and what the schema
refuses (``bot.domain.validate.field_errors``) are errors beside their inputs. A tool's
own schema (pydantic's ``$ref`` and ``anyOf [X, null]``) is inlined first.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.domain import forms
from bot.domain.forms import Kind, Section
from bot.domain.limits import from_json
from bot.domain.validate import field_errors

JSON = dict[str, Any]
MAX_INLINE = 8
"""How deep a schema's references are followed before the rest is left as JSON."""


@dataclass
class Input:
    """One input of an HTML form, or (``kind == "section"``) the heading of an object."""

    name: str
    """The posted name: the prefix and the path, dotted."""
    path: str
    """Where in the value, as validation errors name it (``/window/start``)."""
    label: str
    kind: str
    """A ``bot.domain.forms.Kind`` value, ``textarea`` for a long text, or ``section``."""
    required: bool = False
    help: str | None = None
    choices: list[str] = field(default_factory=list)
    value: Any = None
    """What the input shows: a string, a list of strings (``choices``) or a bool."""
    error: str | None = None
    depth: int = 0

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")


def to_inputs(
    schema: JSON, value: Any = None, errors: Mapping[str, str] | None = None, *, prefix: str
) -> list[Input]:
    """The inputs of a form for ``schema``, filled with ``value`` and ``errors`` by path."""
    errors = errors or {}
    out = []
    for item in forms.to_form(inline(schema), strict=False):
        name, where = _name(prefix, item.path), _where(item.path)
        if isinstance(item, Section):
            out.append(Input(name, where, item.label, "section", help=item.description))
            continue
        given = _at(value, item.path)
        if given is None and item.default is not None:
            given = item.default
        shown = _shown(item.kind, given)
        kind = item.kind.value
        if item.kind is Kind.TEXT and (len(shown) > 80 or "\n" in shown):
            kind = "textarea"
        out.append(
            Input(
                name,
                where,
                item.label,
                kind,
                required=item.required,
                help=item.description,
                choices=list(item.choices),
                value=shown,
                error=errors.get(where),
                depth=max(len(item.path) - 1, 0),
            )
        )
    return out


def from_posted(
    schema: JSON, posted: Mapping[str, Sequence[str]], *, prefix: str
) -> tuple[Any, dict[str, str]]:
    """The value a posted form holds, and what is wrong with it by path (empty: valid)."""
    form = forms.to_form(inline(schema), strict=False)
    given: dict[tuple[str, ...], Any] = {}
    errors: dict[str, str] = {}
    for item in form:
        if isinstance(item, Section):
            continue
        sent = list(posted.get(_name(prefix, item.path), []))
        try:
            given[item.path] = _read(item.kind, sent)
        except ValueError as exc:
            errors[_where(item.path)] = str(exc)
    value = forms.to_value(form, given)
    if value == {} and form and not form[0].path:
        value = None  # the whole answer left empty
    return value, errors or field_errors(schema, value)


def inline(schema: JSON) -> JSON:
    """``schema`` with its local ``$ref`` followed and ``anyOf [X, null]`` (pydantic's
    optional fields) read as X, so a tool's own schema lays out as plain fields."""
    inlined: JSON = _inline(schema, schema, 0)
    return inlined


def _inline(top: JSON, node: Any, depth: int) -> Any:
    if not isinstance(node, dict) or depth > MAX_INLINE:
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = top
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline(top, {**target, **rest}, depth + 1)
    options = node.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        if len(real) == 1 and isinstance(real[0], dict):
            rest = {k: v for k, v in node.items() if k not in {"anyOf", "default"}}
            return _inline(top, {**real[0], **rest}, depth + 1)
    out = {k: v for k, v in node.items() if k not in {"$defs", "definitions"}}
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: _inline(top, v, depth) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = _inline(top, node["items"], depth)
    return out


def _read(kind: Kind, sent: list[str]) -> Any:
    """One input's value, None when left empty; ValueError says what is wrong."""
    if kind is Kind.CHOICES:
        return sent
    if kind is Kind.BOOLEAN:
        return bool(sent) and sent[-1] in {"on", "true", "yes"}
    text = sent[-1].strip() if sent else ""
    if not text:
        return None
    if kind is Kind.INTEGER or kind is Kind.NUMBER:
        with contextlib.suppress(ValueError):
            # Exact however large: read as a float first, a whole number past 2**53 would
            # be approved as a neighbour of what was typed.
            return int(text)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a number")
        if kind is Kind.INTEGER and not number.is_integer():
            raise ValueError(f"{text!r} is not a whole number")
        whole = kind is Kind.INTEGER or (number.is_integer() and "." not in text)
        return int(number) if whole else number
    if kind is Kind.JSON:
        return from_json(text, "")  # its ValueError says what is wrong, beside the input
    return text


def _shown(kind: Kind, value: Any) -> Any:
    if kind is Kind.CHOICES:
        return [str(v) for v in value] if isinstance(value, list) else []
    if kind is Kind.BOOLEAN:
        return bool(value)
    if value is None:
        return ""
    if kind is Kind.JSON:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return str(value)


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _name(prefix: str, path: tuple[str, ...]) -> str:
    return ".".join((prefix, *path))


def _where(path: tuple[str, ...]) -> str:
    return "/" + "/".join(path)
