"""While an agent works on a Slack conversation, its thread shows it: once, then replaced.

A worker delivers what was recorded before it steps a thread, so the message,
answer or decision that sets the agent to work reaches here first. It starts
the status: Slack's assistant thread status (``assistant.threads.setStatus``)
when the app is an assistant (``SLACK_ASSISTANT``) and the conversation is a
DM, else one "Working…" message in the thread. The agent's answer takes that
message's place (``chat.update``) and ends the status; when the agent stops
working otherwise (it asks for approval or a human, is paused, cancelled or
fails) the message is deleted, or the status cleared, once what it posted is
there. One status at a time per thread, kept in the thread's Slack state
(``working``).
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.reducer import Status, ThreadState
from bot.engine.ports import StateStore
from channels.slack.payloads import is_direct

log = logging.getLogger(__name__)

FIELD = "working"
"""``message <channel> <thread_ts> <ts>`` or ``status <channel> <thread_ts> -``; "" when none."""
TEXT = ":hourglass_flowing_sand: Working…"
STATUS = "is working…"
_GONE = frozenset({"message_not_found", "channel_not_found", "is_archived", "cant_update_message"})


class Working:
    """Starts, replaces and clears the "agent at work" status of Slack threads.

    Args:
        client: the Web API client.
        state: the Slack channel's state (the status of each thread).
        assistant: the app is a Slack assistant: DMs show the assistant thread status.
    """

    def __init__(self, client: AsyncWebClient, state: StateStore, *, assistant: bool) -> None:
        self.client = client
        self.state = state
        self.assistant = assistant

    async def start(self, thread: ThreadState, channel: str, thread_ts: str) -> None:
        """Show that the agent works on ``thread`` (nothing when a status is already shown)."""
        if thread.status is not Status.RUNNING or await self.state.get(thread.id, FIELD):
            return
        if self.assistant and is_direct(channel, None):
            try:
                await self.client.assistant_threads_setStatus(
                    channel_id=channel, thread_ts=thread_ts, status=STATUS
                )
            except SlackApiError as exc:
                log.info("slack: no assistant status in %s: %s", channel, exc.response.get("error"))
            else:
                await self.state.put(thread.id, FIELD, f"status {channel} {thread_ts} -")
                return
        answer = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=TEXT)
        await self.state.put(thread.id, FIELD, f"message {channel} {thread_ts} {answer['ts']}")
        log.info("thread %s: slack shows it working", thread.id)

    async def take(self, thread_id: str, channel: str, thread_ts: str | None) -> str | None:
        """A post in (``channel``, ``thread_ts``) ends the status: the ts of the message it
        replaces, if any. Call ``taken`` once the message was replaced."""
        kind, where, root, ts = await self._shown(thread_id)
        if (where, root) != (channel, thread_ts):
            return None
        if kind == "status":
            await self.clear(thread_id)
            return None
        return ts

    async def taken(self, thread_id: str) -> None:
        """The status message was replaced by a post."""
        await self.state.put(thread_id, FIELD, "")

    async def clear(self, thread_id: str) -> None:
        """End a status no post replaced: delete the message, or clear the assistant status."""
        kind, channel, root, ts = await self._shown(thread_id)
        try:
            if kind == "status":
                await self.client.assistant_threads_setStatus(
                    channel_id=channel, thread_ts=root, status=""
                )
            elif kind == "message":
                await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as exc:
            if exc.response.get("error") not in _GONE:
                raise  # retried by the outbox
        if kind:
            await self.state.put(thread_id, FIELD, "")
            log.info("thread %s: slack no longer shows it working", thread_id)

    async def settle(self, thread: ThreadState) -> None:
        """Clear the status of a thread whose agent no longer works (it waits, or stopped)."""
        if thread.status is not Status.RUNNING:
            await self.clear(thread.id)

    async def _shown(self, thread_id: str) -> tuple[str, str, str, str]:
        found = (await self.state.get(thread_id, FIELD) or "").split(" ")
        return (found[0], found[1], found[2], found[3]) if len(found) == 4 else ("", "", "", "")
