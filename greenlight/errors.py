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

    Calling again with the same arguments (and key) waits on the same request: for
    :meth:`~greenlight.Greenlight.request_approval`, under the same ``idempotency_key``,
    which is the random one it used if it was given none.

    Attributes:
        request_id: the open approval or question.
        idempotency_key: the key ``request_approval`` asked under; None for a question.
    """

    def __init__(self, request_id: str, waited: float, idempotency_key: str | None = None) -> None:
        self.request_id = request_id
        self.idempotency_key = idempotency_key
        super().__init__(f"{request_id} is still open after {waited:g} s")


class RequestError(GreenlightError):
    """The server refused a call (4xx) or kept failing (5xx, unreachable).

    A failure while waiting for people names the request (``request_id``), which stays
    on the server: calling again with the same arguments (and key) waits on it, as after
    :class:`StillPending`.

    Attributes:
        status: the HTTP status (of the last try, when 5xx were retried), or None when
            the server could not be reached.
        detail: the server's explanation (its JSON ``detail``) or the transport error.
        code: the server's error code (its JSON ``error``: ``invalid_input``,
            ``too_large``, ...), if it gave one.
        request_id: the approval or question made before the failure, if one was.
        idempotency_key: the key ``request_approval`` asked under (the random one it used
            if it was given none), when it failed after asking or could not tell whether
            it had; None otherwise.
    """

    def __init__(
        self,
        status: int | None,
        detail: Any,
        code: str | None = None,
        *,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.request_id = request_id
        self.idempotency_key = idempotency_key
        super().__init__(self._message())

    def _made(self, request_id: str | None, idempotency_key: str | None) -> RequestError:
        """This error, naming the request made before it (and the key it was made under)."""
        self.request_id = request_id or self.request_id
        self.idempotency_key = idempotency_key or self.idempotency_key
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        text = f"{self.status or 'unreachable'}: {self.detail}"
        key = f" (Idempotency-Key {self.idempotency_key})" if self.idempotency_key else ""
        if self.request_id:
            text += f"; request {self.request_id}{key} was made: the same call again waits on it"
        elif key:
            text += f"; the same call again{key} finds the request if the server made it"
        return text


class ConfigError(GreenlightError):
    """The client or a decorated function is set up wrongly; the message says how to fix it."""
