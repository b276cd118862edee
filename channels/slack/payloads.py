"""Slack payloads in, plain values out: pure functions, no I/O.

``to_message`` decides which events are a person talking to the bot (and
drops bots, edits, deletions and every other subtype), ``is_self_event`` which
are the app's own; ``to_click`` and
``to_command`` read interactivity and slash-command payloads; button values
and modal metadata round-trip through ``to_value``/``from_value``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import InvalidInputError

# Subtypes that are still a person writing; every other subtype (edits, deletions,
# joins, bot messages, topic changes…) is ignored.
_SPOKEN_SUBTYPES = frozenset({"file_share", "thread_broadcast"})
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True)
class Message:
    """A person's message the bot should hear."""

    team: str
    """The workspace whose installation of the app heard it: the conversation's."""
    channel: str
    user: str
    text: str
    """The text with mentions of the bot taken out."""
    ts: str
    thread_ts: str | None
    mention: bool
    """True for an ``app_mention``: someone called the bot by name."""
    direct: bool
    """True in a direct message with the bot."""
    user_team: str
    """The writer's own workspace: ``event.user_team``, which in a Slack Connect channel
    may differ from ``event.team`` (the host's); Slack leaves it out for the app's own side."""

    @property
    def root(self) -> str:
        """The ts of the Slack thread's first message: the conversation's key."""
        return self.thread_ts or self.ts

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def conversation(self) -> str:
        return to_conversation(self.team, self.channel, self.root)

    @property
    def delivery(self) -> str:
        """Slack's retries and the ``message``/``app_mention`` pair of one post share it."""
        return f"slack:{self.channel}:{self.ts}"


@dataclass(frozen=True)
class Click:
    """A button pressed on one of our messages."""

    team: str
    user: str
    channel: str
    message_ts: str
    action_id: str
    value: str
    trigger_id: str
    user_team: str
    """The clicker's own workspace (``user.team_id``); ``team`` may be the host's."""

    @property
    def delivery(self) -> str:
        """One person pressing one button, as shown on one message: a second time is a replay.

        The value (request and arguments hash) is part of it, so approving again
        after the arguments were edited is a new decision, not a replay.
        """
        shown = hashlib.sha256(self.value.encode()).hexdigest()[:12]
        return f"slack:{self.action_id}:{self.channel}:{self.message_ts}:{self.user}:{shown}"


@dataclass(frozen=True)
class Command:
    """``/greenlight <agent> <text>``."""

    team: str
    channel: str
    user: str
    text: str
    trigger_id: str
    response_url: str = ""
    """Where to answer the command privately, for 30 minutes after it was sent."""

    @property
    def conversation(self) -> str:
        """The conversation key of the thread it starts. The thread is recorded before its
        opening post exists (``channels.slack.opening``), so the command's own
        ``trigger_id`` names it, not a post's ts."""
        return f"{self.team}:{self.channel}:command:{self.trigger_id}"

    @property
    def delivery(self) -> str:
        """Its inbound delivery key: one thread per command, however often it arrives."""
        return f"slack:command:{self.trigger_id}"


def to_conversation(team: str, channel: str, root_ts: str) -> str:
    """The conversation key of a Slack thread, from which its Greenlight thread derives."""
    return f"{team}:{channel}:{root_ts}"


def is_direct(channel: str, channel_type: str | None) -> bool:
    return channel_type == "im" or (channel_type is None and channel.startswith("D"))


def is_self_event(event: Mapping[str, Any], bot_user_id: str, bot_id: str) -> bool:
    """Whether an event is the app's own doing: by its bot user, or a message its bot posted
    (the rule of Bolt's ``IgnoringSelfEvents``)."""
    user = event.get("user")
    if isinstance(user, Mapping):
        user = user.get("id")
    by_bot = event.get("bot_id")
    return bool((user and user == bot_user_id) or (by_bot and by_bot == bot_id))


def to_message(body: Mapping[str, Any], bot_user_id: str | None) -> Message | None:
    """The message in an ``event_callback``, or None when the bot should ignore it."""
    if body.get("type") != "event_callback":
        return None
    event = body.get("event") or {}
    kind = event.get("type")
    if kind not in ("app_mention", "message"):
        return None
    subtype = event.get("subtype")
    user = event.get("user")
    if subtype and subtype not in _SPOKEN_SUBTYPES:
        return None
    if event.get("bot_id") or event.get("bot_profile") or not user or user == bot_user_id:
        return None
    channel = str(event.get("channel") or "")
    ts = str(event.get("ts") or "")
    if not channel or not ts:
        return None
    direct = is_direct(channel, event.get("channel_type"))
    raw = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    if kind == "message" and not direct:
        if thread_ts is None:
            return None  # channel chatter: the bot hears mentions and its own threads only
        if bot_user_id and _mentions(raw, bot_user_id):
            return None  # the app_mention event for the same post carries it
    return Message(
        team=_installed_team(body) or str(event.get("team") or ""),
        channel=channel,
        user=str(user),
        text=to_plain(raw, bot_user_id),
        ts=ts,
        thread_ts=str(thread_ts) if thread_ts else None,
        mention=kind == "app_mention",
        direct=direct,
        user_team=str(event.get("user_team") or event.get("team") or body.get("team_id") or ""),
    )


def _installed_team(body: Mapping[str, Any]) -> str:
    """The workspace of the installation an event was sent to.

    In a Slack Connect channel the wrapper's ``team_id`` can be the writer's
    workspace; ``authorizations`` names the installation's, as Bolt reads it.
    """
    auths = body.get("authorizations")
    first = auths[0] if isinstance(auths, list) and auths else None
    team = first.get("team_id") if isinstance(first, Mapping) else None
    return str(team or body.get("team_id") or "")


def to_plain(text: str, bot_user_id: str | None) -> str:
    """The text without mentions of the bot, whitespace collapsed."""
    if bot_user_id:
        text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    return " ".join(text.split())


def _mentions(text: str, user_id: str) -> bool:
    return any(m.group(1) == user_id for m in _MENTION.finditer(text))


def to_click(body: Mapping[str, Any]) -> Click:
    """The first action of a ``block_actions`` payload."""
    action = (body.get("actions") or [{}])[0]
    container = body.get("container") or {}
    return Click(
        team=str((body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")),
        user=str((body.get("user") or {}).get("id") or ""),
        channel=str(container.get("channel_id") or (body.get("channel") or {}).get("id") or ""),
        message_ts=str(container.get("message_ts") or (body.get("message") or {}).get("ts") or ""),
        action_id=str(action.get("action_id") or ""),
        value=str(action.get("value") or ""),
        trigger_id=str(body.get("trigger_id") or ""),
        user_team=to_user_team(body),
    )


def to_user_team(body: Mapping[str, Any]) -> str:
    """Who acted's own workspace in an interactivity payload: ``user.team_id``, or "".

    Not ``team.id``: in a Slack Connect channel that is the workspace the app is
    installed in, whoever clicked.
    """
    return str((body.get("user") or {}).get("team_id") or "")


def to_command(body: Mapping[str, Any]) -> Command:
    """A slash command's form fields."""
    return Command(
        team=str(body.get("team_id") or ""),
        channel=str(body.get("channel_id") or ""),
        user=str(body.get("user_id") or ""),
        text=" ".join(str(body.get("text") or "").split()),
        trigger_id=str(body.get("trigger_id") or ""),
        response_url=str(body.get("response_url") or ""),
    )


def to_value(**fields: Any) -> str:
    """A button value or modal ``private_metadata``: compact JSON."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def from_value(raw: str) -> dict[str, Any]:
    """Read what ``to_value`` wrote; anything else is an ``InvalidInputError``."""
    try:
        found = json.loads(raw)
    except ValueError as exc:
        raise InvalidInputError(f"unreadable button value {raw[:80]!r}") from exc
    if not isinstance(found, dict) or not isinstance(found.get("r"), str):
        raise InvalidInputError(f"button value {raw[:80]!r} names no request")
    return found
