"""The Slack channel: chat with agents, approve with buttons, answer in threads.

``payloads``, ``blocks`` and ``views`` are pure translators; ``people`` resolves
identities; ``listeners`` (messages, ``/greenlight``) and ``clicks`` (buttons,
modals) are the Bolt app's inbound side; ``outbound`` posts and updates
messages; ``channel`` wires them into a ``bot.engine.outbox.Channel``.
"""

from channels.slack.channel import SlackChannel

__all__ = ["SlackChannel"]
