"""Approvals and questions for agents that run elsewhere: ask, then wait for the answer.

``POST /approvals`` and ``POST /questions`` open a request in a thread of its own
(``bot.engine.external``); people answer it through the usual cards, emails, CLI and
REST decision path. ``GET /approvals/{id}?wait=30`` long-polls until it is decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi import Request as HttpRequest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from bot.domain import ids
from bot.domain.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from bot.domain.events import (
    Actor,
    AnswerFormat,
    ApprovalRequested,
    Event,
    HumanQuestion,
    Origin,
    ThreadCreated,
    ToolCall,
    Urgency,
    new_id,
)
from bot.domain.ids import new_request_id
from bot.domain.limits import MAX_TEXT
from bot.domain.policy import (
    ANYONE,
    ApprovalPolicy,
    PolicySpec,
    check_policy,
    to_approval,
    who_may_approve,
)
from bot.domain.reducer import Request, RequestStatus, ThreadState
from bot.domain.validate import (
    answer_value,
    bounded,
    check,
    check_approvable,
    check_schema,
    storable,
)
from bot.engine.external import Opened, join_request, open_request, wait
from bot.engine.people import identified
from bot.runtime import Runtime
from bot.storage.openkeys import UNBOUNDED
from bot.web import callbacks
from bot.web.api import (
    IDEMPOTENCY_KEY,
    ApiRoute,
    fingerprint_of,
    idempotency_key_of,
    key_reused,
    owned_key,
    runtime_of,
)
from bot.web.schemas import ActorOut, error_responses
from bot.web.scopes import Caller, caller_of, scope

router = APIRouter(route_class=ApiRoute, responses=error_responses(400, 401, 403, 413, 422, 503))

MAX_WAIT = 60.0
"""The longest long-poll, in seconds: under the usual proxies' idle timeouts."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
AgentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Wait = Annotated[
    float,
    Query(
        alias="wait",
        ge=0,
        le=MAX_WAIT,
        description="Seconds to wait for a decision before answering that it is still open.",
    ),
]


class _Ask(BaseModel):
    """What approvals and questions share: who asks, where, and where to call back."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    agent: AgentName = "external"
    """The asking agent's name: threads are listed under it (``GET /threads?agent=``)."""
    requester: Name | None = None
    """Who asks (``api:<agent>`` when omitted): an approval never counts its vote unless the
    policy allows self-approval. ``slack:U123`` or an email address name a person."""
    context: str | None = Field(None, max_length=MAX_TEXT)
    """More for the people asked: shown under the summary or question."""
    slack_channel: str | None = Field(None, pattern=r"^[A-Z0-9]{1,40}$")
    """The Slack channel id to ask in; default SLACK_APPROVALS_CHANNEL."""
    callback_url: str | None = Field(None, pattern=r"^https?://", max_length=2000)
    """Where to POST the request's events (decided, answered, expired), signed like the
    webhook channel's callbacks and retried durably."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Kept with the thread, for the caller."""

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded(value, "metadata")


class ApprovalIn(_Ask):
    """An action an agent elsewhere wants approved before it acts."""

    tool: Name = Field(examples=["deploy"])
    """The action's name, as approvers see it."""
    arguments: dict[str, Any] = Field(default_factory=dict, examples=[{"version": "1.5.0"}])
    """The action's arguments: exactly these are approved (or edited ones)."""
    arguments_schema: dict[str, Any] | None = None
    """A JSON Schema for the arguments: approvers may then edit them, and their edits must
    match it. Without one the arguments cannot be edited."""
    summary: str = Field(min_length=1, max_length=2_000)
    """Why the agent wants to act, shown to approvers."""
    policy: PolicySpec | Name | None = None
    """Who approves and how (an object), or the name of one of APPROVAL_POLICIES; omitted:
    the one named ``default``."""
    open_key: Name | None = None
    """Names the call asked about (say, a hash of the tool and its arguments): asked again
    with the same ``open_key`` while its request is open, the answer is that request (200),
    not a new one; once it is decided, expired or cancelled, asking again opens a new
    request. An Idempotency-Key given too still finds, on a retry, the request its first
    try got, open or not."""

    @field_validator("arguments")
    @classmethod
    def _storable_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return storable(value, "arguments")  # their size: check_approvable, with its own code

    @field_validator("arguments_schema")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else bounded(value, "arguments_schema")


class QuestionIn(_Ask):
    """A question an agent elsewhere puts to people."""

    question: str = Field(min_length=1, max_length=2_000)
    format: Literal["free_text", "yes_no", "choices"] = "free_text"
    """``yes_no`` takes yes or no; ``choices`` one of ``choices``."""
    choices: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20
    )
    answer_schema: dict[str, Any] | None = None
    """A JSON Schema: the answer must be JSON matching it (a typed answer)."""
    urgency: Literal["low", "normal", "high"] = "normal"
    answerers: list[Name] = Field(default_factory=list, max_length=100)
    """Who may answer (identities or ``group:<name>``); none: anyone who can reach it."""
    expires_in: float | None = Field(None, gt=0, le=90 * 86400)
    """Seconds until the question expires unanswered; null: never."""

    @field_validator("answer_schema")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else bounded(value, "answer_schema")


class VoteOut(BaseModel):
    by: ActorOut
    decision: Literal["approve", "reject"]
    at: float
    reason: str | None
    edited: bool
    """Whether this vote approved edited arguments."""


class ApprovalOut(BaseModel):
    """An approval request and, once there is one, its decision."""

    id: str
    thread_id: str
    agent: str
    status: Literal["open", "approved", "rejected", "expired", "cancelled"]
    decision: Literal["approve", "reject"] | None
    """Set once approved or rejected; null while open, and when it expired or was cancelled."""
    tool: str
    arguments: dict[str, Any]
    """The arguments approved (or up for approval): the edited ones if an approver edited."""
    edited: bool
    args_hash: str
    summary: str | None
    requester: ActorOut
    approvers: list[str]
    min_approvals: int
    approvals: int
    """Distinct approvals of the current arguments so far (N of ``min_approvals``)."""
    votes: list[VoteOut]
    reason: str | None
    """The deciding approver's reason, or ``expired``."""
    decided_by: list[ActorOut]
    decided_at: float | None
    created_at: float
    expires_at: float | None

    @classmethod
    def from_request(cls, s: ThreadState, r: Request) -> ApprovalOut:
        a = r.asked
        assert isinstance(a, ApprovalRequested)
        decided: dict[RequestStatus, Literal["approve", "reject"]] = {
            RequestStatus.APPROVED: "approve",
            RequestStatus.REJECTED: "reject",
        }
        return cls(
            id=r.id,
            thread_id=s.id,
            agent=s.agent,
            status=r.status.value,
            decision=decided.get(r.status),
            tool=a.tool,
            arguments=dict(r.arguments),
            edited=(r.args_hash or a.args_hash) != a.args_hash,
            args_hash=r.args_hash or a.args_hash,
            summary=a.reason,
            requester=_actor(a.requester),
            approvers=r.approvers,
            min_approvals=a.min_approvals,
            approvals=len(r.approvals()),
            votes=[
                VoteOut(
                    by=_actor(v.by),
                    decision=v.decision.value,
                    at=v.at,
                    reason=v.reason,
                    edited=v.edited_args is not None,
                )
                for v in r.votes
            ],
            reason=r.reason,
            decided_by=[_actor(x) for x in r.closed_by],
            decided_at=r.closed_at,
            created_at=a.at,
            expires_at=r.expires_at,
        )


class QuestionOut(BaseModel):
    """A question and, once there is one, its answer."""

    id: str
    thread_id: str
    agent: str
    status: Literal["open", "answered", "expired", "cancelled"]
    question: str
    context: str | None
    format: str
    choices: list[str]
    answer_schema: dict[str, Any] | None
    answerers: list[str]
    answer: str | None
    """The answer as recorded: a choice as spelled, yes or no, or a typed answer's JSON."""
    value: Any = None
    """The answer as a value: true or false for yes/no, the parsed JSON of a typed answer."""
    answered_by: ActorOut | None
    answered_at: float | None
    created_at: float
    expires_at: float | None

    @classmethod
    def from_request(cls, s: ThreadState, r: Request) -> QuestionOut:
        q = r.asked
        assert isinstance(q, HumanQuestion)
        return cls(
            id=r.id,
            thread_id=s.id,
            agent=s.agent,
            status=r.status.value,
            question=q.question,
            context=q.context,
            format=q.format.value,
            choices=q.choices,
            answer_schema=q.answer_schema,
            answerers=q.answerers,
            answer=r.answer,
            value=answer_value(q, r.answer) if r.answer is not None else None,
            answered_by=_actor(r.closed_by[0]) if r.answer is not None and r.closed_by else None,
            answered_at=r.closed_at,
            created_at=q.at,
            expires_at=r.expires_at,
        )


APPROVAL_ASKS = {"tool", "arguments", "policy", "requester"}
"""What an approval's Idempotency-Key is tied to: what is approved, and who may approve it
(never its requester, unless the policy says). Another of these under a used key is a 422;
the rest may differ on a retry (a client restarted with a new summary or schema, an
``open_key`` of another MCP session): it gets the request its key made."""
QUESTION_ASKS = {"question", "format", "choices", "answer_schema", "answerers", "requester"}
"""What a question's Idempotency-Key is tied to: what is asked, and who may answer."""


# --- routes ----------------------------------------------------------------------------------


@router.post(
    "/approvals",
    dependencies=[scope("agent", "admin")],
    openapi_extra=IDEMPOTENCY_KEY,
    status_code=201,
    response_model=ApprovalOut,
    tags=["approvals"],
    responses={200: {"description": "the request a retried Idempotency-Key made"}},
)
async def ask_approval(
    request: HttpRequest,
    body: ApprovalIn,
    response: Response,
) -> ApprovalOut:
    """Ask people to approve an action an agent elsewhere wants to take.

    422 names what is wrong: an unknown policy name, approvers that resolve to nobody,
    arguments that do not match their schema; arguments too large to be approved are a
    422 with the code ``too_large``, their ``size`` and the ``limit`` in bytes of JSON.
    """
    check_approvable(body.arguments)
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    policy = _policy(rt, body)
    await callbacks.check_for(request, body.callback_url)
    if body.arguments_schema is not None:
        check_schema(body.arguments_schema, "arguments_schema")
        check(body.arguments_schema, body.arguments, "arguments do not match arguments_schema")
    requester = await identified(_requester(who, body), rt.directories)
    _check_someone_may_approve(rt, policy, requester)
    why = body.summary + (f"\n\n{body.context}" if body.context else "")

    def make(tid: str) -> list[Event]:
        call = ToolCall(call_id=new_id("call"), tool=body.tool, args=body.arguments)
        asked = to_approval(
            policy,
            call,
            groups=rt.groups,
            request_id=new_request_id(tid),
            requester=requester,
            now=rt.clock.now(),
            reason=why,
            args_schema=body.arguments_schema,
        )
        return [_created(body, requester), call, asked]

    asked = fingerprint_of(request, body, idempotency_key, APPROVAL_ASKS)
    opened = await _open(
        rt,
        who,
        idempotency_key,
        "approvals",
        make,
        response=response,
        open_key=body.open_key,
        fingerprint=asked,
    )
    return ApprovalOut.from_request(opened.thread, opened.request)


def _read_route(
    kind: Literal["approval", "question"], out: type[ApprovalOut] | type[QuestionOut], doc: str
) -> None:
    """``GET /{kind}s/{id}``: the request, long-polled with ``wait``; one of them per kind."""

    async def read(request: HttpRequest, request_id: str, wait_s: Wait = 0.0) -> Any:
        rt, who = runtime_of(request), caller_of(request)
        req, state = await _waited(rt, request_id, wait_s, kind, who)
        return out.from_request(state, req)

    read.__doc__ = doc
    router.get(
        f"/{kind}s/{{request_id}}",
        dependencies=[scope("agent", "approver", "admin")],
        response_model=out,
        tags=["approvals"],
        responses=error_responses(404),
        name=f"get_{kind}",
    )(read)


_read_route("approval", ApprovalOut, "An approval; with ``wait``, once decided or expired.")


@router.post(
    "/questions",
    dependencies=[scope("agent", "admin")],
    openapi_extra=IDEMPOTENCY_KEY,
    status_code=201,
    response_model=QuestionOut,
    tags=["approvals"],
    responses={200: {"description": "the question a retried Idempotency-Key made"}},
)
async def ask_question(
    request: HttpRequest,
    body: QuestionIn,
    response: Response,
) -> QuestionOut:
    """Ask people a question: free text, yes/no, one of some choices, or typed JSON."""
    rt, who = runtime_of(request), caller_of(request)
    idempotency_key = idempotency_key_of(request)
    if body.format == "choices" and not body.choices:
        raise InvalidInputError("format choices needs choices")
    if body.format != "choices" and body.choices:
        raise InvalidInputError("choices are for format choices")
    if body.answer_schema is not None:
        if body.format != "free_text":
            raise InvalidInputError("answer_schema is for format free_text (a typed answer)")
        check_schema(body.answer_schema, "answer_schema")
    answerers = _people(rt, body.answerers, "answerers") if body.answerers else []
    await callbacks.check_for(request, body.callback_url)
    requester = _requester(who, body)

    def make(tid: str) -> list[Event]:
        now = rt.clock.now()
        asked = HumanQuestion(
            at=now,  # its reply tokens and expiry are read from here
            request_id=new_request_id(tid),
            call_id=None,
            question=body.question,
            context=body.context,
            urgency=Urgency(body.urgency),
            format=AnswerFormat(body.format),
            choices=body.choices,
            answerers=answerers,
            expires_at=now + body.expires_in if body.expires_in else None,
            answer_schema=body.answer_schema,
            approvals_channel=body.slack_channel,
        )
        return [_created(body, requester), asked]

    asked = fingerprint_of(request, body, idempotency_key, QUESTION_ASKS)
    opened = await _open(
        rt, who, idempotency_key, "questions", make, response=response, fingerprint=asked
    )
    return QuestionOut.from_request(opened.thread, opened.request)


_read_route("question", QuestionOut, "A question; with ``wait``, once answered or expired.")


def _cancel_route(
    kind: Literal["approval", "question"], out: type[ApprovalOut] | type[QuestionOut]
) -> None:
    """``POST /{kind}s/{id}/cancel``: the agent that asked withdraws an open request."""

    async def cancel(request: HttpRequest, request_id: str) -> Any:
        rt, who = runtime_of(request), caller_of(request)
        req, state = await rt.decisions.find(request_id)
        if req.kind != kind:
            raise NotFoundError(f"no {kind} {request_id!r}", request_id=request_id)
        who.check_reads(state, req)
        if not req.is_open:
            raise ConflictError(
                f"{kind} {request_id} is {req.status.value}", status=req.status.value
            )
        await rt.inbox.control(state.id, "cancel", who.as_agent(), f"withdrawn by {who.name}")
        req, state = await rt.decisions.find(request_id)
        return out.from_request(state, req)

    cancel.__doc__ = (
        f"Withdraw an open {kind} (its thread is cancelled): by the agent that asked, or an admin."
    )
    router.post(
        f"/{kind}s/{{request_id}}/cancel",
        dependencies=[scope("agent", "admin")],
        response_model=out,
        tags=["approvals"],
        responses=error_responses(404, 409),
        name=f"cancel_{kind}",
    )(cancel)


_cancel_route("approval", ApprovalOut)
_cancel_route("question", QuestionOut)


# --- helpers ---------------------------------------------------------------------------------


async def _open(
    rt: Runtime,
    who: Caller,
    idempotency_key: str | None,
    namespace: Literal["approvals", "questions"],
    make: Callable[[str], Sequence[Event]],
    *,
    response: Response,
    open_key: str | None = None,
    fingerprint: str | None = None,
) -> Opened:
    """Open the request ``make`` builds; a retried key finds it again, and with
    ``open_key`` a call asked again joins its open request: both answer 200.

    ``fingerprint`` (what the call asks, ``fingerprint_of``) is tied to the key first."""
    key = owned_key(who, idempotency_key) if idempotency_key else None
    tid = ids.thread_id_for(namespace, key) if key else None
    if tid is not None and fingerprint is not None:
        await _claim(rt, tid, idempotency_key, fingerprint)
    kind = "approval" if namespace == "approvals" else "question"
    if open_key is None:
        opened = await open_request(rt.log, tid, make, kind=kind, archive=rt.archive)
    else:
        call = f"{namespace}\x00{owned_key(who, open_key)}"
        now = rt.clock.now()
        opened = await join_request(
            rt.log, rt.open_keys, call, make, kind=kind, thread_id=tid, now=now, archive=rt.archive
        )
    if not opened.created:
        response.status_code = 200
    return opened


async def _claim(rt: Runtime, thread_id: str, key: str | None, fingerprint: str) -> None:
    """Tie an Idempotency-Key (by the thread it names) to what its first call asked,
    before anything is opened under it: the same key sent with another body is a 422.

    Else the retry's answer is the first call's request, perhaps approved: a caller
    that reused a key for another action would take that approval for this action's.
    Kept in the open keys (``OpenKeys.swap``, which only the first call sets) as long as
    a key to a request that never expires, and whatever request the key led to: its own
    thread, or one its ``open_key`` joined.

    Raises:
        InvalidInputError: the key was first sent with another body.
    """
    held = await rt.open_keys.swap(f"print\x00{thread_id}", None, fingerprint, UNBOUNDED)
    if held != fingerprint:
        raise key_reused(key)


def to_requester(name: str | None, agent: str) -> Actor:
    """Who asks, as an actor: ``slack:U123`` a Slack user, an address an email sender."""
    name = name or f"api:{agent}"
    channel, _, rest = name.partition(":")
    if channel in ("api", "slack", "email", "cli", "webhook") and rest:
        email = rest if channel == "email" else None
        return Actor(channel=channel, id=rest, email=email)
    if "@" in name:
        return Actor(channel="api", id=name, email=name.lower())
    return Actor(channel="api", id=name)


def _requester(who: Caller, body: _Ask) -> Actor:
    """Who asks: for an agent token the agent itself (so it reads back only what it asked),
    else the named ``requester``."""
    if who.scope != "agent":
        return to_requester(body.requester, body.agent)
    if body.requester is not None and body.requester != who.name:
        raise ForbiddenError(
            f"token {who.name!r} (scope agent) asks only as itself; leave out `requester`"
        )
    return who.as_agent()


def _created(body: _Ask, requester: Actor) -> ThreadCreated:
    origin = Origin(channel="api", callback_url=body.callback_url, metadata=body.metadata)
    return ThreadCreated(agent=body.agent, origin=origin, by=requester, hosted=False)


def _policy(rt: Runtime, body: ApprovalIn) -> ApprovalPolicy:
    """The request's policy, checked like an agent's own: nobody is never "anyone"."""
    spec = body.policy if body.policy is not None else "default"
    if isinstance(spec, str):
        found = rt.policies.get(spec)
        if found is None:
            known = ", ".join(sorted(rt.policies)) or "none"
            if body.policy is None:
                raise InvalidInputError(
                    f"give a policy, or declare one named 'default' in APPROVAL_POLICIES "
                    f"(declared: {known})"
                )
            raise InvalidInputError(
                f"unknown policy {spec!r}: APPROVAL_POLICIES declares {known}", policy=spec
            )
        policy = found
    else:
        policy = spec.to_policy()
        try:
            check_policy(policy, rt.groups, "the request's policy")
        except ConfigError as exc:
            raise InvalidInputError(exc.message) from exc
    if body.slack_channel:
        policy = replace(policy, approvals_channel=body.slack_channel)
    return policy


def _check_someone_may_approve(rt: Runtime, policy: ApprovalPolicy, requester: Actor) -> None:
    """Raise unless enough people may approve a request of ``requester`` under ``policy``:
    else it could only wait until it expires (or forever).

    Raises:
        InvalidInputError: naming how many approvals the policy needs and who may give them.
    """
    approvers = rt.groups.expand(policy.approvers)
    able = who_may_approve(approvers, requester, self_approval=policy.allow_self_approval)
    if ANYONE in able or policy.min_approvals <= len(able):
        return
    message = (
        f"the policy needs {policy.min_approvals} approvals but names {len(able)}"
        f" approver(s): {', '.join(able) or 'none'}"
    )
    if able != approvers:
        message += (
            f" besides the requester, {requester.label()}, who may approve their own request"
            " only with allow_self_approval"
        )
    raise InvalidInputError(message)


def _people(rt: Runtime, names: list[str], what: str) -> list[str]:
    try:
        rt.groups.check(tuple(names), what)
    except ConfigError as exc:
        raise InvalidInputError(exc.message) from exc
    return rt.groups.expand(names)


async def _waited(
    rt: Runtime, request_id: str, seconds: float, kind: str, who: Caller
) -> tuple[Request, ThreadState]:
    req, state = await rt.decisions.find(request_id)
    if req.kind != kind:
        raise NotFoundError(f"no {kind} {request_id!r}", request_id=request_id)
    who.check_reads(state, req)  # before waiting: nobody waits on what they may not read
    return await wait(rt.decisions, request_id, seconds)


def _actor(a: Actor) -> ActorOut:
    return ActorOut(channel=a.channel, id=a.id, name=a.name)
