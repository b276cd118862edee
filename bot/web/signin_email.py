"""Sign-in by email link: ask for a link, get it by email, open it, press its button once.

The answer to ``POST /signin/email`` is the same for every address, known or
not, sent or rate-limited; the email goes out after the answer, so neither its
words nor its timing say whether the address may sign in. Only addresses the
configuration names (approvers, escalation targets, ``ADMINS``) or whose domain
is in ``SIGNIN_EMAIL_DOMAINS`` are sent a link. The token is never logged.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from bot.domain.errors import GreenlightError
from bot.engine.ports import SignInMail
from bot.runtime import Runtime
from bot.storage.channelstate import ChannelState
from bot.storage.signin import SignInLinks
from bot.web.pages import render
from bot.web.session import SIGNIN_PATH, csrf_checked
from bot.web.signin import HOME, SignInConfig, finish, may_sign_in, safe_next, signin_page

log = logging.getLogger(__name__)

LINKS_PER_HOUR = 5
"""Links one address may be sent per hour; more asks get the same answer and no email."""
LINK_PATH = "/signin/link"
"""An emailed link is ``LINK_PATH/<token>``; its page's button posts the token here."""
MAX_TOKEN = 100
"""The longest token taken (they are 43 characters)."""
_ADDRESS = re.compile(r"^[^@\s<>\"',;]{1,64}@[^@\s<>\"',;]{1,190}\.[^@\s<>\"',;.]{1,63}$")

router = APIRouter(include_in_schema=False)


@router.post("/signin/email", dependencies=[Depends(csrf_checked)])
async def ask_for_link(
    request: Request,
    background: BackgroundTasks,
    email: str = Form(max_length=254),
    next: str = Form(HOME),
) -> Response:
    """Send a sign-in link to ``email`` if it may sign in; the same answer in every case."""
    address = email.strip().lower()
    if not _ADDRESS.match(address):
        error = f"{email!r} is not an email address"
        return await signin_page(request, next=next, error=error, status_code=422)
    background.add_task(_send_link, request, address, safe_next(next))
    return RedirectResponse(f"{SIGNIN_PATH}?sent=1", status_code=303)


@router.get(LINK_PATH + "/{token}")
async def show_link(request: Request, token: str) -> Response:
    """An emailed link's page: one button, which signs in. Opening the link uses nothing
    up, so a mail scanner that opens links first (Safe Links, Proofpoint) leaves it working
    and gets no session."""
    runtime: Runtime = request.app.state.runtime
    link = await SignInLinks(runtime.redis).find(token, now=runtime.clock.now())
    if link is None:
        return await _used_up(request)
    return await render(request, "signin_link.html.j2", email=link.email, token=token)


@router.post(LINK_PATH, dependencies=[Depends(csrf_checked)])
async def open_link(request: Request, token: str = Form(max_length=MAX_TOKEN)) -> Response:
    """Sign in with an emailed link: once, before it expires, as the address it was sent to."""
    runtime: Runtime = request.app.state.runtime
    link = await SignInLinks(runtime.redis).redeem(token, now=runtime.clock.now())
    if link is None:
        return await _used_up(request)
    return await finish(request, link.email, None, link.next, "email link")


async def _used_up(request: Request) -> Response:
    error = "This sign-in link has expired or was already used: ask for a new one."
    return await signin_page(request, error=error, status_code=400)


async def _send_link(request: Request, address: str, next: str) -> None:
    runtime: Runtime = request.app.state.runtime
    config: SignInConfig = request.app.state.signin
    mail: SignInMail | None = request.app.state.signin_mail
    if mail is None or not may_sign_in(address, runtime, config.email_domains):
        log.info("web: no sign-in link for an address that may not sign in")
        return
    now = runtime.clock.now()
    limiter = ChannelState(runtime.redis, "signin")
    if not await limiter.take(address, limit=LINKS_PER_HOUR, per=3600, now=now):
        log.warning("web: sign-in links for %s are rate-limited", address)
        return
    token = await SignInLinks(runtime.redis).issue(address, next, now=now, ttl=config.link_ttl)
    link = f"{config.public_url}{LINK_PATH}/{token}"
    try:
        await mail.send_sign_in_link(address, link, valid_for=config.link_ttl)
    except GreenlightError as exc:
        log.warning("web: the sign-in link for %s was not sent: %s", address, exc.message)
        return
    log.info("web: sent a sign-in link to %s", address)
