"""How much input may be, and JSON read strictly, so what is accepted can be read back
(invariant 11). Pure.

Python's ``json`` accepts lone surrogates (``"\\ud800"``), ``NaN`` and ``1e400``, and
nests as deep as the stack allows (then raises ``RecursionError``). None of those survive
the trip to Redis and back: a lone surrogate cannot be written as UTF-8, ``NaN`` hashes
differently once read back, and a stored event nested ~200 deep is past the JSON
reader's recursion limit, so every later read of its thread failed. So every JSON that
comes from outside (API bodies, and what people type: edited arguments and typed answers
in the inbox, Slack's modals, email replies) is read by ``from_json`` and bounded here.
"""

from __future__ import annotations

import math
from typing import Any

import pydantic_core

from bot.domain.errors import InvalidInputError

MAX_DEPTH = 32
"""The deepest nesting of objects and arrays a value may have (the value itself is 1).

Stored events wrap a body's free-form parts (``metadata``, ``edited_args``) a few levels
deeper; the reader refuses past 200, so this leaves ample room."""
MAX_JSON = 64_000
"""The largest arguments, schema or metadata, in bytes of JSON: what cards and emails show."""
MAX_TEXT = 20_000
"""The longest text a person sends, in characters: a message, a rejection's reason, an
answer (typed answers too, as the JSON given)."""


def from_json(raw: str | bytes, what: str = "the JSON") -> Any:
    """Parse JSON, refusing what could not be stored and read back.

    Args:
        what: names the input in the message (``the body``, ``the answer``); empty for
            none (an error shown beside its field).

    Raises:
        ValueError: saying what is wrong: not UTF-8, a lone surrogate, not JSON (``NaN``
            included), a number out of range, or nested deeper than ``MAX_DEPTH``.
    """
    if isinstance(raw, str):
        if not _is_unicode(raw):
            raise ValueError(_said(what, "not valid UTF-8 (a lone surrogate)"))
        data = raw.encode()
    else:
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(
                _said(what, f"not valid UTF-8 (bad byte at offset {exc.start})")
            ) from None
        data = raw
    try:
        value = pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):  # the reader stops at 200 levels
            raise ValueError(_said(what, f"nested deeper than {MAX_DEPTH} levels")) from None
        raise ValueError(_said(what, f"not valid JSON ({exc})")) from None
    problem = why_unstorable(value, what)
    if problem is not None:
        raise ValueError(problem)
    return value


def why_unstorable(value: Any, what: str = "the JSON") -> str | None:
    """Why a JSON value cannot be accepted (too deep, a number too large or ``NaN``, a
    lone surrogate), or None.

    Iterative, so a hostile value cannot exhaust the stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return _said(what, f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return _said(what, "a number too large to store (or not a number)")
        elif isinstance(item, str) and not _is_unicode(item):
            return _said(what, "not valid UTF-8 (a lone surrogate)")
    return None


def check_text(text: str, what: str) -> None:
    """Raise unless ``text`` is at most ``MAX_TEXT`` characters and can be stored.

    Raises:
        InvalidInputError: naming ``what`` and the limit.
    """
    if len(text) > MAX_TEXT:
        raise InvalidInputError(f"{what} is longer than {MAX_TEXT} characters", limit=MAX_TEXT)
    if not _is_unicode(text):
        raise InvalidInputError(_said(what, "not valid UTF-8 (a lone surrogate)"))


def _said(what: str, problem: str) -> str:
    return f"{what}: {problem}" if what else problem


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
