"""Who asks for approval, as the channels know them when the request is opened.

A person may speak while their channel cannot say who they are: Slack's
``users.info`` failed or was slow, so a Slack user is known by their id alone,
without the email address that tells them apart from the people of other channels
(``bot.domain.policy.is_unsure``). Before such a person's request is recorded, the
channels that keep a directory (``Directory``) are asked again; what they still
cannot say is left open, and the self-approval rule then fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.domain.events import Actor
from bot.domain.policy import is_unaddressed, to_person
from bot.engine.ports import Directory

log = logging.getLogger(__name__)


async def identified(actor: Actor, directories: Sequence[Directory]) -> Actor:
    """``actor`` with the address a directory knows them by now, when they were known
    without one (``policy.is_unaddressed``); as given otherwise, or when none can say."""
    if not is_unaddressed(to_person(actor)):
        return actor
    for directory in directories:
        found = await directory.identify(actor)
        if found.email:
            log.info("%s:%s: their email address is known now", actor.channel, actor.id)
            return found
    log.warning(
        "%s:%s asks without a known email address: only people known in %s can approve",
        actor.channel,
        actor.id,
        actor.channel,
    )
    return actor
