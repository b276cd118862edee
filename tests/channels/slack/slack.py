"""Slack's side of ``/slack/events`` for tests: signed events, clicks, modals, commands.

Payloads start from the captured shapes in ``tests/samples/slack/`` and are
signed with Slack's real v0 algorithm (``slack_sdk.signature``). Clicks press
the buttons of the messages the stand-in actually received, and modal
submissions return the view the bot actually opened.
"""

from __future__ import annotations

import copy
import html
import itertools
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier

from tests.harness import eventually
from tests.standins.slack_api import SlackAPI

SAMPLES = Path(__file__).parents[2] / "samples" / "slack"
SECRET = "test-signing-secret"
TEAM = "T0TEAM0001"
CHANNEL = "C0DEPLOY01"


def sample(name: str) -> dict[str, Any]:
    """A captured payload, fresh each time."""
    found: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return found


class Slack:
    """Sends what Slack would send to the app under test."""

    def __init__(self, http: httpx.AsyncClient, api: SlackAPI, secret: str = SECRET) -> None:
        self.http = http
        self.api = api
        self.secret = secret
        self._ids = itertools.count(1)

    def next_ts(self) -> str:
        return f"1719{next(self._ids):06d}.000100"

    async def send(
        self,
        body: bytes,
        content_type: str,
        *,
        retry: int | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """POST ``body`` to ``/slack/events``, signed (with ``secret`` if given)."""
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = SignatureVerifier(secret or self.secret).generate_signature(
            timestamp=ts, body=body
        )
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.http.post("/slack/events", content=body, headers=headers)

    async def event(self, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        return await self.send(json.dumps(payload).encode(), "application/json", **kw)

    async def interact(self, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.send(body, "application/x-www-form-urlencoded", **kw)

    def mention_payload(
        self, text: str, user: str, *, channel: str = CHANNEL, thread_ts: str | None = None
    ) -> dict[str, Any]:
        payload = sample("app_mention")
        ts = self.next_ts()
        event = payload["event"]
        event.update(text=f"<@U0BOT0001> {text}", user=user, channel=channel, ts=ts, event_ts=ts)
        event["blocks"][0]["elements"][0]["elements"][1]["text"] = f" {text}"
        if thread_ts:
            event["thread_ts"] = thread_ts
        payload["event_id"] = f"Ev0M{next(self._ids):08d}"
        return payload

    async def mention(
        self, text: str, user: str, *, channel: str = CHANNEL, thread_ts: str | None = None
    ) -> str:
        """``@Greenlight text`` as a new post (or in ``thread_ts``); returns the post's ts."""
        payload = self.mention_payload(text, user, channel=channel, thread_ts=thread_ts)
        r = await self.event(payload)
        assert r.status_code == 200, r.text
        return str(payload["event"]["ts"])

    def reply_payload(
        self, text: str, user: str, thread_ts: str, *, channel: str = CHANNEL
    ) -> dict[str, Any]:
        payload = sample("message_in_thread")
        ts = self.next_ts()
        event = payload["event"]
        event.update(text=text, user=user, channel=channel, ts=ts, event_ts=ts, thread_ts=thread_ts)
        event["blocks"][0]["elements"][0]["elements"][0]["text"] = text
        payload["event_id"] = f"Ev0R{next(self._ids):08d}"
        return payload

    async def reply(self, text: str, user: str, thread_ts: str, *, channel: str = CHANNEL) -> None:
        """A plain message in a Slack thread (no mention)."""
        r = await self.event(self.reply_payload(text, user, thread_ts, channel=channel))
        assert r.status_code == 200, r.text

    def click_payload(
        self,
        message: tuple[str, str],
        action_id: str,
        user: str,
        *,
        as_first_posted: bool = False,
    ) -> dict[str, Any]:
        """Pressing the button ``action_id`` of a message the stand-in holds.

        ``as_first_posted`` presses it on the message as first posted, as a client
        that has not caught up with an update would.
        """
        channel, ts = message
        posted = (self.api.originals if as_first_posted else self.api.messages)[message]
        button = find_button(posted.get("blocks") or [], action_id)
        payload = sample("block_actions")
        payload["user"].update(id=user, username=user.lower(), name=user.lower())
        payload["container"].update(
            message_ts=ts, channel_id=channel, thread_ts=posted.get("thread_ts")
        )
        payload["channel"]["id"] = channel
        payload["message"].update(
            ts=ts,
            text=posted.get("text"),
            blocks=posted.get("blocks"),
            thread_ts=posted.get("thread_ts"),
        )
        payload["actions"] = [
            {
                **payload["actions"][0],
                **button,
                "block_id": block_of(posted["blocks"], action_id),
                "action_ts": self.next_ts(),
            }
        ]
        payload["actions"][0].pop("confirm", None)
        payload["trigger_id"] = f"7206{next(self._ids):06d}.7206011341111.abc"
        return payload

    async def click(self, message: tuple[str, str], action_id: str, user: str) -> httpx.Response:
        return await self.interact(self.click_payload(message, action_id, user))

    async def submit(
        self, view: dict[str, Any], values: dict[str, dict[str, Any]], user: str
    ) -> httpx.Response:
        """Submit a modal the bot opened: ``values`` maps block id → action id → text, or
        → the element's state as Slack sends it (``{"selected_option": …}``)."""
        return await self.interact(self.submit_payload(view, values, user))

    def submit_payload(
        self, view: dict[str, Any], values: dict[str, dict[str, Any]], user: str
    ) -> dict[str, Any]:
        payload = sample("view_submission")
        payload["user"].update(id=user, username=user.lower(), name=user.lower())
        opened = copy.deepcopy(view)
        state = {
            block: {
                action: text
                if isinstance(text, dict)
                else {"type": "plain_text_input", "value": text}
                for action, text in actions.items()
            }
            for block, actions in values.items()
        }
        payload["view"].update(
            id=opened.get("id", "V0VIEW0001"),
            blocks=opened.get("blocks", []),
            private_metadata=opened.get("private_metadata", ""),
            callback_id=opened.get("callback_id"),
            title=opened.get("title"),
            state={"values": state},
        )
        return payload

    async def home_opened(self, user: str) -> None:
        """``user`` opens the app's Home tab."""
        payload = sample("app_mention")
        ts = self.next_ts()
        payload["event"] = {
            "type": "app_home_opened",
            "user": user,
            "channel": "D0HOME0001",
            "tab": "home",
            "event_ts": ts,
        }
        payload["event_id"] = f"Ev0H{next(self._ids):08d}"
        r = await self.event(payload)
        assert r.status_code == 200, r.text

    def home_click_payload(self, user: str, action_id: str, n: int = 0) -> dict[str, Any]:
        """Pressing the ``n``-th ``action_id`` button of ``user``'s Home as last published."""
        view = self.api.homes[user]
        blocks = [b for b in view["blocks"] if b.get("type") == "actions"]
        found = [
            (b, e) for b in blocks for e in b.get("elements") or [] if e["action_id"] == action_id
        ]
        block, button = found[n]
        payload = sample("block_actions")
        payload["user"].update(id=user, username=user.lower(), name=user.lower())
        payload["container"] = {"type": "view", "view_id": "V0HOME0001"}
        del payload["channel"], payload["message"]
        payload["view"] = {**view, "id": "V0HOME0001"}
        payload["actions"] = [{**payload["actions"][0], **button, "block_id": block["block_id"]}]
        payload["actions"][0].pop("confirm", None)
        payload["trigger_id"] = f"7206{next(self._ids):06d}.7206011341111.abc"
        return payload

    async def home_click(self, user: str, action_id: str, n: int = 0) -> httpx.Response:
        return await self.interact(self.home_click_payload(user, action_id, n))

    async def command(self, text: str, user: str, *, channel: str = CHANNEL) -> httpx.Response:
        """``/greenlight text``, form-encoded as Slack sends slash commands."""
        form = sample("slash_command")
        form.update(text=text, user_id=user, user_name=user.lower(), channel_id=channel)
        form["response_url"] = f"{self.api.base}/commands/{TEAM}/{next(self._ids)}/aB3cD4"
        form["trigger_id"] = f"7206{next(self._ids):06d}.7206011341111.0a1b2c"  # one a command
        body = urllib.parse.urlencode(form).encode()
        return await self.send(body, "application/x-www-form-urlencoded")


def ephemerals(api: SlackAPI, user: str) -> list[str]:
    """The private notes ``user`` got so far, unescaped."""
    return [
        html.unescape(c.params["text"])
        for c in api.calls_to("chat.postEphemeral")
        if c.params["user"] == user
    ]


async def whispers(api: SlackAPI, user: str, n: int = 1) -> list[str]:
    """The private notes ``user`` got, once there are ``n``: they follow Slack's answer."""

    async def enough() -> list[str] | None:
        notes = ephemerals(api, user)
        return notes if len(notes) >= n else None

    return await eventually(enough)


def find_button(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any]:
    for block in blocks:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return dict(element)
    raise AssertionError(f"no {action_id} button in {json.dumps(blocks)[:500]}")


def block_of(blocks: list[dict[str, Any]], action_id: str) -> str:
    for block in blocks:
        if any(e.get("action_id") == action_id for e in block.get("elements") or []):
            return str(block.get("block_id"))
    raise AssertionError(f"no block holds {action_id}")


async def home_of(api: SlackAPI, user: str, n: int = 1) -> dict[str, Any]:
    """``user``'s Home once it was published ``n`` times: it follows Slack's answer."""

    async def published() -> dict[str, Any] | None:
        done = [c for c in api.calls_to("views.publish") if c.params["user_id"] == user]
        return api.homes.get(user) if len(done) >= n else None

    return await eventually(published)


def publishes(api: SlackAPI, user: str) -> int:
    return len([c for c in api.calls_to("views.publish") if c.params["user_id"] == user])


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


def text_of(message: dict[str, Any]) -> str:
    """Every text of a message and its blocks, joined, for assertions."""
    return json.dumps({"text": message.get("text"), "blocks": message.get("blocks")})


def unreadable(payload: dict[str, Any], max_bytes: int) -> dict[str, dict[str, Any]]:
    """``payload`` with a field the strict JSON reader refuses, or past ``max_bytes``."""
    deep: Any = "deep"
    for _ in range(40):
        deep = [deep]
    found = {
        "nested deeper than 32 levels": deep,
        "not valid JSON": float("nan"),  # written NaN, as Python's json writes it
        f"over the limit of {max_bytes}": "x" * max_bytes,
    }
    return {why: {**payload, "event": {**payload["event"], "x": x}} for why, x in found.items()}
