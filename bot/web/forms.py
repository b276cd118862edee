"""HTML forms from JSON Schemas, and their posted values back: one generator and one parser
for edited arguments and typed answers.

A schema becomes a list of ``Field``: text, number, integer, boolean, one choice
(``enum``), several choices (an array of ``enum``), a date (``format: date``), and objects
of these (a fieldset). Anything else is a JSON text area, so no schema is refused. Posted
values are named ``<prefix><path>`` (``arg.service``, ``arg.window.start``). Parsing
returns the value and, per field, what is wrong with it: what cannot be read (``"x"`` for
a number) and what the schema refuses (``bot.domain.validate.field_errors``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.domain.validate import field_errors

JSON = dict[str, Any]
_MISSING = object()


@dataclass
class Field:
    """One input (or, for ``kind == "object"``, a fieldset of them)."""

    name: str
    """The posted name: the prefix and the path, dotted."""
    path: str
    """Where in the value, as validation errors name it (``/window/start``)."""
    label: str
    kind: str
    """``text``, ``textarea``, ``number``, ``integer``, ``boolean``, ``choice``, ``choices``,
    ``date``, ``json`` or ``object``."""
    required: bool = False
    help: str | None = None
    choices: list[str] = field(default_factory=list)
    value: Any = None
    """What the input shows: a string, a list of strings (``choices``) or a bool."""
    error: str | None = None
    children: list[Field] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")


def to_fields(
    schema: JSON,
    value: Any = None,
    errors: Mapping[str, str] | None = None,
    *,
    prefix: str = "v",
    label: str = "Answer",
) -> list[Field]:
    """The fields of a form for ``schema``, filled with ``value`` and ``errors`` by path."""
    builder = _Builder(schema, errors or {})
    root = _resolve(schema, schema)
    if _kind(schema, root) == "object":
        return builder.children(root, value, prefix, "")
    return [builder.field(root, value, prefix, "", label, required=True)]


def from_form(
    schema: JSON, form: Mapping[str, Sequence[str]], *, prefix: str = "v"
) -> tuple[Any, dict[str, str]]:
    """The value a posted form holds, and what is wrong with it by path (empty: valid)."""
    reader = _Reader(schema, form)
    root = _resolve(schema, schema)
    value = reader.read(root, prefix, "")
    if value is _MISSING:
        value = None
    if reader.errors:
        return value, reader.errors
    return value, field_errors(schema, value)


class _Builder:
    def __init__(self, top: JSON, errors: Mapping[str, str]) -> None:
        self.top = top
        self.errors = errors

    def children(self, node: JSON, value: Any, prefix: str, path: str) -> list[Field]:
        given = value if isinstance(value, dict) else {}
        required = set(node.get("required", []))
        out = []
        for name, raw in node.get("properties", {}).items():
            sub = _resolve(self.top, raw)
            label = sub.get("title") or name
            here = f"{prefix}.{name}", f"{path}/{name}"
            out.append(self.field(sub, given.get(name), *here, label, required=name in required))
        return out

    def field(
        self, node: JSON, value: Any, name: str, path: str, label: str, *, required: bool
    ) -> Field:
        kind = _kind(self.top, node)
        f = Field(
            name=name,
            path=path or "/",
            label=label,
            kind=kind,
            required=required,
            help=node.get("description"),
            error=self.errors.get(path or "/"),
        )
        if kind == "object":
            f.children = self.children(node, value, name, path)
        elif kind == "choice":
            f.choices = [str(c) for c in node["enum"]]
            f.value = "" if value is None else str(value)
        elif kind == "choices":
            f.choices = [str(c) for c in _resolve(self.top, node["items"])["enum"]]
            f.value = [str(v) for v in value] if isinstance(value, list) else []
        elif kind == "boolean":
            f.value = bool(value)
        elif kind == "json":
            f.value = "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)
        else:
            f.value = "" if value is None else str(value)
            if kind == "text" and len(f.value) > 80:
                f.kind = "textarea"
        return f


class _Reader:
    def __init__(self, top: JSON, form: Mapping[str, Sequence[str]]) -> None:
        self.top = top
        self.form = form
        self.errors: dict[str, str] = {}

    def read(self, node: JSON, name: str, path: str) -> Any:
        kind = _kind(self.top, node)
        if kind == "object":
            return self.read_object(node, name, path)
        posted = list(self.form.get(name, []))
        if kind == "choices":
            return posted
        if kind == "boolean":
            return bool(posted) and posted[-1] in {"on", "true", "yes"}
        raw = posted[-1].strip() if posted else ""
        if raw == "":
            # An empty input means "not given" (the schema says if it must be); only a whole
            # answer that is one text is the empty text.
            return "" if kind == "text" and not path else _MISSING
        return self.parse(kind, raw, path or "/")

    def read_object(self, node: JSON, prefix: str, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, raw in node.get("properties", {}).items():
            got = self.read(_resolve(self.top, raw), f"{prefix}.{name}", f"{path}/{name}")
            if got is not _MISSING:
                out[name] = got
        return out

    def parse(self, kind: str, raw: str, where: str) -> Any:
        if kind in {"number", "integer"}:
            try:
                number = float(raw)
            except ValueError:
                self.errors[where] = f"{raw!r} is not a number"
                return _MISSING
            if kind == "integer" and not number.is_integer():
                self.errors[where] = f"{raw!r} is not a whole number"
                return _MISSING
            whole = kind == "integer" or (number.is_integer() and "." not in raw)
            return int(number) if whole else number
        if kind == "json":
            try:
                return json.loads(raw)
            except ValueError as exc:
                self.errors[where] = f"not valid JSON: {exc}"
                return _MISSING
        return raw


def _kind(top: JSON, node: JSON) -> str:
    node = _resolve(top, node)
    if "enum" in node:
        return "choice"
    kind = node.get("type")
    if kind == "array":
        items = _resolve(top, node.get("items", {}))
        return "choices" if "enum" in items else "json"
    if kind == "string":
        return "date" if node.get("format") == "date" else "text"
    if kind in ("number", "integer", "boolean", "object"):
        return "object" if kind == "object" and "properties" in node else str(kind)
    return "json"


def _resolve(top: JSON, node: JSON) -> JSON:
    """``node`` with a local ``$ref`` followed and ``anyOf [X, null]`` (pydantic's
    ``Optional``) read as X."""
    for _ in range(16):  # bounded: a schema may refer to itself
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = top
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = node.get("anyOf")
        if isinstance(options, list):
            real = [o for o in options if o.get("type") != "null"]
            if len(real) == 1:
                node = {**real[0], **{k: v for k, v in node.items() if k != "anyOf"}}
                continue
        break
    return node
