"""The Greenlight client: human approval of an agent's calls, and answers, over HTTP.

    from greenlight import require_approval

    @require_approval(policy="deploys")
    def deploy(version: str, replicas: int = 3) -> None: ...

It talks to a Greenlight server (``GREENLIGHT_URL``, ``GREENLIGHT_TOKEN``) and imports
nothing of it, nor of any agent framework.
"""

from __future__ import annotations

from greenlight.calls import run
from greenlight.client import Approved, AsyncGreenlight, Greenlight
from greenlight.decorator import require_approval
from greenlight.errors import (
    Cancelled,
    ConfigError,
    Expired,
    GreenlightError,
    NotApproved,
    Rejected,
    RequestError,
    StillPending,
)

__all__ = [
    "Approved",
    "AsyncGreenlight",
    "Cancelled",
    "ConfigError",
    "Expired",
    "Greenlight",
    "GreenlightError",
    "NotApproved",
    "Rejected",
    "RequestError",
    "StillPending",
    "require_approval",
    "run",
]
