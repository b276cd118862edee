"""One base error with three families: control flow, configuration, runtime.

Errors name what went wrong; ``code`` is the API's error code. How an error
reaches a client (an HTTP status, a Slack note, an email) is the entry point's
business: only the web layer maps these classes to statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.domain.refusals import Refusal


class GreenlightError(Exception):
    """Base of every error Greenlight raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


# --- control flow: the request was understood and refused ---------------------------------


class RefusedError(GreenlightError):
    """The request was understood and refused; nothing changed. Channels catch this family.

    Attributes:
        refusal: when a decision rule refused (closed, not an approver, ...), which
            one and why, for a channel to word in its own way; else None.
    """

    code = "refused"

    def __init__(self, message: str, *, refusal: Refusal | None = None, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.refusal = refusal


class NotFoundError(RefusedError):
    """What the caller names does not exist (a thread, a request, a link)."""

    code = "not_found"


class ConflictError(RefusedError):
    """The thing changed under the caller: a request already decided, a stale version."""

    code = "conflict"


class ForbiddenError(RefusedError):
    """The actor may not do this (not an approver, self-approval)."""

    code = "forbidden"


class InvalidInputError(RefusedError):
    """Input failed validation (edited arguments against a tool's schema)."""

    code = "invalid_input"


class TooLargeError(InvalidInputError):
    """Input over a configured size (``MAX_BODY_BYTES``): the text an email carries."""

    code = "payload_too_large"


class TooLargeToApproveError(InvalidInputError):
    """Arguments well formed but too large to store and show in full, so nobody could
    approve them (a 422, unlike ``TooLargeError``'s 413: the body itself was accepted)."""

    code = "too_large"


class BadRequestError(InvalidInputError):
    """The request itself could not be read: not JSON, not UTF-8, nested too deep, garbled."""

    code = "bad_request"


class UnauthorizedError(RefusedError):
    """The caller did not prove who it is (a missing or wrong token, secret or signature)."""

    code = "unauthorized"


class VersionConflict(ConflictError):
    """A compare-and-append lost the race: re-read and try again."""

    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"thread {thread_id} is at version {actual}, not {expected}",
            thread_id=thread_id,
            expected=expected,
            actual=actual,
        )
        self.actual = actual


# --- configuration mistakes ----------------------------------------------------------------


class ConfigError(GreenlightError):
    """Settings or an agent definition are wrong; the message says how to fix it."""

    code = "config_error"


# --- runtime failures ----------------------------------------------------------------------


class StoreError(GreenlightError):
    """Redis answered with something we cannot read."""

    code = "store_error"


class ModelError(GreenlightError):
    """The model provider failed after retries, or answered without a tool call."""

    code = "model_error"


class DeliveryError(GreenlightError):
    """A channel could not deliver an outbound message; it will be retried."""

    code = "delivery_error"


class ContentionError(ConflictError):
    """A thread kept changing under a writer: every attempt lost the race."""
