"""Humans deciding: the one path every channel uses to approve, reject or answer.

A decision is bound to its request (invariant 4): it names the request, the
arguments it saw, and comes from someone the policy allows. It lands with a
compare-and-append, so of two racing decisions exactly one wins and the other
is told who won.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.domain import ids
from bot.domain.agents import Agent
from bot.domain.clock import Clock
from bot.domain.errors import (
    ConflictError,
    GreenlightError,
    InvalidInputError,
    NotFoundError,
)
from bot.domain.events import (
    Actor,
    ApprovalDecision,
    ApprovalRequested,
    Decision,
    Event,
    HumanAnswer,
    HumanQuestion,
    args_hash,
)
from bot.domain.limits import check_text
from bot.domain.reducer import Request, ThreadState
from bot.domain.refusals import why_refused
from bot.domain.validate import bounded, check, to_answer
from bot.engine import metrics, tracing
from bot.engine.writes import write
from bot.storage.threadlog import DuplicateDelivery, ReusedDelivery, ThreadLog


@dataclass(frozen=True)
class Outcome:
    """What a decision did: the request as it now stands, and the thread."""

    request: Request
    thread: ThreadState
    duplicate: bool = False


class Decisions:
    """Records approvals, rejections and answers.

    Args:
        log: the thread logs.
        agents: to validate edited arguments against the tool's schema.
        clock: whether a request has expired.
    """

    def __init__(self, log: ThreadLog, agents: dict[str, Agent], *, clock: Clock) -> None:
        self.log = log
        self.agents = agents
        self.clock = clock

    async def find(self, request_id: str) -> tuple[Request, ThreadState]:
        """The request and its thread, as they stand now."""
        tid = ids.thread_of_request(request_id)
        state = await self.log.load(tid) if tid else None
        if state is None:
            raise NotFoundError(f"no request {request_id!r}", request_id=request_id)
        return _request(state, request_id), state

    async def decide(
        self,
        request_id: str,
        decision: Decision,
        by: Actor,
        *,
        reason: str | None = None,
        edited_args: dict[str, Any] | None = None,
        seen_hash: str | None = None,
        delivery: str | None = None,
        fingerprint: str | None = None,
    ) -> Outcome:
        """Record one approver's decision.

        Args:
            seen_hash: the ``args_hash`` the approver was shown; a mismatch
                means the arguments changed since, and nothing is recorded.
            delivery: the inbound delivery's key; a replay changes nothing.
            fingerprint: what the delivery asked for; the same key asking for
                something else is refused (``ReusedDelivery``).

        Raises:
            NotFoundError, ConflictError (closed, changed), ForbiddenError,
            InvalidInputError (edited arguments fail the schema or could not be stored and
            read back; a reason longer than ``MAX_TEXT``).
        """
        if reason is not None:
            check_text(reason, "the reason")
        if edited_args is not None:
            try:
                bounded(edited_args, "the edited arguments")
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from exc

        def build(req: Request, state: ThreadState) -> Event:
            if not isinstance(req.asked, ApprovalRequested):
                raise ConflictError(f"{request_id} is a question: answer it instead")
            if refusal := why_refused(req, by, self.clock.now()):
                raise refusal.error()
            new_args, new_hash = None, req.args_hash or req.asked.args_hash
            if seen_hash is not None and seen_hash != new_hash:
                raise ConflictError(
                    "the arguments changed since you saw them; look again", args_hash=new_hash
                )
            if edited_args is not None:
                if decision is not Decision.APPROVE:
                    raise InvalidInputError("only an approval can edit the arguments")
                new_args = self._validate_edit(state, req.asked, edited_args)
                new_hash = args_hash(new_args)
            return ApprovalDecision(
                request_id=request_id,
                decision=decision,
                by=by,
                reason=reason,
                args_hash=new_hash,
                edited_args=new_args,
                delivery=delivery,
            )

        out = await self._record(request_id, delivery, fingerprint, build)
        if not out.duplicate:
            metrics.decided(out.thread, request_id, decision.value, by.channel)
        return out

    async def answer(
        self,
        request_id: str,
        text: str,
        by: Actor,
        *,
        delivery: str | None = None,
        fingerprint: str | None = None,
    ) -> Outcome:
        """Answer an open question; the whole text goes back to the agent.

        Raises:
            InvalidInputError: empty or longer than ``MAX_TEXT``, not one of its choices,
                not yes or no for a yes/no question, or not JSON matching its answer schema
                (JSON read by ``bot.domain.limits.from_json``: bounded).
        """
        if not text.strip():
            raise InvalidInputError("the answer is empty")
        check_text(text, "the answer")

        def build(req: Request, state: ThreadState) -> Event:
            if not isinstance(req.asked, HumanQuestion):
                raise ConflictError(f"{request_id} is an approval: decide it instead")
            if refusal := why_refused(req, by, self.clock.now()):
                raise refusal.error()
            answer = to_answer(req.asked, text)
            return HumanAnswer(request_id=request_id, text=answer, by=by, delivery=delivery)

        out = await self._record(request_id, delivery, fingerprint, build)
        if not out.duplicate:
            metrics.decided(out.thread, request_id, "answer", by.channel)
        return out

    async def _record(
        self,
        request_id: str,
        delivery: str | None,
        fingerprint: str | None,
        build: Callable[[Request, ThreadState], Event],
    ) -> Outcome:
        """Build the event from the latest state and compare-and-append it."""
        tid = ids.thread_of_request(request_id)
        if tid is None:
            raise NotFoundError(f"no request {request_id!r}", request_id=request_id)
        tracing.bind(thread=tid, request=request_id)
        try:
            done = await write(
                self.log,
                tid,
                lambda s: [build(_request(s, request_id), s)],
                state=self.log.cached(tid),
                delivery=delivery,
                fingerprint=fingerprint,
            )
        except DuplicateDelivery:
            req, state = await self.find(request_id)
            return Outcome(req, state, duplicate=True)
        except ReusedDelivery:
            raise
        except GreenlightError:
            # A replay of a delivery that already decided is a success, not a conflict.
            if delivery and await self.log.seen(tid, delivery, fingerprint):
                req, state = await self.find(request_id)
                return Outcome(req, state, duplicate=True)
            raise
        return Outcome(done.state.requests[request_id], done.state)

    def _validate_edit(
        self, state: ThreadState, asked: ApprovalRequested, edited: dict[str, Any]
    ) -> dict[str, Any]:
        if asked.args_schema is not None:
            check(asked.args_schema, edited, "the edited arguments do not match the schema")
            return edited
        if not state.hosted:
            raise InvalidInputError(
                "this request's arguments cannot be edited: its agent gave no arguments_schema"
            )
        agent = self.agents.get(state.agent)
        tool = agent.all_tools.get(asked.tool) if agent else None
        if tool is None:
            raise ConflictError(f"tool {asked.tool!r} is no longer available")
        return tool.validate(edited).model_dump(mode="json")


def _request(state: ThreadState, request_id: str) -> Request:
    if request_id not in state.requests:
        raise NotFoundError(f"no request {request_id!r}", request_id=request_id)
    return state.requests[request_id]
