"""The one mapping of domain errors to HTTP statuses, and the JSON body that carries them.

The app's exception handlers answer with it; pages (the inbox) and channel routes
(Slack's interactivity, email's decide links) use it to answer a refusal the same way.
"""

from __future__ import annotations

from typing import Any

from bot.domain.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GreenlightError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnauthorizedError,
)

_STATUSES: dict[type[GreenlightError], int] = {
    UnauthorizedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    BadRequestError: 400,
    TooLargeError: 413,
    InvalidInputError: 422,
}
"""The one mapping of domain errors to HTTP statuses; anything else is a 500."""


def status_of(exc: GreenlightError) -> int:
    """The HTTP status that answers ``exc``: its nearest class in ``_STATUSES``, else 500."""
    for cls in type(exc).__mro__:
        if cls in _STATUSES:
            return _STATUSES[cls]
    return 500


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error answer: a stable ``error`` code and a ``detail`` for people."""
    return {"error": code, "detail": detail, **extra}
