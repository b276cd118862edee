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

A route declares its scopes with ``dependencies=[scope("agent", "admin")]`` on a router
whose ``route_class`` is ``Scoped`` (or a subclass): the route class takes them out of
the dependencies FastAPI solves, checks the token itself before the body and parameters
are read, and shows them in the OpenAPI document as the bearer scheme's scopes.
``create_app`` refuses an API route that is not ``Scoped``. A missing, unknown or
revoked token is a 401; a known token without the scope a 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response, params
from fastapi.routing import APIRoute

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
        if self.may_read(state, req):
            return
        # Word for word what an id that does not exist gets: nothing tells the two apart.
        if req is not None:
            raise NotFoundError(f"no request {req.id!r}", request_id=req.id)
        raise NotFoundError(f"no thread {state.id!r}", thread_id=state.id)

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


_CALLER = "greenlight.caller"
"""Where a request's ``Caller`` is kept in its ASGI scope once found."""


def caller_of(request: Request) -> Caller:
    """The caller the route's scope check found.

    Read by each endpoint rather than given by a dependency of its own: FastAPI spends
    about 100 k instructions solving each dependency of every request, several times what
    most endpoints do. Only after a ``Scoped`` route's check ran: every API route is one
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


BEARER_SCHEME = {"type": "http", "description": BEARER_DESCRIPTION, "scheme": "bearer"}
"""The bearer scheme as the OpenAPI document's ``components.securitySchemes`` lists it."""


@dataclass(frozen=True)
class _Declared:
    """What ``scope`` puts among a route's dependencies: the scopes it lets through."""

    scopes: tuple[Scope, ...]

    async def __call__(self) -> None:  # only if a route that is not ``Scoped`` declares it
        raise RuntimeError("scope() is checked by Scoped routes only (bot.web.scopes)")


def scope(*allowed: Scope) -> params.Depends:
    """Let through tokens with one of ``allowed`` scopes (on a ``Scoped`` route): 401
    without a token we know, 403 with another scope."""
    return params.Depends(_Declared(allowed))


class Scoped(APIRoute):
    """A route that checks its caller's token first, then runs as FastAPI would.

    Its scopes are declared with ``scope`` among the route's (or its router's)
    dependencies, and taken out of them here: as a dependency FastAPI solved on every
    request, the check cost about 58 k instructions, 2.7 % of the web process's cycle.
    They go into the operation's ``security`` in the OpenAPI document instead, and the
    check runs in the route's handler, before the body and parameters are read.
    """

    scopes: tuple[Scope, ...]
    """Read by ``scopes_of``: the app's check and the routes' tests."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        dependencies: Sequence[params.Depends] | None = None,
        openapi_extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        given = list(dependencies or ())
        declared = [d.dependency for d in given if isinstance(d.dependency, _Declared)]
        self.scopes = tuple(s for d in declared for s in d.scopes)
        security = {"security": [{BEARER: list(self.scopes)}]} if self.scopes else {}
        super().__init__(
            path,
            endpoint,
            dependencies=[d for d in given if not isinstance(d.dependency, _Declared)],
            openapi_extra={**security, **(openapi_extra or {})} or None,
            **kwargs,
        )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        scopes = self.scopes

        async def checked(request: Request) -> Response:
            who = await _authenticate(request)
            if who.scope not in scopes:  # no scopes declared: nobody passes
                raise ForbiddenError(
                    f"token {who.name!r} has scope {who.scope};"
                    f" {request.method} {_template(request)} needs {' or '.join(scopes)}",
                    scope=who.scope,
                    needs=list(scopes),
                )
            request.scope[_CALLER] = who
            return await handle(request)

        return checked


def scopes_of(route: Any) -> tuple[Scope, ...] | None:
    """The scopes a route lets through (as included in an app, or as declared); None for a
    route that is not ``Scoped``."""
    declared = getattr(route, "original_route", route)
    return declared.scopes if isinstance(declared, Scoped) else None


def _template(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", request.url.path))
