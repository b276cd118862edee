"""The typed events a thread is made of: the one source of truth (factor 5).

Every event is a pydantic model tagged by ``type``; ``Event`` is their
discriminated union and ``EVENTS`` round-trips one event to and from JSON.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from functools import cached_property, partial
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from bot.domain import ids
from bot.domain.hashing import chain_hash, sha256

SCHEMA_VERSION = 1
"""The schema events are written in now. An event that does not say its ``v`` is of
version 1 (``to_json`` leaves a 1 out), whatever this becomes later."""


def args_hash(args: Mapping[str, Any]) -> str:
    """A short stable hash of tool arguments, binding a decision to what was shown.

    Never change it: an approval request whose hash is this one of its arguments is
    stored without it (``to_json``), and read back by computing it again.
    """
    return sha256(_CANONICAL.encode(args).encode()).hex()[:16]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""What ``args_hash`` hashes (as ``json.dumps`` with these options, built once)."""


def stored_id(event_hash: str) -> str:
    """The id of an event stored without one, from its hash as stored (``chain_hash``):
    as long as a random one (``new_id``), and unique as the hash is (a thread's first
    event links to its thread, ``bot.domain.audit.anchor``, so no two events are alike)."""
    return f"ev_{event_hash[:14]}"


def new_id(prefix: str) -> str:
    """A short random id with a readable prefix (``ev_…``, ``call_…``): 84 random bits in
    base64url (14 characters; ids made before had 80 bits, or were 20 hex digits, and
    still read)."""
    return f"{prefix}_{ids.random_token()}"


class Actor(BaseModel):
    """Who did something, and through which channel."""

    model_config = ConfigDict(frozen=True)

    channel: str
    """``api``, ``webhook``, ``slack``, ``email``, ``cli``, ``system`` or ``agent``."""
    id: str
    """The identity within that channel: a Slack user id, an address, an API user name."""
    name: str | None = None
    email: str | None = None
    groups: tuple[str, ...] = ()
    """Groups the channel vouches the actor is in (a Slack user group id ``S123``)."""
    elsewhere: tuple[str, ...] = ()
    """The same person's identities in other channels, as ``channel:id`` (``slack:U123``),
    found by a look-up the channel vouches for (a web sign-in's Slack user by email)."""

    def names(self) -> set[str]:
        """Every name a policy may use for this actor (``U123``, ``slack:U123``, an email).

        Never the display ``name``: people choose it, so it proves nothing.
        """
        found = {self.id, f"{self.channel}:{self.id}"}
        found |= {n for g in self.groups for n in (g, f"{self.channel}:{g}")}
        found |= {n for e in self.elsewhere for n in (e, e.partition(":")[2]) if n}
        if self.email:
            found |= {self.email.lower(), f"email:{self.email.lower()}"}
        return found

    def label(self) -> str:
        """A human-readable name for messages."""
        return self.name or self.email or self.id


SYSTEM = Actor(channel="system", id="greenlight")


class Urgency(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class AnswerFormat(StrEnum):
    FREE_TEXT = "free_text"
    YES_NO = "yes_no"
    CHOICES = "choices"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class OnExpiry(StrEnum):
    REJECT = "reject"
    ESCALATE = "escalate"


class Origin(BaseModel):
    """Where a thread came from, so replies go back where the human is."""

    channel: str
    conversation: str | None = None
    """The channel's own conversation key (Slack team/channel/ts, an email Message-ID)."""
    callback_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: int = 1
    """The schema version. Absent in storage means 1, forever (``to_json`` leaves a 1 out),
    so a later ``SCHEMA_VERSION`` is set on the events made, never made this default."""
    id: str = Field(default_factory=partial(new_id, "ev"))
    at: float = Field(default_factory=time.time)
    """Unix time, seconds: when it was recorded (the thread log stamps it from the one clock)."""
    prev: str | None = None
    """The hash of the event stored before it in its thread (``bot.domain.audit``), set by
    the thread log when it records the event; None for a thread's first event."""


class ThreadCreated(_Base):
    type: Literal["thread_created"] = "thread_created"
    agent: str
    origin: Origin
    by: Actor
    hosted: bool = True
    """True: the agent runs here (the loop steps it). False: an approval or a question from
    an agent that runs elsewhere (``POST /approvals``, ``POST /questions``): the loop only
    fires its timers (expiry, reminders, escalation), never calls the model for it and never
    runs its call; the agent reads the decision and acts on it itself."""


class AgentChosen(_Base):
    """The triage step chose the agent of a thread started without one (``bot.domain.triage``)."""

    type: Literal["agent_chosen"] = "agent_chosen"
    agent: str
    how: Literal["named", "only", "model"]
    """``named``: the person's words named it; ``only``: there is one; ``model``: the model
    picked it."""


class UserMessage(_Base):
    type: Literal["user_message"] = "user_message"
    text: str
    by: Actor


class ToolCall(_Base):
    """One call the model asked for; calls of one model turn share ``turn``."""

    type: Literal["tool_call"] = "tool_call"
    turn: str = ""
    """Named by the turn's first call (its ``call_id``); left out of the stored event when
    it is this call's own id, and read back as that (empty: this call's id)."""
    call_id: str
    tool: str
    args: dict[str, Any]

    @model_validator(mode="after")
    def _own_turn(self) -> ToolCall:
        if not self.turn:
            self.turn = self.call_id
        return self


class ApprovalRequested(_Base):
    type: Literal["approval_requested"] = "approval_requested"
    request_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    args_hash: str = ""
    """Hash of exactly the arguments shown to approvers; a decision must name it. Left
    empty, it is ``own_hash``: the hash of ``args``."""
    requester: Actor
    reason: str | None = None
    approvers: list[str]
    """Identities allowed to decide (empty: anyone who can reach the request)."""
    min_approvals: int = 1
    allow_self_approval: bool = False
    expires_at: float | None = None
    on_expiry: OnExpiry = OnExpiry.REJECT
    escalate_to: list[str] = Field(default_factory=list)
    remind_at: list[float] = Field(default_factory=list)
    approvals_channel: str | None = None
    risky: bool = False
    args_schema: dict[str, Any] | None = None
    """The JSON Schema approvers' edits must match (an agent that runs elsewhere gives it);
    None: edits are checked against the tool's own arguments model."""

    @model_validator(mode="after")
    def _hash_own_args(self) -> ApprovalRequested:
        if not self.args_hash:
            self.args_hash = self.own_hash
        return self

    @cached_property
    def own_hash(self) -> str:
        """``args_hash(args)``, computed once per event: ``to_json`` leaves ``args_hash`` out
        when it is this. (An event's ``args`` never change once it is made.)"""
        return args_hash(self.args)


class ApprovalDecision(_Base):
    """One approver's vote; the audit trail is these events."""

    type: Literal["approval_decision"] = "approval_decision"
    request_id: str
    decision: Decision
    by: Actor
    reason: str | None = None
    args_hash: str
    """Hash of the arguments this decision approved (the edited ones, if edited)."""
    edited_args: dict[str, Any] | None = None
    delivery: str | None = None
    """The inbound delivery key, for idempotency."""


class HumanQuestion(_Base):
    type: Literal["human_question"] = "human_question"
    request_id: str
    call_id: str | None = None
    """None when Greenlight itself asks (escalation after errors, an unknown outcome)."""
    question: str
    context: str | None = None
    urgency: Urgency = Urgency.NORMAL
    format: AnswerFormat = AnswerFormat.FREE_TEXT
    choices: list[str] = Field(default_factory=list)
    answerers: list[str] = Field(default_factory=list)
    expires_at: float | None = None
    answer_schema: dict[str, Any] | None = None
    """The JSON Schema a typed answer must match (the answer is a JSON text); None: text."""
    approvals_channel: str | None = None
    """Where a channel asks when the conversation is elsewhere (a Slack channel id); None:
    the channel's default."""


class HumanAnswer(_Base):
    type: Literal["human_answer"] = "human_answer"
    request_id: str
    text: str
    by: Actor
    delivery: str | None = None


class ToolStarted(_Base):
    """Written before a tool runs, so a crash mid-run is visible (invariant 6)."""

    type: Literal["tool_started"] = "tool_started"
    call_id: str
    idempotency_key: str
    """What the tool receives to recognise a run again: ``started_key``."""
    args: dict[str, Any]
    """The arguments it runs with: its call's, or an approver's edit of them."""


def started_key(thread_id: str, call_id: str) -> str:
    """The idempotency key a tool receives for call ``call_id`` of thread ``thread_id``:
    the same in every run of that call, whichever worker runs it."""
    return f"{thread_id}:{call_id}"


class ToolResult(_Base):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    outcome: Outcome
    output: Any = None
    """What the model sees: the tool's return value, the error, or the rejection."""


class ContextFetched(_Base):
    """Data an agent fetched before its first model call (factor 13)."""

    type: Literal["context_fetched"] = "context_fetched"
    name: str
    data: Any


class AgentReply(_Base):
    type: Literal["agent_reply"] = "agent_reply"
    text: str
    final: bool = False
    """True: the task is done. False: the agent waits for the user."""


class ErrorEvent(_Base):
    type: Literal["error"] = "error"
    message: str
    fatal: bool = False
    """True: the thread cannot go on without a human resuming it."""


class Paused(_Base):
    type: Literal["paused"] = "paused"
    by: Actor
    reason: str | None = None


class Resumed(_Base):
    type: Literal["resumed"] = "resumed"
    by: Actor


class Cancelled(_Base):
    type: Literal["cancelled"] = "cancelled"
    by: Actor
    reason: str | None = None


class Expired(_Base):
    type: Literal["expired"] = "expired"
    request_id: str


class Escalated(_Base):
    type: Literal["escalated"] = "escalated"
    request_id: str
    approvers: list[str]
    expires_at: float | None = None


class Reminded(_Base):
    type: Literal["reminded"] = "reminded"
    request_id: str
    due: float
    """The reminder time this event fulfils, so each is sent once."""


class DeliveryFailed(_Base):
    """A channel gave up delivering an event after its retries."""

    type: Literal["delivery_failed"] = "delivery_failed"
    channel: str
    event_id: str
    error: str


Event = Annotated[
    ThreadCreated
    | AgentChosen
    | UserMessage
    | ToolCall
    | ApprovalRequested
    | ApprovalDecision
    | HumanQuestion
    | HumanAnswer
    | ToolStarted
    | ToolResult
    | ContextFetched
    | AgentReply
    | ErrorEvent
    | Paused
    | Resumed
    | Cancelled
    | Expired
    | Escalated
    | Reminded
    | DeliveryFailed,
    Field(discriminator="type"),
]

EVENT: TypeAdapter[Event] = TypeAdapter(Event)
EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def to_json(event: Event, *, after: Sequence[Event] = (), thread_id: str = "") -> str:
    """Serialise one event compactly: fields at their default are left out (a thread's
    log is most of what Greenlight keeps in Redis), except ``type``, which comes first, as
    a short code (``_CODES``). ``v`` is left out while it is 1 (events stored before kept
    ``"v":1``; both read), and ``id`` always: the thread log gives the event the id its
    hash as stored makes (``stored_id``; events stored before kept a random one, and read).

    ``after``: the events stored just before it in its thread, in order (all of them, or
    the last few). What it repeats of them is left out, and ``from_log`` takes it back
    from them: ``at`` when it equals the time of the event before it; a user message's
    ``by`` and an approval request's ``requester`` when that is who spoke last
    (``_speaker``); an approval request's ``tool`` and ``args`` when they are those of
    the call it asks about, that call's id when it is the event just before, and its
    ``args_hash`` when it is that of its ``args``; a call's ``turn`` when the call names
    it (the turn's first call); a tool's start's ``args`` when they are those of its call
    (no approver edited them), and its ``idempotency_key`` when it is the one its thread
    and call make (``started_key``). Arguments count as the call's only when they are
    stored the same (``_same_args``).
    ``thread_id``: its thread, which a request id that names it is stored without
    (``.r1a2b3c4d``).

    Reading fills what is missing from the defaults, so a field's default must never
    change once events were stored with it: add a new field instead.
    """
    # Its fields read from its ``__dict__``: an attribute of a pydantic model costs several
    # times a look-up there, and this is run for every event stored.
    fields = event.__dict__
    exclude = set(_HEAD)
    if after and after[-1].__dict__["at"] == fields["at"]:
        exclude.add("at")
    # ``type(...) is``, not ``isinstance``: on a pydantic class, an ``isinstance`` that
    # fails is an ABC check (microseconds), and most events are none of these.
    if type(event) is ApprovalRequested:
        call = _call(after, event.call_id)
        if call is not None and call[0] == event.tool and _same_args(call[1], event.args):
            exclude |= _FROM_CALL
        if after and type(last := after[-1]) is ToolCall and last.call_id == event.call_id:
            exclude.add("call_id")
        if _spoke_last(after, event.requester):
            exclude.add("requester")
        if event.args_hash == event.own_hash:
            exclude.add("args_hash")
    elif type(event) is UserMessage:
        if _spoke_last(after, event.by):
            exclude.add("by")
    elif type(event) is ToolCall and event.turn == event.call_id:
        exclude.add("turn")
    elif type(event) is ToolStarted:
        if (call := _call(after, event.call_id)) is not None and _same_args(call[1], event.args):
            exclude.add("args")
        if thread_id and event.idempotency_key == started_key(thread_id, event.call_id):
            exclude.add("idempotency_key")
    # ``model_dump_json`` without its wrapper (its keyword handling costs a fifth of the dump).
    body = event.__pydantic_serializer__.to_json(
        event, exclude_defaults=True, exclude=exclude
    ).decode()
    if fields["prev"] is not None:  # the first "prev" is the event's: _Base's fields come first
        body = body.replace('"prev":', '"p":', 1)
    # Likewise the first "request_id": every event that has one declares it first. (Not
    # ``getattr``: on an event without one, that costs microseconds in pydantic.)
    request_id = fields.get("request_id")
    if thread_id and request_id and request_id.startswith(thread_id + "."):
        whole = f'"request_id":"{request_id}"'
        body = body.replace(whole, f'"request_id":"{request_id[len(thread_id) :]}"', 1)
    version = "" if fields["v"] == 1 else f',"v":{fields["v"]}'
    head = f'{{"type":"{_CODES[fields["type"]]}"{version}'
    return head + ("}" if body == "{}" else "," + body[1:])


def record(event: Event, *, after: Sequence[Event] = (), thread_id: str = "") -> tuple[str, str]:
    """``event`` as the thread log stores it (``to_json``) and the hash of that
    (``chain_hash``, which the next event links to). The event takes the id the hash
    makes, which is not stored (``stored_id``)."""
    raw = to_json(event, after=after, thread_id=thread_id)
    event_hash = chain_hash(raw)
    event.__dict__["id"] = stored_id(event_hash)  # not pydantic's checked assignment: costly
    return raw, event_hash


_HEAD = frozenset({"v", "id"})
"""The fields ``to_json`` leaves to itself: ``v``, written after ``type`` unless it is 1,
and ``id``, which is not stored (``stored_id``)."""

_CODES = {
    "thread_created": "new",
    "agent_chosen": "agent",
    "user_message": "msg",
    "tool_call": "call",
    "approval_requested": "ask",
    "approval_decision": "vote",
    "human_question": "q",
    "human_answer": "ans",
    "tool_started": "run",
    "tool_result": "result",
    "context_fetched": "ctx",
    "agent_reply": "reply",
    "error": "err",
    "paused": "pause",
    "resumed": "resume",
    "cancelled": "cancel",
    "expired": "expire",
    "escalated": "escalate",
    "reminded": "remind",
    "delivery_failed": "undelivered",
}
"""The ``type`` an event is stored under: short, and unknown to a process of the version
before, which then fails to read it instead of misreading it (it would give an event
stored without its id a random one). Never change one; a new event type adds its own."""
_TYPES = {code.encode(): name.encode() for name, code in _CODES.items()}


_FROM_CALL = {"tool", "args"}
_ASKED = b'{"type":"approval_requested"'
_STARTED = b'{"type":"tool_started"'
_SAID = b'{"type":"user_message"'
_SHORT_REQUEST = b'"request_id":".'
_LINK = re.compile(rb'^(\{"type":"\w+",(?:"v":\d+,)?(?:"id":"[^"]*",)?(?:"at":[-+.\deE]+,)?)"p":')
"""Where ``to_json`` puts the link it stores as ``p``, in the shapes stored now and before."""


def _same_args(stored: dict[str, Any], these: dict[str, Any]) -> bool:
    """Whether ``these`` arguments are stored exactly as ``stored`` ones are: Python's
    ``==`` holds between ``1``, ``1.0`` and ``True``, and between dicts in another order,
    which JSON tells apart, so the one read back in their place would not be these."""
    return stored == these and pydantic_core.to_json(stored) == pydantic_core.to_json(these)


def _call(events: Sequence[Event], call_id: str) -> tuple[str, dict[str, Any]] | None:
    """The tool and arguments of call ``call_id`` among ``events``, the latest first."""
    for event in reversed(events):
        if type(event) is ToolCall and event.call_id == call_id:
            return event.tool, event.args
    return None


def _speaker(events: Sequence[Event]) -> Actor | None:
    """Who spoke last among ``events`` (the reducer's ``last_user``): who started the
    thread or wrote in it last, the requester of the approvals the agent asks for then."""
    for event in reversed(events):
        if type(event) is UserMessage or type(event) is ThreadCreated:
            return event.by
    return None


def _spoke_last(events: Sequence[Event], actor: Actor) -> bool:
    """Whether ``actor`` is who spoke last among ``events``: mostly the very same object,
    known without pydantic's field-by-field comparison (microseconds)."""
    speaker = _speaker(events)
    return speaker is actor or speaker == actor


def stored_type(raw: str | bytes) -> str:
    """The type of a stored event, whichever shape it was stored in, without parsing it."""
    code, _ = _type_of(raw.encode() if isinstance(raw, str) else raw)
    return _TYPES.get(code, code).decode()


def _named(data: bytes) -> bytes:
    """A stored event with its type's whole name and its link under the field's name,
    ``prev``."""
    code, end = _type_of(data)
    if (name := _TYPES.get(code)) is not None:
        data = data[:_TYPE_AT] + name + data[end:]
    return _LINK.sub(rb'\1"prev":', data, count=1)


_TYPE_AT = len(b'{"type":"')


def _type_of(data: bytes) -> tuple[bytes, int]:
    """The type a stored event names (a code, or a whole name as stored before), and where
    it ends."""
    end = data.find(b'"', _TYPE_AT)
    return data[_TYPE_AT:end], end


def _with_id(event: Event, raw: str | bytes) -> Event:
    """``event`` with the id it was stored without, if it was (``stored_id``)."""
    if "id" not in event.model_fields_set:
        event.__dict__["id"] = stored_id(chain_hash(raw))
    return event


def from_log(
    raws: Sequence[str | bytes], *, before: Sequence[Event] = (), thread_id: str = ""
) -> list[Event]:
    """Parse a run of a thread's stored events, in log order, filling in what ``to_json``
    left out as repeated; ``before``: the thread's events stored before the run;
    ``thread_id``: the thread, which short request ids are read back with.

    Raises:
        ValueError: an event leaves out what the log before it does not have (a pydantic
            ``ValidationError`` for an event that does not parse).
    """
    events: list[Event] = []
    for raw in raws:
        data = _named(raw.encode() if isinstance(raw, str) else raw)
        # In a user message, the only object is ``by``: a key "by" is that one.
        # A tool's start by its type alone: its arguments may hold any key.
        if (
            data.startswith(_ASKED)
            or data.startswith(_STARTED)
            or (data.startswith(_SAID) and b'"by":' not in data)
            or _SHORT_REQUEST in data
        ):
            event = EVENT.validate_python(_filled(json.loads(data), [*before, *events], thread_id))
        else:
            event = EVENT.validate_json(data)
        if "at" not in event.model_fields_set:
            if not (events or before):
                raise ValueError(f"an event without its time follows none: {raw!r}")
            event.at = (events or before)[-1].at
        events.append(_with_id(event, raw))
    return events


def _filled(fields: dict[str, Any], before: Sequence[Event], thread_id: str) -> dict[str, Any]:
    """A stored event's fields with what ``to_json`` left out taken back from ``before``."""
    kind = fields.get("type")
    request_id = fields.get("request_id")
    if isinstance(request_id, str) and request_id.startswith("."):
        if not thread_id:
            raise ValueError(f"a short request id read without its thread: {fields!r}")
        fields["request_id"] = thread_id + request_id
    if kind == "approval_requested" and "call_id" not in fields:
        if not before or not isinstance(before[-1], ToolCall):
            raise ValueError(f"an approval request follows no call: {fields!r}")
        fields["call_id"] = before[-1].call_id
    if kind == "approval_requested" and "args" not in fields:
        call = _call(before, str(fields.get("call_id")))
        if call is None:
            raise ValueError(f"an approval request names no call of its thread: {fields!r}")
        fields["tool"], fields["args"] = call
    if kind == "tool_started":
        call_id = str(fields.get("call_id"))
        if "args" not in fields:
            call = _call(before, call_id)
            if call is None:
                raise ValueError(f"a tool's start names no call of its thread: {fields!r}")
            fields["args"] = call[1]
        if "idempotency_key" not in fields:
            if not thread_id:
                raise ValueError(f"a tool's start read without its thread: {fields!r}")
            fields["idempotency_key"] = started_key(thread_id, call_id)
    who = {"approval_requested": "requester", "user_message": "by"}.get(str(kind))
    if who is not None and who not in fields:
        speaker = _speaker(before)
        if speaker is None:
            raise ValueError(f"a {kind} names no one and no one spoke before it: {fields!r}")
        fields[who] = speaker
    return fields
