"""Channel adapters: each turns inbound traffic into events and renders outbound prompts.

``build_channels`` picks the ones whose settings are present. Each adapter
implements ``bot.engine.outbox.Channel`` and is built as ``Adapter(settings, runtime)``.
"""

from __future__ import annotations

import logging

from bot.engine.outbox import Channel
from bot.runtime import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)


def build_channels(settings: Settings, runtime: Runtime) -> list[Channel]:
    """The channels this deployment has configured; the webhook channel is always on."""
    from channels.webhook import WebhookChannel

    found: list[Channel] = [WebhookChannel(settings, runtime)]
    if settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token):
        from channels.slack import SlackChannel

        found.append(SlackChannel(settings, runtime))
    else:
        log.info("Slack is not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET): channel off")
    if settings.smtp_host and settings.email_from:
        from channels.email import EmailChannel

        found.append(EmailChannel(settings, runtime))
    else:
        log.info("email is not configured (SMTP_HOST, EMAIL_FROM): channel off")
    return found
