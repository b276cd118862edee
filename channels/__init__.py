"""Channel adapters: each turns inbound traffic into events and renders outbound prompts.

``build_channels`` picks the ones whose settings are present. Each adapter
implements ``bot.engine.ports.Channel`` and is built as ``Adapter(settings, ports)``,
with the ``ChannelPorts`` of its name: all it may use of the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.engine.ports import Channel, ChannelPorts
from bot.settings import Settings

log = logging.getLogger(__name__)


def build_channels(settings: Settings, ports: Callable[[str], ChannelPorts]) -> list[Channel]:
    """The channels this deployment has configured; the webhook channel is always on."""
    from channels.webhook import WebhookChannel

    found: list[Channel] = [WebhookChannel(settings, ports("webhook"))]
    if settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token):
        from channels.slack import SlackChannel

        found.append(SlackChannel(settings, ports("slack")))
    else:
        log.info("Slack is not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET): channel off")
    if settings.smtp_host and settings.email_from:
        from channels.email import EmailChannel

        found.append(EmailChannel(settings, ports("email")))
    else:
        log.info("email is not configured (SMTP_HOST, EMAIL_FROM): channel off")
    return found
