"""What humans send back, checked against what was asked: edits against a JSON Schema,
answers against the question's format (yes/no, choices) or its schema.

Pure. A mismatch is an ``InvalidInputError`` naming where and why, in jsonschema's words.
Schemas are read by their ``$schema`` (draft 2020-12 when they name none); a ``$ref`` to
anything outside the schema (but the meta-schemas) is never fetched: such a schema is
refused when it is given (``check_schema``).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
from jsonschema import exceptions, validators
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing import Registry, Resource, Specification
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from bot.domain.errors import InvalidInputError, TooLargeToApproveError
from bot.domain.events import AnswerFormat, HumanQuestion
from bot.domain.forms import to_form
from bot.domain.limits import MAX_JSON, from_json, why_unstorable

YES = frozenset({"yes", "y", "true"})
NO = frozenset({"no", "n", "false"})

_NOTHING_FETCHED: Registry[Any] = Registry()
"""Every validator's registry: what a ``$ref`` may lead to beyond its schema (nothing; the
validator adds the meta-schemas). jsonschema's own default fetches any other URL over
HTTP, blocking and without a timeout: a caller's schema made the web process read its
network (a cloud's metadata service, say) and stalled every request meanwhile."""


def bounded(value: dict[str, Any], what: str) -> dict[str, Any]:
    """``value`` if its JSON is small and shallow enough to store and show
    (``bot.domain.limits``).

    Raises:
        ValueError: too deep, too large, or not storable (a pydantic validator's error).
    """
    storable(value, what)
    if json_size(value) > MAX_JSON:
        raise ValueError(f"{what} are over {MAX_JSON} bytes of JSON")
    return value


def storable(value: dict[str, Any], what: str) -> dict[str, Any]:
    """``value`` if it can be stored and read back, whatever its size (its depth, numbers
    and text: ``limits.why_unstorable``); else ValueError (for pydantic)."""
    problem = why_unstorable(value, what)
    if problem is not None:
        raise ValueError(problem)
    return value


def json_size(value: Any) -> int:
    """The bytes of ``value``'s JSON, as ``bounded`` counts them (non-ASCII escaped)."""
    return len(json.dumps(value, default=str))


def check_approvable(arguments: dict[str, Any]) -> None:
    """Raise :class:`TooLargeToApproveError` unless the arguments are small enough to be approved:
    ``MAX_JSON`` bytes of JSON, what a card or an email shows in full."""
    size = json_size(arguments)
    if size > MAX_JSON:
        raise TooLargeToApproveError(
            f"the arguments are too large to be approved: {size} bytes of JSON, over the "
            f"limit of {MAX_JSON}",
            size=size,
            limit=MAX_JSON,
        )


def check_answer_schema(schema: dict[str, Any]) -> None:
    """Raise unless ``schema`` can ask for a typed answer from a hosted agent: bounded, a
    valid JSON Schema, and within the subset a form shows (``bot.domain.forms``)."""
    try:
        bounded(schema, "answer_schema")
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    check_schema(schema, "answer_schema")
    to_form(schema, strict=True)


def check_schema(schema: dict[str, Any], what: str) -> None:
    """Raise unless ``schema`` is a valid JSON Schema; ``what`` names it in the message."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = _path(exc.absolute_path)
        raise InvalidInputError(
            f"{what} is not a valid JSON Schema at {where}: {exc.message}"
        ) from exc
    _check_refs(schema, what)


def _check_refs(schema: dict[str, Any], what: str) -> None:
    """Raise unless every ``$ref`` (and ``$dynamicRef``) of ``schema`` resolves, fetching
    nothing: within the schema, or to a meta-schema. Checked when the schema is given, so
    that values are never checked against one that cannot be resolved (by then, too late
    to refuse it: the request could never be answered)."""
    dialect = schema.get("$schema")
    spec: Specification[Any] = specification_with(
        dialect if isinstance(dialect, str) else "", default=DRAFT202012
    )
    root = spec.create_resource(schema)

    def walk(resource: Resource[Any], resolver: Any) -> None:
        node = resource.contents if isinstance(resource.contents, dict) else {}
        for ref in (node.get("$ref"), node.get("$dynamicRef")):
            if not isinstance(ref, str):
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable as exc:
                raise InvalidInputError(
                    f"{what}: $ref {ref!r} does not resolve ({type(exc).__name__}): a $ref may"
                    " point only within the schema or to a meta-schema; nothing is fetched"
                ) from None
        for sub in resource.subresources():
            walk(sub, resolver.in_subresource(sub))

    walk(root, META_SCHEMAS.resolver_with_root(root))


def _validator(schema: dict[str, Any]) -> Validator:
    """The validator of ``schema``'s dialect, fetching nothing (``_NOTHING_FETCHED``)."""
    return validators.validator_for(schema)(schema, registry=_NOTHING_FETCHED)


def check(schema: dict[str, Any], value: Any, what: str) -> None:
    """Raise unless ``value`` matches ``schema``; ``what`` begins the message."""
    validator = _validator(schema)
    found = list(validator.iter_errors(value))
    error = exceptions.best_match(found)
    if error is not None:
        where = _path(error.absolute_path)
        raise InvalidInputError(
            f"{what} at {where}: {error.message}",
            schema_path=_path(error.absolute_schema_path),
            # Every error, where it is (``a.b``, as ``Tool.validate`` names fields), for
            # forms that show each by its input.
            errors=[
                {"field": ".".join(str(p) for p in e.absolute_path), "error": e.message}
                for e in found
            ],
        )


def field_errors(schema: dict[str, Any], value: Any) -> dict[str, str]:
    """Every way ``value`` misses ``schema``, by where (``/a/b``; ``/`` for the whole), one
    message a place: for a form that shows each error beside its field."""
    validator = _validator(schema)
    found: dict[str, str] = {}
    for error in sorted(validator.iter_errors(value), key=exceptions.relevance):
        where = list(error.absolute_path)
        names: Any = error.validator_value
        if error.validator == "required" and isinstance(error.instance, dict):
            # "'x' is a required property" belongs beside x, not beside its object.
            where += [p for p in names if p not in error.instance][:1]
        found.setdefault(_path(where), error.message)
    return found


def to_answer(q: HumanQuestion, text: str) -> str:
    """The answer as recorded: a choice as the question spells it, a typed answer as compact
    JSON, a bare yes or no in lower case.

    Raises:
        InvalidInputError: not one of the choices, not yes or no, or not JSON matching
            the question's schema.
    """
    if q.answer_schema is not None:
        try:
            value = from_json(text, "the answer")
        except ValueError as exc:
            raise InvalidInputError(f"{exc}; answer with JSON matching the schema") from exc
        check(q.answer_schema, value, "the answer does not match the schema")
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if q.format is AnswerFormat.YES_NO:
        said = _yes_no(text)
        if said is None:
            raise InvalidInputError(f"{text.strip()!r} is not yes or no; answer yes or no")
        # A bare word is recorded as the word; more than that reaches the agent as written.
        bare = text.strip().strip(".!").lower() in YES | NO
        return ("yes" if said else "no") if bare else text
    if q.format is AnswerFormat.CHOICES and q.choices:
        for choice in q.choices:
            if text.strip().lower() == choice.lower():
                return choice
        raise InvalidInputError(f"{text!r} is not one of the choices: {', '.join(q.choices)}")
    return text


def answer_value(q: HumanQuestion, text: str) -> Any:
    """A recorded answer as a value: the JSON of a typed answer, True or False for yes/no,
    else the text."""
    if q.answer_schema is not None:
        try:
            # Not from_json: an answer recorded before answers were bounded reads back as
            # it did, unless it is past the reader's 200 levels (then too deep to answer
            # with: the text as recorded, instead of a 500 on every read).
            return pydantic_core.from_json(text, allow_inf_nan=False)
        except ValueError:
            return text
    if q.format is AnswerFormat.YES_NO:
        return _yes_no(text)
    return text


def _yes_no(text: str) -> bool | None:
    words = text.strip().lower().replace(",", " ").replace(".", " ").replace("!", " ").split()
    first = words[0] if words else ""
    return True if first in YES else False if first in NO else None


def _path(parts: Any) -> str:
    return "/" + "/".join(str(p) for p in parts)
