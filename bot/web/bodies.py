"""JSON request bodies read strictly, so whatever the API accepts can be stored and read back.

FastAPI reads bodies with Python's ``json``, which accepts what cannot be stored and
read back (invariant 11). So API bodies are read by ``bot.domain.limits.from_json``, the
one bounded reader that also reads the JSON people type, and refused here, at ingress.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from bot.domain.limits import from_json


def to_value(raw: bytes) -> Any:
    """Parse a JSON body, refusing what could not be stored and read back.

    Raises:
        HTTPException: 400, naming what is wrong (``bot.domain.limits.from_json``).
    """
    try:
        return from_json(raw, "the body")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


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
