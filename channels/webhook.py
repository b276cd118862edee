"""Placeholder until the webhook channel lands: no routes, delivers nothing."""

from __future__ import annotations

from fastapi import APIRouter

from bot.events import Event
from bot.runtime import Runtime
from bot.settings import Settings
from bot.threads import ThreadState


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.router: APIRouter | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def deliver(self, thread: ThreadState, event: Event) -> None:
        return None
