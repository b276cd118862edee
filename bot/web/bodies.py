"""JSON request bodies read strictly, so whatever the API accepts can be stored and read back.

Python's ``json`` (what FastAPI reads bodies with) accepts lone surrogates
(``"\\ud800"``), ``NaN`` and ``1e400``, and nests as deep as the stack allows.
None of those survive the trip to Redis and back: a lone surrogate cannot be
written as UTF-8, and a stored event nested ~200 deep is past the JSON reader's
recursion limit, so every later read of its thread failed (invariant 11). So
API bodies are parsed by pydantic-core's reader and bounded here, at ingress.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

MAX_DEPTH = 32
"""The deepest nesting of objects and arrays a body may have (the body itself is 1).

Stored events wrap a body's free-form parts (``metadata``, ``edited_args``) a
few levels deeper; the reader refuses past 200, so this leaves ample room."""

_TOO_DEEP = "the body nests deeper than {} levels"


def to_value(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON body, refusing what could not be stored and read back.

    Raises:
        HTTPException: 400, naming what is wrong: not JSON or not UTF-8, a lone
            surrogate, a number out of range, or nested deeper than ``max_depth``.
    """
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        raise HTTPException(
            400, f"the body is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from exc
    try:
        value = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):  # the reader stops at 200 levels
            raise HTTPException(400, _TOO_DEEP.format(max_depth)) from exc
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from exc
    problem = why_unstorable(value, max_depth)
    if problem is not None:
        raise HTTPException(400, problem)
    return value


def why_unstorable(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a parsed JSON value cannot be accepted (too deep, infinite), or None.

    Iterative, so a hostile value cannot exhaust the stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return _TOO_DEEP.format(max_depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            return "the body has a number too large to store"
    return None


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = to_value(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read by ``to_value`` instead of ``json.loads``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handle(_StrictRequest(request.scope, request.receive))

        return strict
