"""A ``/greenlight`` thread's opening post: "<@U1> asked the *deploy* agent: …".

The command is recorded first (``listeners``), before Slack has its answer, so a
command is never lost: a failure to record it is a 500, which Slack shows the
person. The opening post is delivered afterwards, like every other post, by a
worker as it hands the thread's first message to Slack, and the conversation
lives in that post's Slack thread: replies there reach the Greenlight thread
through the alias ``<channel>:<ts>`` and the ``root`` field. A post that fails is
retried by the outbox when trying again may work (``channels.slack.refusals``);
the person is told once, privately, through the command's ``response_url`` that it
is late. An answer that retrying cannot change (a channel the app may not post in,
the app's own setup, the message) cancels the thread at once and says so the same
way, as the command did when it posted before it was recorded.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.errors import ConflictError
from bot.domain.events import SYSTEM, UserMessage
from bot.domain.reducer import Status, ThreadState
from bot.domain.text import cut
from bot.domain.triage import TRIAGE
from bot.engine.ports import ChannelPorts
from channels.slack.blocks import who
from channels.slack.people import FAILED, escape
from channels.slack.refusals import INVITE, Refusal, error_of, to_refusal

log = logging.getLogger(__name__)

ROOT = "root"
"""State field: ``<channel> <ts>`` of the opening post; ``NEVER`` when there will be none."""
NEVER = "-"
RESPOND = "respond"
"""State field: the command's ``response_url`` (valid 30 minutes; never logged)."""
TOLD = "told-late"
"""State field: the person was told the opening post is late (told once)."""


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
        self.threads = runtime.threads

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
            refusal = to_refusal(exc)
            if refusal is not None:
                await self._refused(thread, channel, error_of(exc), refusal)
                return
            await self._late(thread, error_of(exc))
            raise
        except Exception as exc:
            await self._late(thread, type(exc).__name__)
            raise
        ts = str(posted["ts"])
        # A crash before the next write posts again: at-least-once, like every post.
        await self.state.link(f"{channel}:{ts}", thread.id)
        await self.state.put(thread.id, ROOT, f"{channel} {ts}")
        log.info("thread %s: slack posted the opening of /greenlight in %s", thread.id, channel)

    async def _refused(
        self, thread: ThreadState, channel: str, error: str, refusal: Refusal
    ) -> None:
        """Slack will never take the post: cancel the thread (the agent must not act on a
        conversation nobody sees) and tell the person privately why. Unless people acted
        on it already while the post was retried (a card in the approvals channel was
        decided, a tool ran): it goes on, and the person is told where it cannot be seen."""
        if refusal is Refusal.CHANNEL:
            log.info("thread %s: /greenlight cannot post in %s: %s", thread.id, channel, error)
        else:  # nothing the person can change: whoever runs Greenlight must look
            log.error(
                "thread %s: /greenlight cancelled: Slack refused its opening post in %s: %s (%s)",
                thread.id,
                channel,
                error,
                _FIX[refusal],
            )
        current = await self.threads.load(thread.id)
        if _acted_on(current):
            text = f"Slack refused my post ({error}): your request goes on, but not here."
            await respond(self.client, await self.state.get(thread.id, RESPOND), text)
            await self.state.put(thread.id, ROOT, NEVER)
            return
        try:
            await self.inbox.control(thread.id, "cancel", SYSTEM, reason=f"slack: {error}")
        except ConflictError:
            pass  # cancelled already (by an earlier attempt, which told the person)
        else:
            text = _refused_text(error, refusal)
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


_FIX = {
    Refusal.APP: "the app's token, scopes or installation: check SLACK_BOT_TOKEN",
    Refusal.MESSAGE: "Slack refused the message itself",
}
"""What an operator reading the log is to look at, by refusal (``CHANNEL`` is the person's)."""


def _acted_on(thread: ThreadState) -> bool:
    """Whether people acted on the thread (a request decided, answered or expired: what
    a gated tool runs after), or it is done. Cancelled then, a retried command would act
    again."""
    return thread.status is Status.DONE or any(not r.is_open for r in thread.requests.values())


def _refused_text(error: str, refusal: Refusal) -> str:
    """What the person is told when their command cannot work."""
    match refusal:
        case Refusal.CHANNEL if error in INVITE:
            return (
                f"I can't post here ({error}), so I cancelled your request. "
                "Invite me first: `/invite @Greenlight`, then try again."
            )
        case Refusal.CHANNEL:
            return (
                f"I can't post here ({error}), so I cancelled your request. "
                "Try `/greenlight` in a channel where I may post."
            )
        case Refusal.APP:
            return (
                f"I can't post in Slack ({error}), so I cancelled your request: my Slack app "
                "needs fixing by whoever runs Greenlight. Try again once it is fixed."
            )
        case _:
            return f"Slack refused my post ({error}), so I cancelled your request."
