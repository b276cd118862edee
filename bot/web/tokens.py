"""Token routes (scope admin): create a scoped token (shown once), list them, revoke one."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bot.domain.errors import InvalidInputError
from bot.storage.tokens import Scope, TokenInfo, Tokens
from bot.web.api import runtime_of
from bot.web.schemas import error_responses
from bot.web.scopes import ADMIN_TOKEN_NAME, Scoped, caller_of, scope

log = logging.getLogger(__name__)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

router = APIRouter(
    route_class=Scoped,
    tags=["tokens"],
    responses=error_responses(400, 401, 403, 422, 503),
)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=NAME, examples=["deploy-bot"])
    """Unique; the agent's name as the requester of what an agent token creates."""
    scope: Literal["admin", "agent", "approver"]
    identity: str | None = Field(None, min_length=1, max_length=200, examples=["bob"])
    """For an approver: the one person it decides as (required); for others, not allowed."""


class TokenOut(BaseModel):
    """A token as listed: never the token itself."""

    name: str
    scope: Scope
    identity: str | None
    created_at: float
    last_used_at: float | None

    @classmethod
    def from_info(cls, info: TokenInfo) -> TokenOut:
        return cls(
            name=info.name,
            scope=info.scope,
            identity=info.identity,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
        )


class NewTokenOut(TokenOut):
    token: str
    """The bearer token: shown this once, stored only as its SHA-256."""


class TokensOut(BaseModel):
    items: list[TokenOut]


def _tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


class CallerOut(BaseModel):
    """Who the token a request came with is."""

    name: str
    scope: Scope
    identity: str | None
    """An approver's identity: what its decisions record as ``by``."""


@router.get(
    "/tokens/me",
    response_model=CallerOut,
    dependencies=[scope("admin", "agent", "approver")],
)
async def whoami(request: Request) -> CallerOut:
    """The calling token's name, scope and identity (the CLI decides as an approver's)."""
    who = caller_of(request)
    return CallerOut(name=who.name, scope=who.scope, identity=who.identity)


@router.post(
    "/tokens",
    status_code=201,
    response_model=NewTokenOut,
    responses=error_responses(409),
    dependencies=[scope("admin")],
)
async def create_token(body: TokenIn, request: Request) -> NewTokenOut:
    """Make a token; the answer holds it, once. 409 if the name is taken."""
    rt = runtime_of(request)
    if body.scope == "approver" and body.identity is None:
        raise InvalidInputError("an approver token needs the identity it decides as (--as)")
    if body.scope != "approver" and body.identity is not None:
        raise InvalidInputError(f"only approver tokens have an identity, not {body.scope}")
    if body.name == ADMIN_TOKEN_NAME:
        raise InvalidInputError(f"{ADMIN_TOKEN_NAME} names the configured admin token")
    token, info = await _tokens(request).create(
        body.name, body.scope, body.identity, now=rt.clock.now()
    )
    log.info("token %s created (scope %s)", info.name, info.scope)
    return NewTokenOut(token=token, **TokenOut.from_info(info).model_dump())


@router.get("/tokens", response_model=TokensOut, dependencies=[scope("admin")])
async def list_tokens(request: Request) -> TokensOut:
    """Every token by name, with its scope, identity, and when it was made and last used."""
    return TokensOut(items=[TokenOut.from_info(i) for i in await _tokens(request).list()])


@router.delete(
    "/tokens/{name}",
    status_code=204,
    responses=error_responses(404),
    dependencies=[scope("admin")],
)
async def revoke_token(name: Annotated[str, Path(pattern=NAME)], request: Request) -> Response:
    """Revoke a token: from now on it is a 401."""
    await _tokens(request).revoke(name)
    log.info("token %s revoked", name)
    return Response(status_code=204)
