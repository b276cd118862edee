"""The pure reducer: a thread's state is a fold of its events (factors 5 and 12).

Nothing here does I/O. ``reduce(state, event)`` returns a new state;
``fold(events)`` builds one from a whole log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from bot.domain.events import (
    Actor,
    AgentChosen,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ContextFetched,
    Decision,
    DeliveryFailed,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    OnExpiry,
    Origin,
    Paused,
    Reminded,
    Resumed,
    ThreadCreated,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)

_T = TypeVar("_T")


class Status(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HUMAN = "awaiting_human"
    WAITING_FOR_USER = "waiting_for_user"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RequestStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    ANSWERED = "answered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class CallStatus(StrEnum):
    AWAITING_HUMAN = "awaiting_human"
    READY = "ready"
    REJECTED = "rejected"
    STARTED = "started"
    DONE = "done"


_PENDING = frozenset({CallStatus.READY, CallStatus.REJECTED, CallStatus.STARTED})
"""Call statuses the worker must act on (``ThreadState.pending_calls``)."""


@dataclass
class Request:
    """An approval or a question put to humans, and what became of it."""

    asked: ApprovalRequested | HumanQuestion
    status: RequestStatus = RequestStatus.OPEN
    approvers: list[str] = field(default_factory=list)
    expires_at: float | None = None
    args: dict[str, object] | None = None
    """The arguments now up for approval (edited ones replace the asked ones)."""
    args_hash: str | None = None
    votes: list[ApprovalDecision] = field(default_factory=list)
    reminded: set[float] = field(default_factory=set)
    """Reminder times done with: reminded, or past when the request was escalated."""
    closed_by: list[Actor] = field(default_factory=list)
    closed_at: float | None = None
    reason: str | None = None
    answer: str | None = None

    @property
    def id(self) -> str:
        return self.asked.request_id

    @property
    def kind(self) -> str:
        return "approval" if isinstance(self.asked, ApprovalRequested) else "question"

    @property
    def is_open(self) -> bool:
        return self.status is RequestStatus.OPEN

    @property
    def arguments(self) -> dict[str, object]:
        """The arguments up for approval: those asked, or an approver's edit of them,
        which may be ``{}`` (a question's: none)."""
        if self.args is not None:
            return self.args
        return self.asked.args if isinstance(self.asked, ApprovalRequested) else {}

    def approvals(self) -> list[ApprovalDecision]:
        """Approvals that count: for the current arguments, one per person."""
        seen: set[str] = set()
        counted = []
        for vote in self.votes:
            key = f"{vote.by.channel}:{vote.by.id}"
            counts = vote.decision is Decision.APPROVE and vote.args_hash == self.args_hash
            if counts and key not in seen:
                seen.add(key)
                counted.append(vote)
        return counted

    def next_due(self) -> float | None:
        if not self.is_open:
            return None
        due = [t for t in self._reminders() if t not in self.reminded]
        if self.expires_at is not None:
            due.append(self.expires_at)
        return min(due, default=None)

    def _reminders(self) -> list[float]:
        if isinstance(self.asked, ApprovalRequested):
            return self.asked.remind_at
        return []


@dataclass
class Call:
    """One tool call of the model and how far it got."""

    asked: ToolCall
    status: CallStatus = CallStatus.READY
    args: dict[str, object] = field(default_factory=dict)
    request_id: str | None = None
    started: ToolStarted | None = None
    result: ToolResult | None = None


@dataclass
class ThreadState:
    """Everything derived from a thread's events."""

    id: str
    version: int = 0
    agent: str = ""
    hosted: bool = True
    """False for a request from an agent that runs elsewhere: nothing here steps or runs it."""
    origin: Origin | None = None
    created_by: Actor | None = None
    last_user: Actor | None = None
    """Who spoke last: the requester of the approvals that follow."""
    created_at: float = 0.0
    updated_at: float = 0.0
    requests: dict[str, Request] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    awaiting_model: bool = False
    """True when the next step is a model turn."""
    turns_since_input: int = 0
    consecutive_errors: int = 0
    last_hash: str | None = None
    """The hash of the last stored event, which the next one links to (set by the thread
    log, which sees events as stored; ``bot.domain.audit``)."""
    last_digest: str | None = None
    """The SHA-1 (hex) of the last event as stored: an append checks the log still ends
    with it (set by the thread log, which sees events as stored)."""
    prefetched: bool = False
    paused: bool = False
    cancelled: bool = False
    failed: bool = False
    last_reply: AgentReply | None = None
    last_error: str | None = None
    failed_deliveries: list[DeliveryFailed] = field(default_factory=list)
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """What ``status``, ``open_requests`` and ``pending_calls`` read (``_derive``), found
    once per state: they are asked for several times per write and step. Empty in a state
    being changed (``clone``, ``fold``): applying an event never asks for them."""

    @property
    def status(self) -> Status:
        found: Status = (self._memo or self._derive())["status"]
        return found

    @property
    def exists(self) -> bool:
        return self.version > 0

    def open_requests(self) -> list[Request]:
        return list((self._memo or self._derive())["open"])

    def pending_calls(self) -> list[Call]:
        """Calls the worker must act on: ready to run, rejected, or cut mid-run (never those
        of an agent that runs elsewhere: it runs them itself)."""
        return list((self._memo or self._derive())["pending"])

    def _derive(self) -> dict[str, Any]:
        """Fill the memo (empty until the state is first asked: ``self._memo or ...``)."""
        opened = tuple([r for r in self.requests.values() if r.status is RequestStatus.OPEN])
        pending = tuple([c for c in self.calls.values() if c.status in _PENDING])
        self._memo = {
            "open": opened,
            "pending": pending if self.hosted else (),
            "status": self._status(opened, pending),
        }
        return self._memo

    def _status(self, opened: tuple[Request, ...], pending: tuple[Call, ...]) -> Status:
        if self.cancelled:
            return Status.CANCELLED
        if self.failed:
            return Status.FAILED
        if self.paused:
            return Status.PAUSED
        for r in opened:
            if isinstance(r.asked, ApprovalRequested):
                return Status.AWAITING_APPROVAL
        if opened:
            return Status.AWAITING_HUMAN
        if not self.hosted:  # its request is closed: the agent elsewhere takes it from here
            return Status.DONE
        if self.awaiting_model or pending:
            return Status.RUNNING
        if self.last_reply is not None:
            return Status.DONE if self.last_reply.final else Status.WAITING_FOR_USER
        return Status.RUNNING if self.version else Status.WAITING_FOR_USER

    def next_due(self) -> float | None:
        """When a timer (expiry, reminder) next needs this thread.

        None while paused or failed: the loop does nothing then, so a due timer
        would only requeue the thread on every sweep. Resuming re-arms it.
        """
        if self.paused or self.failed or self.cancelled:
            return None
        due = [d for r in (self._memo or self._derive())["open"] if (d := r.next_due()) is not None]
        return min(due, default=None)

    def clone(self) -> ThreadState:
        """A copy to change: requests and calls are shared until one is changed
        (``_request`` and ``_call`` copy the one an event touches)."""
        new = _shallow(self)
        new.requests = dict(self.requests)
        new.calls = dict(self.calls)
        new._memo = {}
        return new


def reduce(state: ThreadState, *events: Event) -> ThreadState:
    """Return the state after ``events``, in order; ``state`` is left as it was."""
    new = state.clone()
    for event in events:
        _change(new, event)
    return new


def fold(thread_id: str, events: list[Event]) -> ThreadState:
    """The state of a thread from its whole log."""
    state = ThreadState(id=thread_id)
    for event in events:
        _change(state, event)
    return state


def _change(s: ThreadState, e: Event) -> None:
    """Apply ``e`` to ``s``. Neither this nor what it calls asks for ``status``,
    ``open_requests`` or ``pending_calls``: what they found before the event would be kept
    (``_memo``)."""
    s.version += 1
    s.updated_at = e.at
    # Looked up by the event's class: a ``match`` on pydantic classes pays an
    # ``isinstance`` (an ABC check, microseconds) for every case before the right one.
    _CHANGES[type(e)](s, e)


def _created(s: ThreadState, e: ThreadCreated) -> None:
    s.agent, s.origin, s.created_by, s.created_at = e.agent, e.origin, e.by, e.at
    s.hosted = e.hosted
    s.last_user = e.by


def _agent_chosen(s: ThreadState, e: AgentChosen) -> None:
    s.agent = e.agent


def _user_message(s: ThreadState, e: UserMessage) -> None:
    s.last_user = e.by
    s.awaiting_model = True
    s.turns_since_input = 0
    s.last_reply = None


def _tool_call(s: ThreadState, e: ToolCall) -> None:
    s.calls[e.call_id] = Call(asked=e, args=dict(e.args))
    s.awaiting_model = False
    if not _turn_counted(s, e.turn):
        s.turns_since_input += 1


def _approval_requested(s: ThreadState, e: ApprovalRequested) -> None:
    s.requests[e.request_id] = Request(
        asked=e,
        approvers=list(e.approvers),
        expires_at=e.expires_at,
        args=dict(e.args),
        args_hash=e.args_hash,
    )
    _call_waits(s, e.call_id, e.request_id)


def _human_question(s: ThreadState, e: HumanQuestion) -> None:
    s.requests[e.request_id] = Request(asked=e, expires_at=e.expires_at)
    if e.call_id:
        _call_waits(s, e.call_id, e.request_id)
    s.awaiting_model = False


def _human_answer(s: ThreadState, e: HumanAnswer) -> None:
    req = _request(s, e.request_id)
    _close(req, RequestStatus.ANSWERED, e.by, e.at)
    req.answer = e.text
    if (call_id := req.asked.call_id) and call_id in s.calls:
        _call(s, call_id).status = CallStatus.DONE
    # A person answered: the streak of errors ends here, as the context shows it.
    s.consecutive_errors, s.last_error = 0, None
    s.turns_since_input = 0
    _maybe_await_model(s)


def _tool_started(s: ThreadState, e: ToolStarted) -> None:
    call = _call(s, e.call_id)
    call.status, call.started = CallStatus.STARTED, e


def _tool_result(s: ThreadState, e: ToolResult) -> None:
    call = _call(s, e.call_id)
    call.status, call.result = CallStatus.DONE, e
    if e.outcome == "error":
        s.consecutive_errors += 1
        s.last_error = str(e.output)
    else:  # done, rejected or unknown: information, not an error (the context agrees)
        s.consecutive_errors = 0
        s.last_error = None
    _maybe_await_model(s)


def _context_fetched(s: ThreadState, e: ContextFetched) -> None:
    s.prefetched = True


def _agent_reply(s: ThreadState, e: AgentReply) -> None:
    s.last_reply = e
    s.awaiting_model = False
    s.turns_since_input += 1
    s.consecutive_errors, s.last_error = 0, None  # a success, as the context shows it


def _error(s: ThreadState, e: ErrorEvent) -> None:
    s.consecutive_errors += 1
    s.last_error = e.message
    if e.fatal:
        s.failed = True


def _paused(s: ThreadState, e: Paused) -> None:
    s.paused = True


def _resumed(s: ThreadState, e: Resumed) -> None:
    if s.failed:
        s.failed, s.awaiting_model, s.consecutive_errors = False, True, 0
    s.paused = False


def _cancelled(s: ThreadState, e: Cancelled) -> None:
    s.cancelled = True
    s.awaiting_model = False
    for req in list(s.requests.values()):
        if req.status is RequestStatus.OPEN:
            _close(_request(s, req.id), RequestStatus.CANCELLED, e.by, e.at)
    for call in list(s.calls.values()) if s.hosted else ():
        if call.status in _PENDING:
            _call(s, call.asked.call_id).status = CallStatus.DONE


def _expired(s: ThreadState, e: Expired) -> None:
    req = _request(s, e.request_id)
    _close(req, RequestStatus.EXPIRED, None, e.at)
    req.reason = "expired"
    if req.kind == "approval":
        _call(s, req.asked.call_id or "").status = CallStatus.REJECTED
    elif (call_id := req.asked.call_id) and call_id in s.calls:
        _call(s, call_id).status = CallStatus.DONE
        _maybe_await_model(s)
    elif s.hosted:
        s.failed = True  # nobody answered Greenlight's own escalation


def _escalated(s: ThreadState, e: Escalated) -> None:
    req = _request(s, e.request_id)
    req.approvers = list(e.approvers)
    req.expires_at = e.expires_at
    # A fresh prompt to others: a reminder the first approvers missed is not sent after it.
    req.reminded.update(req._reminders())


def _reminded(s: ThreadState, e: Reminded) -> None:
    _request(s, e.request_id).reminded.add(e.due)


def _delivery_failed(s: ThreadState, e: DeliveryFailed) -> None:
    s.failed_deliveries = [*s.failed_deliveries, e]


def _turn_counted(s: ThreadState, turn: str) -> bool:
    return sum(1 for c in s.calls.values() if c.asked.turn == turn) > 1


def _call_waits(s: ThreadState, call_id: str, request_id: str) -> None:
    call = _call(s, call_id)
    call.status, call.request_id = CallStatus.AWAITING_HUMAN, request_id


def _apply_vote(s: ThreadState, e: ApprovalDecision) -> None:
    req = _request(s, e.request_id)
    req.votes.append(e)
    if e.edited_args is not None:
        req.args, req.args_hash = dict(e.edited_args), e.args_hash
    call = _call(s, req.asked.call_id or "")
    if e.decision is Decision.REJECT:
        _close(req, RequestStatus.REJECTED, e.by, e.at)
        req.reason = e.reason
        call.status = CallStatus.REJECTED
        return
    approvals = req.approvals()
    needed = req.asked.min_approvals if isinstance(req.asked, ApprovalRequested) else 1
    if len(approvals) >= needed:
        req.status, req.closed_at = RequestStatus.APPROVED, e.at
        req.closed_by = [v.by for v in approvals]
        req.reason = e.reason
        call.status, call.args = CallStatus.READY, dict(req.arguments)


_CHANGES: dict[type[Event], Callable[[ThreadState, Any], None]] = {
    ThreadCreated: _created,
    AgentChosen: _agent_chosen,
    UserMessage: _user_message,
    ToolCall: _tool_call,
    ApprovalRequested: _approval_requested,
    ApprovalDecision: _apply_vote,
    HumanQuestion: _human_question,
    HumanAnswer: _human_answer,
    ToolStarted: _tool_started,
    ToolResult: _tool_result,
    ContextFetched: _context_fetched,
    AgentReply: _agent_reply,
    ErrorEvent: _error,
    Paused: _paused,
    Resumed: _resumed,
    Cancelled: _cancelled,
    Expired: _expired,
    Escalated: _escalated,
    Reminded: _reminded,
    DeliveryFailed: _delivery_failed,
}
"""How each kind of event changes a state (``_change``): every event of the union has one."""


def _request(s: ThreadState, request_id: str) -> Request:
    """The request, copied into ``s`` so changing it leaves earlier states as they were."""
    req = _shallow(s.requests[request_id])
    req.votes, req.reminded, req.closed_by = list(req.votes), set(req.reminded), list(req.closed_by)
    s.requests[request_id] = req
    return req


def _call(s: ThreadState, call_id: str) -> Call:
    """The call, copied into ``s`` so changing it leaves earlier states as they were."""
    call = s.calls[call_id] = _shallow(s.calls[call_id])
    return call


def _shallow(obj: _T) -> _T:
    """A shallow copy of a dataclass instance, without ``copy.copy``'s generic machinery.
    Its ``__dict__`` a copy of the other's, whole: half the instructions of filling a new
    one key by key (4,700 against 9,600 for a state), and each step copies a few."""
    new: _T = object.__new__(type(obj))
    new.__dict__ = obj.__dict__.copy()
    return new


def _close(req: Request, status: RequestStatus, by: Actor | None, at: float) -> None:
    req.status, req.closed_at = status, at
    if by is not None:
        req.closed_by = [by]


def _maybe_await_model(s: ThreadState) -> None:
    if s.hosted and not s.cancelled and all(c.status is CallStatus.DONE for c in s.calls.values()):
        s.awaiting_model = True


def is_expiry_action_escalate(req: Request) -> bool:
    """True when an expiring approval should go to other approvers, not be rejected."""
    return (
        isinstance(req.asked, ApprovalRequested)
        and req.asked.on_expiry is OnExpiry.ESCALATE
        and bool(req.asked.escalate_to)
        and req.approvers != req.asked.escalate_to
    )
