"""Channel adapters: each turns inbound traffic into events and renders outbound prompts.

``build_channels`` picks the ones whose settings are present.
"""

from __future__ import annotations

import logging

from bot.outbox import Channel
from bot.runtime import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)


def build_channels(settings: Settings, runtime: Runtime) -> list[Channel]:
    """The channels this deployment has configured."""
    found: list[Channel] = []
    return found
