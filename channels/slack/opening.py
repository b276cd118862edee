"""A ``/greenlight`` thread's opening post: "<@U1> asked the *deploy* agent: …".

The command is recorded first (``listeners``), before Slack has its answer, so a
command is never lost: a failure to record it is a 500, which Slack shows the
person. The opening post is delivered afterwards, like every other post, by a
worker as it hands the thread's first message to Slack, and the conversation
lives in that post's Slack thread: replies there reach the Greenlight thread
through the alias ``<channel>:<ts>`` and the ``root`` field. A post that fails is
retried by the outbox; the person is told once, privately, through the command's
``response_url`` that it is late. A channel Slack will never post in (the app is
not in it) cancels the thread and says so the same way.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.errors import ConflictError
from bot.domain.events import SYSTEM, UserMessage
from bot.domain.reducer import ThreadState
from bot.domain.text import cut
from bot.domain.triage import TRIAGE
from bot.engine.ports import ChannelPorts
from channels.slack.blocks import who
from channels.slack.people import FAILED, escape

log = logging.getLogger(__name__)

ROOT = "root"
"""State field: ``<channel> <ts>`` of the opening post; ``NEVER`` when there will be none."""
NEVER = "-"
RESPOND = "respond"
"""State field: the command's ``response_url`` (valid 30 minutes; never logged)."""
TOLD = "told-late"
"""State field: the person was told the opening post is late (told once)."""
REFUSED = frozenset(
    {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "no_permission"}
)
"""Answers to chat.postMessage that retrying cannot change: the app may not post there."""


def is_command(thread: ThreadState) -> bool:
    """Whether ``thread`` was started by ``/greenlight`` (its place is its opening post)."""
    origin = thread.origin
    return origin is not None and origin.channel == "slack" and bool(origin.metadata.get("command"))


async def respond(client: AsyncWebClient, url: str | None, text: str) -> None:
    """Answer a command privately through its ``response_url`` (works where the app cannot
    post); failing to is logged, without the URL."""
    if not url:
        return
    hook = AsyncWebhookClient(url, session=client.session)
    try:
        answer = await hook.send(text=text, response_type="ephemeral")
    except FAILED as exc:  # its type only: a message may carry the URL
        log.warning("slack: answering a command by its response_url failed: %s", type(exc).__name__)
        return
    if answer.status_code != 200:
        log.warning("slack: response_url answered %s: %s", answer.status_code, answer.body)


class Openings:
    """Posts each ``/greenlight`` thread's opening message, once.

    Args:
        client: the worker's Web API client (it waits out rate limits).
        runtime: the Slack channel's state (the post, the command's ``response_url``),
            and the inbox, to cancel a thread whose channel the app may not post in.
    """

    def __init__(self, client: AsyncWebClient, runtime: ChannelPorts) -> None:
        self.client = client
        self.state = runtime.state
        self.inbox = runtime.inbox

    async def open(self, thread: ThreadState, event: UserMessage) -> None:
        """Post the opening message of ``thread`` (the command's ``event``) unless posted.

        Raises:
            Exception: Slack failed; the outbox retries (the person was told it is late).
        """
        if await self.state.get(thread.id, ROOT) or thread.origin is None:
            return
        channel = str(thread.origin.metadata.get("channel") or "")
        whom = f" the *{thread.agent}* agent" if thread.agent != TRIAGE else ""
        text = f"{who(event.by)} asked{whom}: {escape(cut(event.text, 3000))}"
        try:
            posted = await self.client.chat_postMessage(
                channel=channel, text=text, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in REFUSED:
                await self._refused(thread, channel, error)
                return
            await self._late(thread, error)
            raise
        except Exception as exc:
            await self._late(thread, type(exc).__name__)
            raise
        ts = str(posted["ts"])
        # A crash before the next write posts again: at-least-once, like every post.
        await self.state.link(f"{channel}:{ts}", thread.id)
        await self.state.put(thread.id, ROOT, f"{channel} {ts}")
        log.info("thread %s: slack posted the opening of /greenlight in %s", thread.id, channel)

    async def _refused(self, thread: ThreadState, channel: str, error: str) -> None:
        """Slack will not post there: cancel the thread and tell the person privately."""
        log.info("thread %s: /greenlight cannot post in %s: %s", thread.id, channel, error)
        try:
            await self.inbox.control(thread.id, "cancel", SYSTEM, reason=f"slack: {error}")
        except ConflictError:
            pass  # cancelled already (by an earlier attempt, which told the person)
        else:
            text = f"I can't post here ({error}). Invite me first: `/invite @Greenlight`."
            await respond(self.client, await self.state.get(thread.id, RESPOND), text)
        await self.state.put(thread.id, ROOT, NEVER)

    async def _late(self, thread: ThreadState, error: str) -> None:
        """The post failed and will be retried: tell the person once, while the command's
        ``response_url`` still works."""
        log.warning("thread %s: the opening of /greenlight failed: %s", thread.id, error)
        if await self.state.get(thread.id, TOLD):
            return
        text = (
            f"Slack did not take my post just now ({error}). Your request is recorded; "
            "I'll keep trying, and the conversation starts here when it goes through."
        )
        await respond(self.client, await self.state.get(thread.id, RESPOND), text)
        await self.state.put(thread.id, TOLD, "1")
