"""Web sign-in: the form, signing a person in (by any method) and out.

Methods live beside it: email links (``bot.web.signin_email``) and OpenID
Connect (``bot.web.signin_oidc``). Both let in only the addresses ``may_sign_in``
allows. Each ends in ``finish``: the person's identities in other channels are
looked up (``Directory`` ports), the session starts, and the browser goes where
it was headed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from bot.runtime import Runtime
from bot.settings import Settings
from bot.web.pages import render
from bot.web.session import (
    SIGNIN_PATH,
    SessionConfig,
    Viewer,
    csrf_checked,
    end_session,
    signed_in,
    start_session,
    to_actor,
)

log = logging.getLogger(__name__)

HOME = "/inbox"
"""Where a sign-in leads when it was not headed anywhere."""
LOOKUP_BUDGET = 3.0
"""Seconds the directory look-ups of a sign-in may take in all; slower ones are left out."""


@dataclass(frozen=True)
class OidcConfig:
    """An OpenID Connect provider (``OIDC_*``)."""

    issuer: str
    client_id: str
    client_secret: str
    name: str


@dataclass(frozen=True)
class SignInConfig:
    """How people sign in to the pages; None from ``from_settings`` without ``SESSION_SECRET``.

    Attributes:
        sessions: the session cookie.
        public_url: where people reach the app (links in emails, the OIDC redirect).
        link_ttl: seconds an email link is valid.
        email_domains: ``SIGNIN_EMAIL_DOMAINS``: any address there may get a link.
        oidc: the OpenID Connect provider, if one is set.
    """

    sessions: SessionConfig
    public_url: str
    link_ttl: float = 900.0
    email_domains: frozenset[str] = frozenset()
    oidc: OidcConfig | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInConfig | None:
        sessions = SessionConfig.from_settings(settings)
        if sessions is None:
            return None
        oidc = None
        if settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret:
            oidc = OidcConfig(
                issuer=settings.oidc_issuer.rstrip("/"),
                client_id=settings.oidc_client_id,
                client_secret=settings.oidc_client_secret.get_secret_value(),
                name=settings.oidc_name,
            )
        elif settings.oidc_issuer or settings.oidc_client_id or settings.oidc_client_secret:
            log.warning(
                "OIDC sign-in is off: set all of OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET"
            )
        return cls(
            sessions=sessions,
            public_url=settings.public_url.rstrip("/"),
            link_ttl=settings.signin_link_ttl,
            email_domains=frozenset(d.lower().lstrip("@") for d in settings.signin_email_domains),
            oidc=oidc,
        )


router = APIRouter(include_in_schema=False)


@router.get(SIGNIN_PATH, name="signin_form")
async def signin_form(request: Request, next: str = HOME, sent: bool = False) -> Response:
    """The sign-in page: an email form, and the OIDC button when a provider is set."""
    return await signin_page(request, next=next, sent=sent)


async def signin_page(
    request: Request,
    *,
    next: str = HOME,
    sent: bool = False,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The sign-in page, saying ``error`` (a refused link or sign-in) when there is one."""
    config: SignInConfig = request.app.state.signin
    return await render(
        request,
        "signin.html.j2",
        status_code=status_code,
        next=safe_next(next),
        sent=sent,
        email_on=request.app.state.signin_mail is not None,
        oidc=config.oidc,
        error=error,
    )


@router.get("/account")
async def account(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> Response:
    """Who the viewer is signed in as, and as whom approval policies know them."""
    return await render(request, "account.html.j2", viewer=viewer)


@router.post("/signout", dependencies=[Depends(signed_in), Depends(csrf_checked)])
async def signout(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> Response:
    """Sign out, then back to the sign-in page."""
    await end_session(request)
    log.info("web: %s signed out", viewer.email)
    return RedirectResponse(SIGNIN_PATH, status_code=303)


async def finish(request: Request, email: str, name: str | None, next: str, how: str) -> Response:
    """Sign ``email`` in (after a method proved it) and send the browser on to ``next``."""
    elsewhere = await identities_of(request, email)
    await start_session(request, to_actor(email, name, elsewhere))
    log.info("web: %s signed in by %s", email.lower(), how)
    return RedirectResponse(safe_next(next), status_code=303)


def may_sign_in(address: str, runtime: Runtime, domains: Iterable[str]) -> bool:
    """Whether ``address`` may sign in, by any method: the configuration names it
    (approvers, escalation, admins) or its domain is in ``SIGNIN_EMAIL_DOMAINS``."""
    address = address.strip().lower()
    if address.rpartition("@")[2] in set(domains):
        return True
    return address in known_addresses(runtime)


def known_addresses(runtime: Runtime) -> set[str]:
    """Every address the configured policies, groups and admins name."""
    names: list[str] = [*runtime.groups.admins]
    for members in runtime.groups.members.values():
        names.extend(members)
    policies = [t.approval for a in runtime.agents.values() for t in a.tools]
    for policy in [*policies, *runtime.policies.values()]:
        names.extend(runtime.groups.expand([*policy.approvers, *policy.escalate_to]))
    return {n.removeprefix("email:").lower() for n in names if "@" in n}


async def identities_of(request: Request, email: str) -> tuple[str, ...]:
    """The address's identities in other channels; a failed or slow look-up adds nothing."""
    directories = request.app.state.runtime.directories
    if not directories:
        return ()
    looked = [asyncio.ensure_future(d.identities_of(email.lower())) for d in directories]
    done, pending = await asyncio.wait(looked, timeout=LOOKUP_BUDGET)
    for task in pending:
        task.cancel()
    found: list[str] = []
    for task in done:
        if task.exception() is None:
            found.extend(task.result())
        else:
            log.warning("web: a directory look-up failed: %r", task.exception())
    return tuple(sorted(set(found)))


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else the home page (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return HOME
    if any(c in target for c in "\r\n\\") or target.startswith(SIGNIN_PATH):
        return HOME
    return target
