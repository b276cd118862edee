"""The REST API's request and response bodies."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bot.domain.events import ApprovalRequested, Event
from bot.domain.limits import MAX_TEXT
from bot.domain.reducer import Request, ThreadState

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateThread(_In):
    agent: str = Field(examples=["deploy"])
    text: str = Field(max_length=MAX_TEXT, examples=["deploy api 1.5.0 to production"])
    user: str = "api"
    callback_url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://",
        description="Where to POST this thread's events (http or https).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class PostMessage(_In):
    text: str = Field(max_length=MAX_TEXT)
    user: str = "api"


class DecisionIn(_In):
    decision: Literal["approve", "reject"]
    by: str | None = Field(
        None,
        description="Who decides; an approver token's identity when left out."
        " An admin token must name someone.",
    )
    reason: str | None = Field(
        None, max_length=MAX_TEXT, description="Why; a rejection's reason reaches the agent."
    )
    edited_args: dict[str, Any] | None = None
    args_hash: str | None = Field(
        None, description="The args_hash you were shown; refused if the arguments changed since."
    )


class AnswerIn(_In):
    text: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="The answer; for a question with an answer_schema, JSON matching it.",
    )
    choice: str | None = Field(None, max_length=MAX_TEXT)
    by: str | None = Field(
        None,
        description="Who answers; an approver token's identity when left out."
        " An admin token must name someone.",
    )


class ControlIn(_In):
    by: str = "api"
    reason: str | None = Field(None, max_length=MAX_TEXT)


class ActorOut(BaseModel):
    channel: str
    id: str
    name: str | None = None


class RequestOut(BaseModel):
    id: str
    thread_id: str
    kind: Literal["approval", "question"]
    status: str
    created_at: float
    expires_at: float | None
    tool: str | None = None
    args: dict[str, Any] | None = None
    args_hash: str | None = None
    requester: ActorOut | None = None
    approvers: list[str] = Field(default_factory=list)
    min_approvals: int = 1
    approvals: list[ActorOut] = Field(default_factory=list)
    question: str | None = None
    choices: list[str] = Field(default_factory=list)
    answer_schema: dict[str, Any] | None = Field(
        None, description="A question's JSON Schema: answer with JSON matching it."
    )
    closed_by: list[ActorOut] = Field(default_factory=list)
    closed_at: float | None = None
    reason: str | None = None
    answer: str | None = None

    @classmethod
    def from_request(cls, thread_id: str, r: Request) -> RequestOut:
        a = r.asked
        common: dict[str, Any] = {
            "id": r.id,
            "thread_id": thread_id,
            "kind": r.kind,
            "status": r.status.value,
            "created_at": a.at,
            "expires_at": r.expires_at,
            "reason": r.reason,
            "answer": r.answer,
            "closed_at": r.closed_at,
            "closed_by": [_actor(x) for x in r.closed_by],
        }
        if isinstance(a, ApprovalRequested):
            return cls(
                **common,
                tool=a.tool,
                args=r.args,
                args_hash=r.args_hash,
                requester=_actor(a.requester),
                approvers=r.approvers,
                min_approvals=a.min_approvals,
                approvals=[_actor(v.by) for v in r.approvals()],
            )
        return cls(**common, question=a.question, choices=a.choices, answer_schema=a.answer_schema)


class ThreadOut(BaseModel):
    id: str
    agent: str
    status: str
    version: int
    created_at: float
    updated_at: float
    open_requests: list[RequestOut]
    last_reply: str | None = None
    events: list[dict[str, Any]] | None = None

    @classmethod
    def from_state(cls, s: ThreadState, events: list[Event] | None = None) -> ThreadOut:
        return cls(
            id=s.id,
            agent=s.agent,
            status=s.status.value,
            version=s.version,
            created_at=s.created_at,
            updated_at=s.updated_at,
            open_requests=[RequestOut.from_request(s.id, r) for r in s.open_requests()],
            last_reply=s.last_reply.text if s.last_reply else None,
            events=[e.model_dump(mode="json") for e in events] if events is not None else None,
        )


class ThreadSummary(BaseModel):
    id: str
    agent: str
    status: str
    version: int
    updated_at: float


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class FieldErrorOut(BaseModel):
    field: str
    error: str


class ErrorOut(BaseModel):
    """Every error answer: a stable code, words for people, sometimes more fields."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(examples=["not_found"])
    detail: str
    errors: list[FieldErrorOut] | None = Field(
        None, description="With invalid_input from validation: each field and what is wrong."
    )


_WHY = {
    400: "the body could not be read: not JSON or UTF-8, nested too deep, a number too large",
    401: "missing or wrong credentials",
    403: "this person may not do this (not an approver, their own request)",
    404: "no such thread or request",
    409: "the thread or request changed: closed, cancelled, arguments edited since",
    413: "the body is too large",
    422: "the input failed validation; `errors` names each field",
    503: "Redis is unavailable; retry after `Retry-After` seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with the one error body."""
    return {s: {"model": ErrorOut, "description": _WHY[s]} for s in statuses}


def _actor(a: Any) -> ActorOut:
    return ActorOut(channel=a.channel, id=a.id, name=a.name)
