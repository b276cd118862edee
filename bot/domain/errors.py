"""One base error with three families: control flow, configuration, runtime."""

from __future__ import annotations

from typing import Any


class GreenlightError(Exception):
    """Base of every error Greenlight raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


# --- control flow: the request was understood and refused ---------------------------------


class NotFoundError(GreenlightError):
    status, code = 404, "not_found"


class ConflictError(GreenlightError):
    """The thing changed under the caller: a request already decided, a stale version."""

    status, code = 409, "conflict"


class ForbiddenError(GreenlightError):
    """The actor may not do this (not an approver, self-approval)."""

    status, code = 403, "forbidden"


class InvalidInputError(GreenlightError):
    """Input failed validation (edited arguments against a tool's schema)."""

    status, code = 422, "invalid_input"


class UnauthorizedError(GreenlightError):
    status, code = 401, "unauthorized"


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
