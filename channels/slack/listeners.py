"""The Bolt listeners: Slack traffic in, ``runtime.inbox`` and ``runtime.decisions`` calls out.

Each listener only records (a Redis write) and, at most, opens a modal or
posts an ephemeral notice, so Slack gets its answer well inside 3 seconds;
the agent runs in a worker. Every event gets a 200, handled or not, so Slack
never retries something we chose to ignore.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import keys
from bot.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from bot.events import Actor, ApprovalRequested, Decision, HumanQuestion, Origin
from bot.policy import is_allowed, is_same_person
from bot.runtime import Runtime
from bot.threads import Request, ThreadState
from channels.slack.blocks import APPROVE, CHOICE, EDIT, REJECT, VIEW, cut, to_choices, who
from channels.slack.outbound import Outbound, Place
from channels.slack.payloads import (
    Click,
    Message,
    from_value,
    to_agent,
    to_click,
    to_command,
    to_conversation,
    to_message,
)
from channels.slack.people import People, escape
from channels.slack.views import (
    EDIT_VIEW,
    REASON,
    REJECT_VIEW,
    args_modal,
    edit_modal,
    from_edit,
    from_reason,
    reject_modal,
    to_errors,
)

log = logging.getLogger(__name__)

COMMAND = "/greenlight"
_ERROR_MAX = 150
"""Slack shows at most this much of a modal input's error."""


class Listeners:
    """Turns Slack events, clicks, modals and the slash command into Greenlight calls.

    Args:
        runtime: the wired core.
        people: resolves clickers into actors (with the web client).
        outbound: refreshes a card when a click finds it stale.
    """

    def __init__(self, runtime: Runtime, people: People, outbound: Outbound) -> None:
        self.rt = runtime
        self.people = people
        self.outbound = outbound
        self.client = outbound.client

    def register(self, app: Any) -> None:
        """Attach every listener to a Bolt ``AsyncApp``; the catch-alls come last."""
        app.event("app_mention")(self.on_message)
        app.event("message")(self.on_message)
        app.event(re.compile(".*"))(self.on_anything)
        app.action(APPROVE)(self.on_approve)
        app.action(REJECT)(self.on_reject)
        app.action(EDIT)(self.on_edit)
        app.action(VIEW)(self.on_view)
        app.action(re.compile(f"^{CHOICE}[0-9]+$"))(self.on_choice)
        app.action(re.compile(".*"))(self.on_anything)
        app.view(REJECT_VIEW)(self.on_reject_submitted)
        app.view(EDIT_VIEW)(self.on_edit_submitted)
        app.command(COMMAND)(self.on_command)

    async def on_anything(self, ack: Any) -> None:
        await ack()

    # --- messages ---------------------------------------------------------------------------

    async def on_message(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await ack()
        message = to_message(body, context.get("bot_user_id"))
        if message is not None:
            await self.hear(message)

    async def hear(self, msg: Message) -> None:
        """A person wrote: answer an open question, continue a thread, or start one."""
        tid = keys.thread_id_for("slack", msg.conversation)
        if not msg.is_reply:
            # A new post: no thread, no question, no card under it (a retry is deduplicated).
            await self._start(msg, tid)
            return
        alias = await self.rt.store.resolve("slack", f"{msg.channel}:{msg.root}")
        tid = alias or tid
        state = await self.rt.store.load(tid)
        if not state.exists and not msg.mention and not msg.direct:
            return  # a thread the bot is not part of
        question = _open_question(state)
        if (alias and question is None) or (state.exists and not msg.text):
            return  # talk under a card elsewhere is for people; no text says nothing
        answerers = question[1].answerers if question else []
        actor = await self.people.actor(msg.user, answerers)
        if question is not None and is_allowed(actor, answerers):
            await self._answer(msg, question[0].id, msg.text, actor)
            return
        if alias:
            return
        if state.exists:
            await self._say(msg, tid, state.agent, actor)
        else:
            await self._start(msg, tid, actor)

    async def _start(self, msg: Message, tid: str, actor: Actor | None = None) -> None:
        """A conversation begins: the first word names the agent (or there is only one)."""
        agent = to_agent(msg.text, self.rt.agents) or _only(self.rt.agents)
        if agent is None or not msg.text:
            await self._whisper(msg.channel, msg.user, self._help(), msg.thread_ts)
            return
        await self._say(msg, tid, agent, actor or await self.people.actor(msg.user))

    async def _say(self, msg: Message, tid: str, agent: str, actor: Actor) -> None:
        origin = Origin(
            channel="slack",
            conversation=msg.conversation,
            metadata={"team": msg.team, "channel": msg.channel, "thread_ts": msg.root},
        )
        try:
            await self.rt.inbox.message(
                agent=agent,
                text=msg.text,
                by=actor,
                origin=origin,
                thread_id=tid,
                delivery=msg.delivery,
            )
        except (ConflictError, InvalidInputError) as exc:
            await self._whisper(msg.channel, msg.user, exc.message, msg.thread_ts)

    async def _answer(self, msg: Message, request_id: str, text: str, actor: Actor) -> None:
        try:
            await self.rt.decisions.answer(request_id, text, actor, delivery=msg.delivery)
        except (ConflictError, ForbiddenError, InvalidInputError, NotFoundError) as exc:
            await self._whisper(msg.channel, msg.user, exc.message, msg.thread_ts)

    # --- the slash command ------------------------------------------------------------------

    async def on_command(self, ack: Any, body: dict[str, Any]) -> None:
        cmd = to_command(body)
        agent = to_agent(cmd.text, self.rt.agents)
        if agent is None:
            await ack(text=self._help(COMMAND))
            return
        actor = await self.people.actor(cmd.user)
        try:
            posted = await self.client.chat_postMessage(
                channel=cmd.channel,
                text=f"{who(actor)} asked the *{agent}* agent: {escape(cut(cmd.text, 3000))}",
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            await ack(text=f"I can't post here ({error}). Invite me first: `/invite @Greenlight`.")
            return
        channel, root = str(posted["channel"]), str(posted["ts"])
        conversation = to_conversation(cmd.team, channel, root)
        await self.rt.inbox.message(
            agent=agent,
            text=cmd.text,
            by=actor,
            origin=Origin(
                channel="slack",
                conversation=conversation,
                metadata={"team": cmd.team, "channel": channel, "thread_ts": root},
            ),
            thread_id=keys.thread_id_for("slack", conversation),
            delivery=f"slack:{channel}:{root}",
        )
        await ack()

    # --- buttons ----------------------------------------------------------------------------

    async def on_approve(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        click = to_click(body)
        found = await self._request(click)
        if found is None:
            return
        req, value = found
        actor = await self.people.actor(click.user, req.approvers)
        try:
            await self.rt.decisions.decide(
                req.id, Decision.APPROVE, actor, seen_hash=value.get("h"), delivery=click.delivery
            )
        except ConflictError as exc:
            await self._stale(click, req.id, exc)
        except ForbiddenError as exc:
            text = await self._refusal(req, actor) or exc.message
            await self._whisper(click.channel, click.user, text)
        except (NotFoundError, InvalidInputError) as exc:
            await self._whisper(click.channel, click.user, exc.message)

    async def on_reject(self, ack: Any, body: dict[str, Any]) -> None:
        await self._open_modal(ack, body, "reject")

    async def on_edit(self, ack: Any, body: dict[str, Any]) -> None:
        await self._open_modal(ack, body, "edit")

    async def on_view(self, ack: Any, body: dict[str, Any]) -> None:
        await self._open_modal(ack, body, "view")

    async def on_choice(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        click = to_click(body)
        found = await self._request(click)
        if found is None:
            return
        req, value = found
        if not isinstance(req.asked, HumanQuestion):
            return
        choices = to_choices(req.asked)
        index = value.get("i")
        if not isinstance(index, int) or not 0 <= index < len(choices):
            await self._whisper(click.channel, click.user, "That choice is no longer offered.")
            return
        actor = await self.people.actor(click.user, req.asked.answerers)
        try:
            await self.rt.decisions.answer(req.id, choices[index], actor, delivery=click.delivery)
        except ConflictError as exc:
            await self._stale(click, req.id, exc)
        except (ForbiddenError, NotFoundError, InvalidInputError) as exc:
            await self._whisper(click.channel, click.user, exc.message)

    async def _open_modal(self, ack: Any, body: dict[str, Any], kind: str) -> None:
        await ack()
        click = to_click(body)
        found = await self._request(click)
        if found is None:
            return
        req, _ = found
        if not isinstance(req.asked, ApprovalRequested):
            return
        if kind == "view":
            view = args_modal(req, req.asked)
        else:
            actor = await self.people.actor(click.user, req.approvers)
            if not _is_open(req):
                await self._stale(click, req.id, None)
                return
            if refusal := await self._refusal(req, actor):
                await self._whisper(click.channel, click.user, refusal)
                return
            maker = reject_modal if kind == "reject" else edit_modal
            view = maker(req, req.asked)
        try:
            await self.client.views_open(trigger_id=click.trigger_id, view=view)
        except SlackApiError as exc:  # the trigger expired (3 s) or the view was refused
            log.warning("slack: views.open failed: %s", exc.response.get("error"))
            await self._whisper(
                click.channel, click.user, "Slack did not open the form; please click again."
            )

    # --- modals -----------------------------------------------------------------------------

    async def on_reject_submitted(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        meta = from_value(str(view.get("private_metadata") or ""))
        reason = from_reason(view["state"]["values"])
        if not reason:
            await ack(
                response_action="errors",
                errors={REASON: "Say why: the agent is told, so it can adjust."},
            )
            return
        user = str(body["user"]["id"])
        try:
            req, _ = await self.rt.decisions.find(meta["r"])
            actor = await self.people.actor(user, req.approvers)
            await self.rt.decisions.decide(
                meta["r"],
                Decision.REJECT,
                actor,
                reason=reason,
                seen_hash=meta.get("h"),
                delivery=f"slack:view:{view['id']}",
            )
        except (ConflictError, ForbiddenError, NotFoundError, InvalidInputError) as exc:
            await ack(response_action="errors", errors={REASON: cut(exc.message, _ERROR_MAX)})
            return
        await ack()

    async def on_edit_submitted(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = from_value(str(view.get("private_metadata") or ""))
        values = view["state"]["values"]
        edited, errors = from_edit(values, meta)
        if edited is None:
            await ack(response_action="errors", errors=errors)
            return
        user = str(body["user"]["id"])
        try:
            req, _ = await self.rt.decisions.find(meta["r"])
            actor = await self.people.actor(user, req.approvers)
            await self.rt.decisions.decide(
                meta["r"],
                Decision.APPROVE,
                actor,
                edited_args=edited,
                seen_hash=meta.get("h"),
                delivery=f"slack:view:{view['id']}",
            )
        except InvalidInputError as exc:
            listed = exc.detail.get("errors") or [{"field": "", "error": exc.message}]
            await ack(response_action="errors", errors=to_errors(listed, values, meta))
            return
        except (ConflictError, ForbiddenError, NotFoundError) as exc:
            block = next(iter(values), "args")
            await ack(response_action="errors", errors={block: cut(exc.message, _ERROR_MAX)})
            return
        await ack()

    # --- helpers ----------------------------------------------------------------------------

    async def _request(self, click: Click) -> tuple[Request, dict[str, Any]] | None:
        try:
            value = from_value(click.value)
            req, _ = await self.rt.decisions.find(value["r"])
        except (InvalidInputError, NotFoundError) as exc:
            await self._whisper(click.channel, click.user, exc.message)
            return None
        return req, value

    async def _stale(self, click: Click, request_id: str, exc: ConflictError | None) -> None:
        """A click on a decided, expired or changed card: say so, and show the card as it is."""
        req, state = await self.rt.decisions.find(request_id)
        await self._whisper(click.channel, click.user, _why_stale(req, exc))
        try:
            await self.outbound.refresh(
                state, request_id, also=Place(click.channel, click.message_ts)
            )
        except SlackApiError as exc2:
            log.warning("slack: refreshing a card failed: %s", exc2.response.get("error"))

    async def _whisper(
        self, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
        """An ephemeral notice only ``user`` sees; failing to send it changes nothing."""
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            log.warning("slack: chat.postEphemeral failed: %s", exc.response.get("error"))

    async def _refusal(self, req: Request, actor: Actor) -> str | None:
        """Why ``actor`` may not decide, checked before a modal opens (decide checks again)."""
        asked = req.asked
        if not isinstance(asked, ApprovalRequested):
            return None
        if not is_allowed(actor, req.approvers):
            names = [await self.people.mention(a) for a in req.approvers]
            return f"You can't decide this request; it is for {', '.join(names)}. Nothing changed."
        if not asked.allow_self_approval and is_same_person(actor, asked.requester):
            return "You asked for this, so someone else must decide it. Nothing changed."
        return None

    def _help(self, how: str = "@Greenlight") -> str:
        names = ", ".join(f"`{n}`" for n in sorted(self.rt.agents))
        return (
            f"Start with an agent's name, e.g. `{how} deploy api 1.5.0 to production`. "
            f"Agents: {names}."
        )


def _open_question(state: ThreadState) -> tuple[Request, HumanQuestion] | None:
    for req in reversed(state.open_requests()):
        if isinstance(req.asked, HumanQuestion):
            return req, req.asked
    return None


def _only(agents: dict[str, Any]) -> str | None:
    return next(iter(agents)) if len(agents) == 1 else None


def _is_open(req: Request) -> bool:
    return req.is_open and (req.expires_at is None or req.expires_at > time.time())


def _why_stale(req: Request, exc: ConflictError | None) -> str:
    if req.is_open and exc is not None:
        return exc.message
    closed = ", ".join(who(a) for a in req.closed_by)
    if req.status.value == "expired" or (req.is_open and not _is_open(req)):
        return "This request has expired; nothing was changed."
    by = f" by {closed}" if closed else ""
    return f"This request was already {req.status.value}{by}; nothing was changed."
