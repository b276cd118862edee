"""What the client raises: one base, the human's "no" in its several forms, and HTTP failures."""

from __future__ import annotations

from typing import Any


class GreenlightError(Exception):
    """The base of everything the Greenlight client raises."""


class NotApproved(GreenlightError):
    """People did not let the call run (or answer the question): the reason says why.

    Attributes:
        request_id: the approval or question.
        reason: the approver's reason, ``expired`` or ``cancelled``.
    """

    def __init__(self, request_id: str, reason: str | None) -> None:
        self.request_id = request_id
        self.reason = reason
        super().__init__(f"{request_id}: {reason or 'no reason given'}")


class Rejected(NotApproved):
    """An approver rejected the call.

    Attributes:
        by: who rejected it, as ``channel:id`` (``slack:U123``, ``api:bob``).
    """

    def __init__(self, request_id: str, reason: str | None, by: list[str]) -> None:
        self.by = by
        super().__init__(request_id, reason)
        self.args = (f"{request_id} rejected by {', '.join(by) or 'nobody'}: {reason or '-'}",)


class Expired(NotApproved):
    """Nobody decided (or answered) before the request expired."""


class Cancelled(NotApproved):
    """The request's thread was cancelled before it was decided."""


class StillPending(GreenlightError):
    """The client's own timeout ran out while the request is still open on the server.

    Calling again with the same arguments (and key) waits on the same request.
    """

    def __init__(self, request_id: str, waited: float) -> None:
        self.request_id = request_id
        super().__init__(f"{request_id} is still open after {waited:g} s")


class RequestError(GreenlightError):
    """The server refused a call (4xx) or kept failing (5xx, unreachable).

    Attributes:
        status: the HTTP status, or None when the server could not be reached.
        detail: the server's explanation (its JSON ``detail``) or the transport error.
        code: the server's error code (its JSON ``error``: ``invalid_input``,
            ``too_large``, ...), if it gave one.
    """

    def __init__(self, status: int | None, detail: Any, code: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        super().__init__(f"{status or 'unreachable'}: {detail}")


class ConfigError(GreenlightError):
    """The client or a decorated function is set up wrongly; the message says how to fix it."""
