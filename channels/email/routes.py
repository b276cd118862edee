"""HTTP routes: raw-MIME forwarding from mail providers, and the decision-link page.

``POST /email/inbound`` takes a raw message as the body, authenticated by
``EMAIL_INBOUND_SECRET`` in ``X-Greenlight-Inbound-Secret`` or as the password
of HTTP Basic auth (what most providers put in the forwarding URL).

``GET /email/decide/<token>?a=<address>`` only shows the request and a form:
mail scanners open every link. Only the form's ``POST`` decides.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from bot.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
    UnauthorizedError,
)
from bot.domain.events import Actor, ApprovalRequested, Decision
from bot.domain.refusals import to_words, why_refused
from bot.engine.ports import ChannelPorts
from bot.web.errors import status_of
from channels.email import tokens
from channels.email.config import EmailConfig
from channels.email.drafts import to_rows, to_utc, up_for_approval
from channels.email.inbound import Intake
from channels.email.render import page

SECRET_HEADER = "x-greenlight-inbound-secret"


def build_router(
    cfg: EmailConfig, runtime: ChannelPorts, intake: Intake, inbound_secret: str | None
) -> APIRouter:
    """The email channel's routes."""
    router = APIRouter(tags=["email"])

    @router.post("/email/inbound")
    async def inbound(request: Request) -> JSONResponse:
        """Record one raw MIME message (``message/rfc822`` body); ``?to=`` may name the
        envelope recipients, otherwise the message's own headers are read."""
        if not is_authorized(request.headers, inbound_secret):
            raise UnauthorizedError(
                "missing or wrong inbound secret (X-Greenlight-Inbound-Secret, or HTTP Basic "
                "password = EMAIL_INBOUND_SECRET)"
            )
        raw = await request.body()
        rcpts = request.query_params.getlist("to") or None
        handled = await intake.receive(raw, rcpts=rcpts)
        return JSONResponse(
            {
                "status": handled.disposition.value,
                "detail": handled.detail,
                "thread_id": handled.thread_id,
            }
        )

    @router.get("/email/decide/{token}", response_class=HTMLResponse)
    async def show(token: str, a: str = "") -> HTMLResponse:
        link = await _open_link(cfg, runtime, token, a)
        return HTMLResponse(_decide_page(link, link.done))

    @router.post("/email/decide/{token}", response_class=HTMLResponse)
    async def decide(token: str, request: Request, a: str = "") -> HTMLResponse:
        link = await _open_link(cfg, runtime, token, a)
        if link.done:
            return HTMLResponse(_decide_page(link, link.done), status_code=link.status)
        asked = link.asked
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        choice = (form.get("decision") or [""])[0]
        if choice not in ("approve", "reject"):
            raise InvalidInputError("decision must be approve or reject")
        reason = (form.get("reason") or [""])[0].strip() or None
        # The hash of the arguments the page showed; a form without it (a page served
        # before it had one) showed those asked.
        seen = (form.get("args_hash") or [""])[0] or asked.args_hash
        try:
            await runtime.decisions.decide(
                asked.request_id,
                Decision(choice),
                link.actor,
                reason=reason if choice == "reject" else None,
                seen_hash=seen,
                # The arguments shown are part of it: the link stays the same after an
                # edit, and approving the new ones is a new decision, not a replay.
                delivery=f"link:{token}:{choice}:{seen}",
            )
        except RefusedError as exc:
            if "args_hash" in exc.detail:  # edited since the page was shown: show them now
                note = (
                    "The arguments were edited since this page was opened; these are the ones now."
                )
                return HTMLResponse(_decide_page(link, None, note=note), status_code=status_of(exc))
            return HTMLResponse(_decide_page(link, exc.message), status_code=status_of(exc))
        verb = "Approved" if choice == "approve" else "Rejected"
        return HTMLResponse(_decide_page(link, f"{verb}. Thank you; you can close this page."))

    return router


def is_authorized(headers: Any, secret: str | None) -> bool:
    """Whether a request carries the inbound secret (header or Basic password)."""
    if not secret:
        return False
    given = headers.get(SECRET_HEADER, "")
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if not given and scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    return hmac.compare_digest(given.encode(), secret.encode())


@dataclass(frozen=True)
class _Link:
    asked: ApprovalRequested
    args: dict[str, Any]
    """The arguments up for approval now (an approver's edit, else those asked)."""
    args_hash: str
    agent: str
    approver: str
    done: str | None = None
    """Why the approver can no longer decide the request here; None when they can."""
    status: int = 200
    """The HTTP status a decision posted now would get."""

    @property
    def actor(self) -> Actor:
        return Actor(channel="email", id=self.approver, email=self.approver)


async def _open_link(cfg: EmailConfig, runtime: ChannelPorts, token: str, address: str) -> _Link:
    claim = tokens.verify(token.lower(), cfg.secret, purpose="link")
    if claim is None or not claim.is_for(address, cfg.secret):
        raise NotFoundError("this decision link is not valid")
    try:
        req, state = await runtime.decisions.find(claim.request_id)
    except NotFoundError as exc:
        raise NotFoundError("this decision link is not valid") from exc
    if not isinstance(req.asked, ApprovalRequested):
        raise NotFoundError("this decision link is not valid")
    args, args_hash = up_for_approval(req)
    link = _Link(req.asked, args, args_hash, state.agent, address.lower())
    now = runtime.clock.now()
    if refusal := why_refused(req, link.actor, now):
        return replace(link, done=f"{to_words(refusal)}.", status=status_of(refusal.error()))
    if claim.is_expired(now):
        expired = ConflictError("This link has expired.")
        return replace(link, done=expired.message, status=status_of(expired))
    return link


def _decide_page(link: _Link, done: str | None, *, note: str | None = None) -> str:
    return page(
        "decide",
        done=done,
        note=note,
        agent=link.agent,
        tool=link.asked.tool,
        args=to_rows(link.args),
        args_hash=link.args_hash,
        requester=link.asked.requester.label(),
        expires=to_utc(link.asked.expires_at),
        approver=link.approver,
    )
