"""People talking: mentions, DMs, thread replies and ``/greenlight`` into ``runtime.inbox``.

Each listener only records (a Redis write) and answers, so Slack gets its
answer well inside 3 seconds; the agent runs in a worker. Private notes go to
Slack in ``Background``, after the answer. ``/greenlight`` is recorded before it
is answered, like a message; a worker posts its opening message
(``channels.slack.opening``), and replies under that post continue the thread.
Messages arrive from ``channels.slack.events``, which decides what an event is.
Clicks and modals are in ``clicks``. An answer to an open
question by someone of another workspace than the question's (Slack Connect,
``teams``) is refused, and not kept as a message either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from bot.domain import ids
from bot.domain.errors import InvalidInputError, RefusedError
from bot.domain.events import Actor, HumanQuestion, Origin
from bot.domain.policy import may_answer
from bot.domain.reducer import Request, ThreadState
from bot.domain.triage import to_agent
from bot.engine.ports import ChannelPorts
from channels.slack.background import Background
from channels.slack.opening import RESPOND, ROOT, is_command
from channels.slack.outbound import Outbound
from channels.slack.payloads import Message, to_command
from channels.slack.people import People
from channels.slack.teams import why_other_team

log = logging.getLogger(__name__)

COMMAND = "/greenlight"


class Listeners:
    """Turns Slack messages and the slash command into inbox messages and answers.

    Args:
        runtime: the wired core.
        people: resolves writers into actors, within a time budget.
        outbound: posts private notes (ephemeral messages).
        background: runs those after Slack has its answer.
    """

    def __init__(
        self, runtime: ChannelPorts, people: People, outbound: Outbound, background: Background
    ) -> None:
        self.rt = runtime
        self.people = people
        self.outbound = outbound
        self.background = background

    def register(self, app: Any) -> None:
        """Attach the slash command's listener to a Bolt ``AsyncApp`` (events come to
        ``hear`` through ``channels.slack.events``)."""
        app.command(COMMAND)(self.on_command)

    # --- messages ---------------------------------------------------------------------------

    async def hear(self, msg: Message, home: str) -> None:
        """A person wrote: answer an open question, continue a thread, or start one.

        ``home`` is the app's own workspace: where a thread not started in Slack asks.
        """
        tid = ids.thread_id_for("slack", msg.conversation)
        if not msg.is_reply:
            # A new post: no thread, no question, no card under it (a retry is deduplicated).
            await self._start(msg, tid)
            return
        alias = await self.rt.state.resolve(f"{msg.channel}:{msg.root}")
        tid = alias or tid
        state = await self.rt.threads.load(tid)
        if alias and is_command(state):
            # Under a /greenlight's opening post is its conversation; under a card, not.
            opening = await self.rt.state.get(tid, ROOT)
            alias = None if opening == f"{msg.channel} {msg.root}" else alias
        if not state.exists and not msg.mention and not msg.direct:
            return  # a thread the bot is not part of
        question = _open_question(state)
        if (alias and question is None) or (state.exists and not msg.text):
            return  # talk under a card elsewhere is for people; no text says nothing
        if question and (why := why_other_team(msg.user_team, state, home, doing="answer")):
            log.info("thread %s: a reply from team %r refused", state.id, msg.user_team)
            self._tell(msg, why)
            return
        answerers = question[1].answerers if question else []
        # Not strict: a person talking is no decision, and a refused answer becomes a message.
        actor = await self.people.actor(msg.user, answerers, strict=False)
        if question is not None and may_answer(actor, answerers):
            await self._answer(msg, question[0].id, msg.text, actor)
            return
        if alias:
            return
        if state.exists:
            await self._say(msg, tid, state.agent, actor)
        else:
            await self._start(msg, tid, actor)

    async def _start(self, msg: Message, tid: str, actor: Actor | None = None) -> None:
        """A conversation begins: the first word names the agent, or there is only one,
        or the inbox routes it (the default agent, or triage in the worker)."""
        if not msg.text:
            self._tell(msg, self._help())
            return
        agent = to_agent(msg.text, self.rt.agents) or _only(self.rt.agents)
        await self._say(msg, tid, agent, actor or await self.people.actor(msg.user, strict=False))

    async def _say(self, msg: Message, tid: str, agent: str | None, actor: Actor) -> None:
        origin = Origin(
            channel="slack",
            conversation=msg.conversation,
            metadata={"team": msg.team, "channel": msg.channel, "thread_ts": msg.root},
        )
        why = await self._record(agent, msg.text, actor, origin, tid=tid, delivery=msg.delivery)
        if why:
            self._tell(msg, why)

    async def _record(
        self, agent: str | None, text: str, actor: Actor, origin: Origin, *, tid: str, delivery: str
    ) -> str | None:
        """Record what a person wrote on the thread ``tid``; why not, if it was refused."""
        try:
            await self.rt.inbox.message(
                agent=agent, text=text, by=actor, origin=origin, thread_id=tid, delivery=delivery
            )
        except RefusedError as exc:
            return exc.message
        return None

    async def _answer(self, msg: Message, request_id: str, text: str, actor: Actor) -> None:
        try:
            await self.rt.decisions.answer(request_id, text, actor, delivery=msg.delivery)
        except RefusedError as exc:
            self._tell(msg, exc.message)

    def _tell(self, msg: Message, text: str) -> None:
        """A private note to the writer, after Slack has its answer."""
        whisper = partial(self.outbound.whisper, msg.channel, msg.user, text, msg.thread_ts)
        self.background.start("a private note", whisper)

    # --- the slash command ------------------------------------------------------------------

    async def on_command(self, ack: Any, body: dict[str, Any]) -> None:
        """Record the command's thread, then answer: a worker posts its opening message.

        A failure to record raises: Bolt answers 500 and Slack shows the person that
        the command failed (it does not retry a slash command).
        """
        cmd = to_command(body)
        if not cmd.text:
            await ack(text=self._help(COMMAND))
            return
        if not cmd.trigger_id:
            raise InvalidInputError("a slash command without a trigger_id")
        agent = to_agent(cmd.text, self.rt.agents) or _only(self.rt.agents)
        actor = await self.people.actor(cmd.user, strict=False)
        tid = ids.thread_id_for("slack", cmd.conversation)
        if cmd.response_url:  # to say privately what becomes of it, if it goes wrong
            await self.rt.state.put(tid, RESPOND, cmd.response_url)
        origin = Origin(
            channel="slack",
            conversation=cmd.conversation,
            metadata={"team": cmd.team, "channel": cmd.channel, "command": True},
        )
        why = await self._record(agent, cmd.text, actor, origin, tid=tid, delivery=cmd.delivery)
        if why:
            await ack(text=why)
            return
        await ack()

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


def _only(agents: Mapping[str, Any]) -> str | None:
    return next(iter(agents)) if len(agents) == 1 else None
