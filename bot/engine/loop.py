"""The agent loop as plain code (factor 8).

``Loop.step`` advances one thread as far as it can go without a human and
returns. It is safe to call again at any time, by any worker: what to do next
is decided from the events alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from bot.domain import triage
from bot.domain.agents import Agent
from bot.domain.clock import Clock
from bot.domain.context import to_blocks
from bot.domain.errors import GreenlightError, InvalidInputError, ModelError
from bot.domain.events import (
    SYSTEM,
    AgentChosen,
    AgentReply,
    AnswerFormat,
    ApprovalRequested,
    ContextFetched,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanQuestion,
    Outcome,
    Reminded,
    ToolCall,
    ToolResult,
    ToolStarted,
    Urgency,
    UserMessage,
    new_id,
    started_key,
)
from bot.domain.ids import new_request_id
from bot.domain.model import Model, ModelCall, ModelRequest, ModelTurn
from bot.domain.policy import Groups, to_approval
from bot.domain.reducer import (
    Call,
    CallStatus,
    Request,
    Status,
    ThreadState,
    is_expiry_action_escalate,
)
from bot.domain.text import redact_urls, to_call
from bot.domain.tools import REPLY, AskHuman, Reply, Tool, ToolContext
from bot.domain.triage import TRIAGE
from bot.engine import metrics, tracing
from bot.engine.people import identified
from bot.engine.ports import Directory
from bot.engine.tracing import THREAD_ID
from bot.engine.writes import write
from bot.storage.threadlog import ReleaseIf, ThreadLog

log = logging.getLogger(__name__)

_IDLE = {Status.CANCELLED, Status.PAUSED, Status.FAILED}


class Loop:
    """Steps threads: render, ask the model, dispatch, suspend or continue.

    Args:
        log: the thread logs.
        agents: the agents by name.
        model: the model port.
        groups: approver groups for policies that name ``group:…``.
        max_errors: consecutive errors before a human is asked instead.
        clock: when requests expire and reminders are due (tests move it forward).
        directories: the channels that say who their people are: a requester known
            without an email address is looked up again when their request opens.
    """

    def __init__(
        self,
        log: ThreadLog,
        agents: dict[str, Agent],
        model: Model,
        *,
        clock: Clock,
        groups: Groups | None = None,
        max_errors: int = 3,
        directories: Sequence[Directory] = (),
    ) -> None:
        self.log = log
        self.agents = agents
        self.model = model
        self.groups = groups or Groups()
        self.max_errors = max_errors
        self.clock = clock
        self.directories = tuple(directories)

    async def step(
        self,
        thread_id: str,
        state: ThreadState | None = None,
        *,
        release_if: ReleaseIf | None = None,
        started: ToolStarted | None = None,
        holder: str = "",
    ) -> ThreadState:
        """Advance the thread until it waits for a human, or is done.

        Args:
            release_if: how a worker lets go of its lease with the last append
                (``ThreadLog.append``).
            holder: the worker stepping it: each step is written only while it holds the
                thread's lease (``NotHolder`` otherwise: another worker took the thread
                over, and steps it from what is written).
            started: the start of a tool call just recorded with the lease (``ahead``),
                so the tool runs first.
        """
        state = state or await self.log.load(thread_id)
        if started is not None:
            state = await self._run(state, started)
        # At rest after an append (most often the one that let go of the lease): done,
        # without building the next step only to find there is none.
        while state.exists and not self.is_at_rest(state):
            done = await write(
                self.log,
                thread_id,
                self._next,
                state=state,
                enqueue=False,
                release_if=release_if,
                holder=holder,
            )
            state = done.state
            if not done.events:
                return state
            # Told apart by their ``type``: an isinstance of a pydantic class costs about
            # 2,000 instructions, and every event of a step passes here.
            for event in done.events:
                if event.type in ("approval_requested", "human_question"):
                    tracing.bind(request=event.request_id)
                elif event.type == "expired":
                    metrics.decided(state, event.request_id, "expired", SYSTEM.channel)
            if (last := done.events[-1]).type == "tool_started":
                state = await self._run(state, last)
        return state

    def is_at_rest(self, s: ThreadState) -> bool:
        """Whether the thread has no step to take now: done, idle, or waiting for a human."""
        if s.status in _IDLE:
            return True
        opened = s.open_requests()
        return self._at_rest(s, opened, self._any_due(opened))

    def _at_rest(self, s: ThreadState, opened: list[Request], due: bool) -> bool:
        """``is_at_rest`` for a thread that is not idle, with its open requests (read once
        per step: each read is a copy) and whether a timer is ``due``."""
        if not s.hosted:  # an agent elsewhere: only its timers are ours to fire
            return not due
        if s.agent == TRIAGE:  # no agent yet: triage when the person has spoken
            return not s.awaiting_model
        if s.agent not in self.agents or due:
            return False
        if opened:
            return True
        return not (s.awaiting_model or s.pending_calls())

    def ahead(self, s: ThreadState | None) -> ToolStarted | None:
        """The thread's next step when it is a tool's start, which needs no I/O to build:
        a worker records it with the lease, in one round trip (``ThreadLog.take``)."""
        if s is None or not s.hosted or s.agent == TRIAGE or s.status in _IDLE:
            return None
        agent = self.agents.get(s.agent)
        if agent is None or s.open_requests():
            return None  # waits for a person, or a timer comes first (timers are theirs)
        if not (pending := s.pending_calls()):
            return None
        call = pending[0]
        if call.status is not CallStatus.READY or call.asked.tool not in agent.all_tools:
            return None
        return _start(s, call)

    async def _next(self, s: ThreadState) -> list[Event]:
        """The events of the thread's next step; none when there is nothing to do now."""
        if s.status in _IDLE:
            return []
        opened = s.open_requests()
        due = self._any_due(opened)
        if self._at_rest(s, opened, due):
            return []
        if not s.hosted:
            # Never the model, never its call: the agent elsewhere runs what was approved.
            return self._due_timers(opened)
        if s.agent == TRIAGE:
            return await self._triage(s)
        agent = self.agents.get(s.agent)
        if agent is None:
            msg = f"unknown agent {s.agent!r}; known: {', '.join(sorted(self.agents))}"
            return [ErrorEvent(message=msg, fatal=True)]
        if due:
            return self._due_timers(opened)
        if pending := s.pending_calls():
            return await self._settle(s, agent, pending[0].asked.call_id)
        if s.consecutive_errors >= self.max_errors:
            return [_escalation(s, f"{s.consecutive_errors} errors in a row")]
        if s.turns_since_input >= agent.max_steps:
            return [_escalation(s, f"{agent.max_steps} steps without input")]
        fetched: list[Event] = []
        if agent.prefetch and not s.prefetched:
            try:
                fetched = [
                    ContextFetched(name=n, data=await f()) for n, f in agent.prefetch.items()
                ]
            except Exception as exc:  # an error event, so it counts toward escalation
                log.warning("prefetch for %s failed: %s", s.id, redact_urls(repr(exc)))
                return [ErrorEvent(message=f"prefetch failed: {_said(exc)}")]
        return [*fetched, *await self._model_turn(s, agent, fetched)]

    async def _triage(self, s: ThreadState) -> list[Event]:
        """Choose the agent of a thread started without one, or ask the person which."""
        events = await self.log.events(s.id, version=s.version)
        said = [e.text for e in events if isinstance(e, UserMessage)]
        if named := triage.to_agent(said[-1] if said else "", self.agents):
            return [AgentChosen(agent=named, how="named")]
        if len(self.agents) == 1:
            return [AgentChosen(agent=next(iter(self.agents)), how="only")]
        chosen = None
        try:
            turn = await self._complete(s, triage.to_request(self.agents, said))
            chosen = triage.from_turn(turn, self.agents)
        except ModelError as exc:
            log.warning("thread %s: triage failed, asking which agent: %s", s.id, exc.message)
        if chosen is None:
            return [AgentReply(text=triage.to_question(self.agents))]
        log.info("thread %s: triage chose the %s agent", s.id, chosen)
        return [AgentChosen(agent=chosen, how="model")]

    # --- timers ---------------------------------------------------------------------------

    def _any_due(self, opened: list[Request]) -> bool:
        """Whether a timer of the ``opened`` requests is due: asked once or twice a step, so
        without building the events (``_due_timers``)."""
        return bool(opened) and next(_due(opened, self.clock.now()), None) is not None

    def _due_timers(self, opened: list[Request]) -> list[Event]:
        now = self.clock.now()
        return [
            self._on_expiry(req, now) if at is None else Reminded(request_id=req.id, due=at)
            for req, at in _due(opened, now)
        ]

    def _on_expiry(self, req: Request, now: float) -> Event:
        if is_expiry_action_escalate(req):
            assert isinstance(req.asked, ApprovalRequested)
            ttl = (req.asked.expires_at or now) - req.asked.at
            log.info("request %s expired: escalating", req.id)
            return Escalated(
                request_id=req.id,
                approvers=self.groups.expand(req.asked.escalate_to),
                expires_at=now + ttl,
            )
        log.info("request %s expired", req.id)
        return Expired(request_id=req.id)

    # --- tool calls -----------------------------------------------------------------------

    async def _settle(self, s: ThreadState, agent: Agent, call_id: str) -> list[Event]:
        call = s.calls[call_id]
        tool = agent.all_tools.get(call.asked.tool)
        if call.status is CallStatus.REJECTED:
            req = s.requests.get(call.request_id or "")
            who = ", ".join(a.label() for a in req.closed_by) if req else "policy"
            why = (req.reason if req else None) or "no reason given"
            output = f"Rejected by {who or 'expiry'}: {why}"
            return [ToolResult(call_id=call_id, outcome=Outcome.REJECTED, output=output)]
        if call.status is CallStatus.STARTED and not (tool and tool.idempotent):
            # A worker died mid-run: the tool may or may not have acted (invariant 6).
            unknown = ToolResult(
                call_id=call_id,
                outcome=Outcome.UNKNOWN,
                output="The run was interrupted; whether it took effect is unknown.",
            )
            shown = to_call(call.asked.tool, call.args, show=repr, limit=200)
            question = _escalation(
                s,
                f"{shown} was interrupted mid-run; "
                "its outcome is unknown. Please check and tell me what happened.",
            )
            return [unknown, question]
        if tool is None:  # cannot happen for calls the loop recorded itself
            return [ToolResult(call_id=call_id, outcome=Outcome.ERROR, output="unknown tool")]
        if call.status is CallStatus.READY:
            # Recorded before it runs (invariant 6); ``step`` runs it once this lands.
            return [_start(s, call)]
        # Idempotent and cut mid-run: run it again with the same key.
        return [await _run(tool, call.args, ToolContext(s.id, call_id, started_key(s.id, call_id)))]

    async def _run(self, s: ThreadState, started: ToolStarted) -> ThreadState:
        """Run the tool whose start was just recorded, and record its result."""
        call = s.calls[started.call_id]
        tool = self.agents[s.agent].all_tools[call.asked.tool]
        ctx = ToolContext(s.id, started.call_id, started.idempotency_key)
        result = await _run(tool, call.args, ctx)

        def land(current: ThreadState) -> list[Event]:
            # It has run: its result lands even if a decision or a cancel raced in,
            # unless another worker settled it meanwhile (it lost its lease to us).
            return [] if current.calls[result.call_id].result is not None else [result]

        return (await write(self.log, s.id, land, state=s, enqueue=False)).state

    # --- model turns ----------------------------------------------------------------------

    async def _model_turn(self, s: ThreadState, agent: Agent, fetched: list[Event]) -> list[Event]:
        tools = agent.all_tools
        request = ModelRequest(
            agent=agent.name,
            system=agent.prompt,
            blocks=to_blocks([*await self.log.events(s.id, version=s.version), *fetched]),
            tools=[t.spec for t in tools.values()],
        )
        try:
            turn = await self._complete(s, request)
        except ModelError as exc:
            return [ErrorEvent(message=f"model failed: {exc.message}")]
        try:
            events = self._dispatch(s, tools, turn.calls)
        except InvalidInputError as exc:
            return [ErrorEvent(message=exc.message)]
        return await self._identified(events)

    async def _identified(self, events: list[Event]) -> list[Event]:
        """``events`` with each approval's requester as the channels know them now: one
        known without an email address is looked up again (``people.identified``)."""
        asked = [e for e in events if isinstance(e, ApprovalRequested)]
        if not asked:
            return events
        requester = await identified(asked[0].requester, self.directories)
        if requester is asked[0].requester:
            return events
        return [
            e.model_copy(update={"requester": requester}) if isinstance(e, ApprovalRequested) else e
            for e in events
        ]

    async def _complete(self, s: ThreadState, request: ModelRequest) -> ModelTurn:
        """One model turn, timed, counted and traced."""
        name = self.model.name
        attributes = {THREAD_ID: s.id, "gen_ai.request.model": name, "greenlight.agent": s.agent}
        with tracing.span("model", kind=SpanKind.CLIENT, attributes=attributes) as span:
            started = time.perf_counter()
            try:
                turn = await self.model.complete(request)
            except ModelError:
                metrics.of(metrics.MODEL_ERRORS, name).inc()
                raise
            finally:
                metrics.of(metrics.MODEL_LATENCY, name).observe(time.perf_counter() - started)
            for direction, n in (("input", turn.input_tokens), ("output", turn.output_tokens)):
                if n is not None:
                    metrics.of(metrics.MODEL_TOKENS, name, direction).inc(n)
                    span.set_attribute(f"gen_ai.usage.{direction}_tokens", n)
            span.set_attribute("greenlight.tools", [c.name for c in turn.calls])
            return turn

    def _dispatch(
        self, s: ThreadState, tools: dict[str, Tool], calls: list[ModelCall]
    ) -> list[Event]:
        if not calls:
            raise InvalidInputError("the model answered without a tool call")
        names = [c.name for c in calls]
        if REPLY in names and len(calls) > 1:
            raise InvalidInputError("reply must be the only call of its turn")
        turn = ""  # a turn is named by its first call
        out: list[Event] = []
        for mc in calls:
            tool = tools.get(mc.name)
            if tool is None:
                raise InvalidInputError(f"unknown tool {mc.name!r}; use one of {sorted(tools)}")
            args = tool.validate(mc.args)
            if mc.name == REPLY:
                assert isinstance(args, Reply)
                return [AgentReply(text=args.text, final=args.final)]
            call_id = new_id("call")
            turn = turn or call_id
            call = ToolCall(
                turn=turn, call_id=call_id, tool=mc.name, args=args.model_dump(mode="json")
            )
            out.append(call)
            if isinstance(args, AskHuman):
                out.append(self._question(s, call, args))
            elif tool.approval.is_required(args):
                out.append(self._approval(s, tool, call))
        return out

    def _question(self, s: ThreadState, call: ToolCall, q: AskHuman) -> HumanQuestion:
        return HumanQuestion(
            at=self.clock.now(),  # its reply tokens live from here
            request_id=new_request_id(s.id),
            call_id=call.call_id,
            question=q.question,
            context=q.context,
            urgency=Urgency(q.urgency),
            format=AnswerFormat(q.format),
            choices=q.choices,
            answer_schema=q.answer_schema,
        )

    def _approval(self, s: ThreadState, tool: Tool, call: ToolCall) -> ApprovalRequested:
        request_id = new_request_id(s.id)
        for name in self.groups.empty_in(tool.approval.approvers):
            log.warning("request %s: %s is empty: only admins may decide", request_id, name)
        return to_approval(
            tool.approval,
            call,
            groups=self.groups,
            request_id=request_id,
            requester=s.last_user or SYSTEM,
            now=self.clock.now(),
        )


def _start(s: ThreadState, call: Call) -> ToolStarted:
    key = started_key(s.id, call.asked.call_id)
    return ToolStarted(call_id=call.asked.call_id, idempotency_key=key, args=call.args)


def _due(opened: list[Request], now: float) -> Iterator[tuple[Request, float | None]]:
    """The ``opened`` requests' timers due at ``now``: ``(request, None)`` for an expiry,
    and ``(request, t)`` for each reminder due at ``t`` of a request not expired."""
    for req in opened:
        if req.expires_at is not None and req.expires_at <= now:
            yield req, None
        elif isinstance(req.asked, ApprovalRequested):
            for at in req.asked.remind_at:
                if at <= now and at not in req.reminded:
                    yield req, at


async def _run(tool: Tool, raw: dict[str, Any], ctx: ToolContext) -> ToolResult:
    attributes = {
        THREAD_ID: ctx.thread_id,
        "greenlight.tool": tool.name,
        "greenlight.call_id": ctx.call_id,
    }
    with tracing.span(f"tool {tool.name}", attributes=attributes) as span:
        result = await _run_traced(tool, raw, ctx)
        span.set_attribute("greenlight.outcome", result.outcome.value)
    metrics.of(metrics.TOOL_RUNS, tool.name, result.outcome.value).inc()
    return result


async def _run_traced(tool: Tool, raw: dict[str, Any], ctx: ToolContext) -> ToolResult:
    try:
        output = await tool.run(tool.validate(raw), ctx)
    except GreenlightError as exc:
        return ToolResult(call_id=ctx.call_id, outcome=Outcome.ERROR, output=exc.message)
    except Exception as exc:
        log.warning("tool %s failed in %s: %s", tool.name, ctx.thread_id, redact_urls(repr(exc)))
        return ToolResult(call_id=ctx.call_id, outcome=Outcome.ERROR, output=_said(exc))
    return ToolResult(call_id=ctx.call_id, outcome=Outcome.OK, output=output)


def _said(exc: Exception) -> str:
    """What an exception says, for the model and for people (its type and text): any URL in
    it cut to scheme, host and port, since it may carry a password or a token."""
    return redact_urls(f"{type(exc).__name__}: {exc}")


def _escalation(s: ThreadState, why: str) -> HumanQuestion:
    """Greenlight itself asks a human, instead of looping (factor 9)."""
    return HumanQuestion(
        request_id=new_request_id(s.id),
        call_id=None,
        question=f"The {s.agent} agent needs help: {why}. How should it proceed?",
        context=s.last_error,
        urgency=Urgency.HIGH,
    )
