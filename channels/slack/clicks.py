"""Buttons and modals: Approve, Reject (with a reason), Edit, View, question choices, and
the form of a typed answer.

Every path ends in ``runtime.decisions``: the one place that checks the request
is open, the arguments are the ones shown and the clicker may decide. Before a
modal opens, the same rules (``bot.domain.refusals``) spare people a form that
would be refused anyway; a refusal is worded here, for Slack. Before any of it, a
click or submission by someone of another workspace than the request's (Slack
Connect, ``teams``) is refused.

Slack's answer waits for a listener (``process_before_response``), so a click
holds it only for what decides the outcome: finding the request, who clicked
(within ``People``'s budget), the decision in Redis, and ``views.open``, whose
trigger expires 3 seconds after the click. Private notes and card refreshes
run in ``Background`` after the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import ConflictError, InvalidInputError, RefusedError
from bot.domain.events import Actor, ApprovalRequested, Decision, HumanQuestion
from bot.domain.reducer import Request
from bot.domain.refusals import Closed, Expired, NotAllowed, Refusal, to_words, why_refused
from bot.domain.text import cut
from bot.engine.ports import ChannelPorts
from channels.slack.answers import (
    ANSWER_VIEW,
    WHOLE,
    answer_form,
    answer_modal,
    from_answer,
    to_answer_errors,
)
from channels.slack.background import Background
from channels.slack.blocks import ANSWER, APPROVE, CHOICE, EDIT, REJECT, VIEW, to_choices, who
from channels.slack.home import Home
from channels.slack.outbound import Outbound, Place
from channels.slack.payloads import Click, from_value, to_click, to_user_team
from channels.slack.people import FAILED, People, UnknownUserError
from channels.slack.teams import OtherTeamError, to_home, why_other_team
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

_ERROR_MAX = 150
"""Slack shows at most this much of a modal input's error."""
OPEN_WITHIN = 2.5
"""Seconds from a click to the end of ``views.open``: its trigger id expires after 3."""


class Clicks:
    """Turns button clicks and modal submissions into decisions and answers.

    Args:
        runtime: the wired core.
        people: resolves clickers into actors, within a time budget.
        outbound: whispers, and refreshes a card a click found stale.
        background: runs those after Slack has its answer.
        client: the web process's Web API client, for ``views.open``.
        home: where a note to a click in an App Home goes (atop it: no channel to whisper in).
    """

    def __init__(
        self,
        runtime: ChannelPorts,
        people: People,
        outbound: Outbound,
        background: Background,
        client: AsyncWebClient,
        *,
        home: Home | None = None,
    ) -> None:
        self.rt = runtime
        self.people = people
        self.outbound = outbound
        self.background = background
        self.client = client
        self.home = home

    def register(self, app: Any) -> None:
        """Attach the action and view listeners to a Bolt ``AsyncApp``."""
        app.action(APPROVE)(self.on_approve)
        app.action(REJECT)(self.on_reject)
        app.action(EDIT)(self.on_edit)
        app.action(VIEW)(self.on_view)
        app.action(ANSWER)(self.on_answer)
        app.action(re.compile(f"^{CHOICE}[0-9]+$"))(self.on_choice)
        app.action(re.compile(".*"))(self.on_other)
        app.view(REJECT_VIEW)(self.on_reject_submitted)
        app.view(EDIT_VIEW)(self.on_edit_submitted)
        app.view(ANSWER_VIEW)(self.on_answer_submitted)

    async def on_other(self, ack: Any) -> None:
        await ack()

    async def on_approve(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        found = await self._clicked(ack, body, context)
        if found is None:
            return
        click, req, value = found
        actor = await self._actor(click, req.approvers)
        if actor is None:
            return
        try:
            await self.rt.decisions.decide(
                req.id, Decision.APPROVE, actor, seen_hash=value.get("h"), delivery=click.delivery
            )
        except RefusedError as exc:
            self._refused(click, req.id, exc)

    async def on_reject(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await self._open_modal(ack, body, context, "reject")

    async def on_edit(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await self._open_modal(ack, body, context, "edit")

    async def on_view(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await self._open_modal(ack, body, context, "view")

    async def on_answer(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await self._open_modal(ack, body, context, "answer")

    async def on_choice(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        found = await self._clicked(ack, body, context)
        if found is None:
            return
        click, req, value = found
        if not isinstance(req.asked, HumanQuestion):
            return
        choices = to_choices(req.asked)
        index = value.get("i")
        if not isinstance(index, int) or not 0 <= index < len(choices):
            self._tell(click, "That choice is no longer offered.")
            return
        actor = await self._actor(click, req.asked.answerers)
        if actor is None:
            return
        try:
            await self.rt.decisions.answer(req.id, choices[index], actor, delivery=click.delivery)
        except RefusedError as exc:
            self._refused(click, req.id, exc)

    async def _open_modal(self, ack: Any, body: dict[str, Any], context: Any, kind: str) -> None:
        deadline = asyncio.get_running_loop().time() + OPEN_WITHIN
        found = await self._clicked(ack, body, context)
        if found is None:
            return
        click, req, _ = found
        asked = req.asked
        if isinstance(asked, HumanQuestion) != (kind == "answer"):
            return
        if kind == "view" and isinstance(asked, ApprovalRequested):
            view = args_modal(req, asked)
        else:
            allowed = asked.answerers if isinstance(asked, HumanQuestion) else req.approvers
            actor = await self._actor(click, allowed)
            if actor is None:
                return
            if refusal := why_refused(req, actor, self.rt.clock.now()):
                self._refused(click, req.id, refusal)
                return
            if isinstance(asked, HumanQuestion):
                view = answer_modal(req, asked)
            else:
                view = (reject_modal if kind == "reject" else edit_modal)(req, asked)
        try:
            async with asyncio.timeout_at(deadline):
                await self.client.views_open(trigger_id=click.trigger_id, view=view)
        except FAILED as exc:  # the trigger expired (3 s), the view was refused, Slack was slow
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
            log.warning("slack: views.open failed: %s", error)
            self._tell(click, "Slack did not open the form; please click again.")

    # --- modals -----------------------------------------------------------------------------

    async def on_reject_submitted(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any
    ) -> None:
        meta = from_value(str(view.get("private_metadata") or ""))
        reason = from_reason(view["state"]["values"])
        if not reason:
            await ack(
                response_action="errors",
                errors={REASON: "Say why: the agent is told, so it can adjust."},
            )
            return
        try:
            await self._decide_submitted(body, view, context, meta, Decision.REJECT, reason=reason)
        except (RefusedError, UnknownUserError) as exc:
            await ack(response_action="errors", errors={REASON: cut(exc.message, _ERROR_MAX)})
            return
        await ack()

    async def on_edit_submitted(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any
    ) -> None:
        meta = from_value(str(view.get("private_metadata") or ""))
        values = view["state"]["values"]
        edited, errors = from_edit(values, meta)
        if edited is None:
            await ack(response_action="errors", errors=errors)
            return
        try:
            await self._decide_submitted(
                body, view, context, meta, Decision.APPROVE, edited_args=edited
            )
        except InvalidInputError as exc:
            listed = exc.detail.get("errors") or [{"field": "", "error": exc.message}]
            await ack(response_action="errors", errors=to_errors(listed, values, meta))
            return
        except (RefusedError, UnknownUserError) as exc:
            block = next(iter(values), "args")
            await ack(response_action="errors", errors={block: cut(exc.message, _ERROR_MAX)})
            return
        await ack()

    async def on_answer_submitted(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any
    ) -> None:
        values = view["state"]["values"]
        first = next(iter(values), WHOLE)
        try:
            meta = from_value(str(view.get("private_metadata") or ""))
            req, thread = await self.rt.decisions.find(meta["r"])
        except RefusedError as exc:
            await ack(response_action="errors", errors={first: cut(exc.message, _ERROR_MAX)})
            return
        if not isinstance(req.asked, HumanQuestion) or req.asked.answer_schema is None:
            await ack()
            return
        form = answer_form(req.asked)
        answer, errors = from_answer(values, form)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        try:
            why = why_other_team(to_user_team(body), thread, to_home(context), doing="answer")
            if why is not None:
                raise OtherTeamError(why)
            actor = await self.people.actor(str(body["user"]["id"]), req.asked.answerers)
            await self.rt.decisions.answer(
                req.id,
                json.dumps(answer, ensure_ascii=False),
                actor,
                # One submission is one answer, however often Slack delivers it.
                delivery=f"slack:view:{view['id']}",
            )
        except InvalidInputError as exc:  # the decision path's schema check: by input
            listed = exc.detail.get("errors") or [{"field": "", "error": exc.message}]
            await ack(response_action="errors", errors=to_answer_errors(listed, form))
            return
        except (RefusedError, UnknownUserError) as exc:
            await ack(response_action="errors", errors={first: cut(exc.message, _ERROR_MAX)})
            return
        await ack()

    async def _decide_submitted(
        self,
        body: dict[str, Any],
        view: dict[str, Any],
        context: Any,
        meta: dict[str, Any],
        decision: Decision,
        *,
        reason: str | None = None,
        edited_args: dict[str, Any] | None = None,
    ) -> None:
        """Decide as the modal's submitter, on the request and arguments its card showed.

        A submission has no channel for a private note: a refusal is shown in the form.
        """
        req, thread = await self.rt.decisions.find(meta["r"])
        why = why_other_team(to_user_team(body), thread, to_home(context), doing="decide")
        if why is not None:
            raise OtherTeamError(why)
        actor = await self.people.actor(str(body["user"]["id"]), req.approvers)
        await self.rt.decisions.decide(
            req.id,
            decision,
            actor,
            reason=reason,
            edited_args=edited_args,
            seen_hash=meta.get("h"),
            # One submission is one decision, however often Slack delivers it.
            delivery=f"slack:view:{view['id']}",
        )

    # --- helpers ----------------------------------------------------------------------------

    async def _clicked(
        self, ack: Any, body: dict[str, Any], context: Any
    ) -> tuple[Click, Request, dict[str, Any]] | None:
        """Answer Slack at once, then find the request the button names (None: told why).

        A clicker of another workspace than the request's gets no further, whatever
        the button, so a policy naming people by email cannot be met by another
        organisation's user of that email.
        """
        await ack()
        click = to_click(body)
        try:
            value = from_value(click.value)
            req, thread = await self.rt.decisions.find(value["r"])
        except RefusedError as exc:
            self._tell(click, exc.message)
            return None
        doing = "answer" if isinstance(req.asked, HumanQuestion) else "decide"
        if why := why_other_team(click.user_team, thread, to_home(context), doing=doing):
            log.info("thread %s: a click from team %r refused", thread.id, click.user_team)
            self._tell(click, why)
            return None
        return click, req, value

    async def _actor(self, click: Click, allowed: list[str]) -> Actor | None:
        """Who clicked (None: Slack would not say in time, and the clicker is told so)."""
        try:
            return await self.people.actor(click.user, allowed)
        except UnknownUserError as exc:
            self._tell(click, exc.message)
            return None

    def _tell(self, click: Click, text: str | Callable[[], Awaitable[str]]) -> None:
        """A private note to the clicker, after Slack has its answer (``text()`` runs then)."""

        async def whisper() -> None:
            said = text if isinstance(text, str) else await text()
            await self._note(click, said)

        self.background.start("a private note", whisper)

    async def _note(self, click: Click, text: str) -> None:
        """Whisper to the clicker where they clicked: in the channel, or atop their Home."""
        if click.channel or self.home is None:
            await self.outbound.whisper(click.channel, click.user, text)
        else:
            await self.home.publish(click.user, notice=text)

    def _refused(self, click: Click, request_id: str, why: Refusal | RefusedError) -> None:
        """Tell the clicker why nothing changed; a card gone stale is shown as it now is."""
        if isinstance(why, RefusedError):
            if why.refusal is None:  # no rule refused: changed arguments (stale), or bad input
                if isinstance(why, ConflictError):
                    self._stale(click, request_id, why.message)
                else:
                    self._tell(click, why.message)
                return
            why = why.refusal
        words = partial(self._words, why)
        if isinstance(why, Closed | Expired):
            self._stale(click, request_id, words)
        else:
            self._tell(click, words)

    def _stale(
        self, click: Click, request_id: str, text: str | Callable[[], Awaitable[str]]
    ) -> None:
        """A click on a decided, expired or changed card: say so, and show the card as it is."""

        async def show() -> None:
            _, state = await self.rt.decisions.find(request_id)
            said = text if isinstance(text, str) else await text()
            await self._note(click, said)
            try:
                await self.outbound.refresh(
                    state, request_id, also=Place(click.channel, click.message_ts)
                )
            except SlackApiError as exc:
                log.warning("slack: refreshing a card failed: %s", exc.response.get("error"))

        self.background.start("refreshing a stale card", show)

    async def _words(self, refusal: Refusal) -> str:
        """``refusal`` in Slack's words, for the clicker; it names who may decide."""
        allowed = None
        if isinstance(refusal, NotAllowed):
            allowed = await self._mentions(refusal.allowed)
        return f"{to_words(refusal, who=who, allowed=allowed)}. Nothing changed."

    async def _mentions(self, names: tuple[str, ...]) -> str:
        return ", ".join([await self.people.mention(name) for name in names])
