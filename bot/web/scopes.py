"""Who is calling, and what its token may do: every API route declares its scopes.

Three scopes (``bot.storage.tokens``):

- ``admin``: everything, and deciding on behalf of a named person (the CLI's
  ``--as``). ``API_TOKEN`` (or the generated ``DATA_DIR/api_token``) is one.
- ``agent``: creates threads, approvals and questions, and reads what it created.
  It is recorded as their creator and requester (``Actor(channel="agent", id=<token
  name>)``), which is how "its own" is told; it never decides or answers
  (invariant 9: an agent's credentials can create requests but never decide them).
- ``approver``: bound to one identity; decides and answers only as that identity,
  and reads the requests that identity may decide.

A route declares its scopes with ``dependencies=[scope("agent", "admin")]``; they
show in the OpenAPI document as the bearer scheme's scopes. A missing, unknown or
revoked token is a 401; a known token without the scope a 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from bot.domain.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnauthorizedError,
)
from bot.domain.events import Actor, HumanQuestion
from bot.domain.policy import is_allowed, may_answer
from bot.domain.reducer import Request as HumanRequest
from bot.domain.reducer import ThreadState
from bot.runtime import Runtime
from bot.storage.tokens import Scope, Tokens

ADMIN_TOKEN_NAME = "API_TOKEN"
"""The name the configured admin token goes by in logs and errors."""

BEARER = "HTTPBearer"
"""The name of the one security scheme in the OpenAPI document."""
BEARER_DESCRIPTION = (
    "A token, sent as `Authorization: Bearer <token>`: API_TOKEN (scope admin) or one"
    " made with `greenlight tokens create` (scope admin, agent or approver). Each"
    " operation lists the scopes it accepts."
)


@dataclass(frozen=True)
class Caller:
    """The holder of the token a request came with."""

    name: str
    """The token's name (``API_TOKEN`` for the configured one)."""
    scope: Scope
    identity: str | None = None
    """For an approver: the one person it decides as."""

    def as_agent(self) -> Actor:
        """The agent as the creator and requester of what it creates."""
        return Actor(channel="agent", id=self.name)

    def owns(self, state: ThreadState) -> bool:
        """Whether an agent created this thread (with a token of this name)."""
        made = state.created_by
        return made is not None and (made.channel, made.id) == ("agent", self.name)

    def may_read(self, state: ThreadState, req: HumanRequest | None = None) -> bool:
        """Admins read everything; an agent what it created; an approver the requests it
        may decide or answer (open or closed), never whole threads."""
        if self.scope == "admin":
            return True
        if self.scope == "agent":
            return self.owns(state)
        return req is not None and self.identity is not None and is_asked(req, self.identity)

    def check_reads(self, state: ThreadState, req: HumanRequest | None = None) -> None:
        """Raise NotFoundError (as for an id that does not exist) unless ``may_read``."""
        if not self.may_read(state, req):
            what = f"request {req.id!r}" if req is not None else f"thread {state.id!r}"
            raise NotFoundError(f"no {what} for token {self.name!r}")

    def decider(self, by: str | None) -> str:
        """Who a decision or answer is recorded as: ``by``, checked against the token.

        An admin decides on behalf of whoever ``by`` names; an approver only as its
        identity (``by`` may be left out). Agents never reach here (their scope is refused).
        """
        if self.scope == "approver":
            if by is not None and by.strip() != self.identity:
                raise ForbiddenError(
                    f"token {self.name!r} decides only as {self.identity!r}, not as {by!r}",
                    identity=self.identity,
                )
            return self.identity or ""
        if self.scope != "admin":
            raise ForbiddenError(f"token {self.name!r} (scope {self.scope}) may not decide")
        if by is None:
            raise InvalidInputError("an admin token decides on behalf of someone: give `by`")
        return by


def is_asked(req: HumanRequest, identity: str) -> bool:
    """Whether ``identity`` is among the people ``req`` asks (approvers or answerers)."""
    actor = Actor(channel="api", id=identity)
    if isinstance(req.asked, HumanQuestion):
        return may_answer(actor, req.asked.answerers)
    return is_allowed(actor, req.approvers)


async def caller(request: Request) -> Caller:
    """The caller of this request, from its bearer token; 401 if there is none we know.

    Found once per request: the route's scope check finds it, the endpoint reads it
    (``caller_of``).
    """
    found: Caller | None = request.scope.get(_CALLER)
    if found is None:
        found = request.scope[_CALLER] = await _authenticate(request)
    return found


_CALLER = "greenlight.caller"
"""Where a request's ``Caller`` is kept in its ASGI scope once found."""


def caller_of(request: Request) -> Caller:
    """The caller the route's scope check found.

    Read by each endpoint rather than given by a dependency of its own: FastAPI spends
    about 100 k instructions solving each dependency of every request, several times what
    most endpoints do. Only after ``scope`` ran: every API route declares one
    (``create_app`` checks).
    """
    found: Caller | None = request.scope.get(_CALLER)
    if found is None:  # never a silent "anyone": the route declares no scope
        raise RuntimeError(f"{request.method} {_template(request)} checked no token scope")
    return found


async def _authenticate(request: Request) -> Caller:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("missing bearer token (Authorization: Bearer …)")
    admin: str | None = request.app.state.api_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Caller(ADMIN_TOKEN_NAME, "admin")
    rt: Runtime = request.app.state.runtime
    tokens: Tokens = request.app.state.tokens
    found = await tokens.use(token, now=rt.clock.now())
    if found is None:
        raise UnauthorizedError("unknown or revoked bearer token (Authorization: Bearer …)")
    return Caller(found.name, found.scope, found.identity)


class _Scoped(HTTPBearer):
    """The bearer scheme of the routes that take ``scopes``: the caller, if it has one.

    One dependency does both jobs: as an ``HTTPBearer`` it puts the scheme and the
    scopes in the OpenAPI document, and when called it authenticates and checks the
    scope (each dependency FastAPI solves costs CPU on every request).
    """

    def __init__(self, scopes: tuple[Scope, ...]) -> None:
        super().__init__(auto_error=False, scheme_name=BEARER, description=BEARER_DESCRIPTION)
        self.scopes = scopes
        """Read by ``scopes_of``: the app's check and the routes' tests."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        who = await caller(request)
        if who.scope not in self.scopes:
            raise ForbiddenError(
                f"token {who.name!r} has scope {who.scope};"
                f" {request.method} {_template(request)} needs {' or '.join(self.scopes)}",
                scope=who.scope,
                needs=list(self.scopes),
            )
        return who


def scope(*allowed: Scope) -> Any:
    """A dependency that lets through tokens with one of ``allowed`` scopes: 401 without a
    token we know, 403 with another scope. The scopes show in the OpenAPI document."""
    return Security(_Scoped(allowed), scopes=list(allowed))


def scopes_of(dependency: Any) -> tuple[Scope, ...] | None:
    """The scopes a dependency made by ``scope`` lets through; None for any other."""
    found: tuple[Scope, ...] | None = getattr(dependency, "scopes", None)
    return found


def _template(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", request.url.path))
