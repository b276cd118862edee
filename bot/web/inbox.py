"""The web inbox: what waits for people, each request with its context, and acting on it.

Every action goes through the one decision path (``bot.engine.decisions``) as the
signed-in viewer's actor, never a name from a form, under the same policy as every
channel: approvers, no self-approval, N of M, expiry. A refusal is shown on the page
in the words every channel uses (``bot.domain.refusals.to_words``). Forms work without
JavaScript; ``/static/inbox/pages.js`` adds keyboard shortcuts and live updates.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.datastructures import FormData

from bot.domain.errors import GreenlightError, InvalidInputError, RefusedError
from bot.domain.events import (
    AnswerFormat,
    ApprovalRequested,
    Decision,
    HumanQuestion,
    UserMessage,
)
from bot.domain.reducer import Request as HumanRequest
from bot.domain.reducer import ThreadState
from bot.domain.refusals import to_words, why_refused
from bot.runtime import Runtime
from bot.web import display, forms
from bot.web.api import runtime_of
from bot.web.errors import status_of
from bot.web.live import Live
from bot.web.pages import render
from bot.web.session import Viewer, csrf_checked, signed_in
from bot.web.waiting import Filters, select

router = APIRouter(include_in_schema=False)

Signed = Annotated[Viewer, Depends(signed_in)]
CSRF = Depends(csrf_checked)

DONE = {
    "approved": "You approved this request.",
    "rejected": "You rejected this request.",
    "edited": "You approved this request with the arguments you edited.",
    "answered": "You answered this question.",
}


@router.get("/inbox")
async def waiting(
    request: Request,
    viewer: Signed,
    *,
    show: str = "mine",
    agent: str = "",
    tool: str = "",
    channel: str = "",
    urgency: str = "",
    page: int = 1,
) -> Response:
    """Open approvals and questions, soonest to expire first."""
    rt = runtime_of(request)
    filters = Filters(
        mine=show != "all", agent=agent, tool=tool, channel=channel, urgency=urgency, page=page
    )
    listed = select(await rt.waiting.waiting(), filters, viewer.actor, rt.clock.now())
    return await render(
        request,
        "inbox/waiting.html.j2",
        listed=listed,
        filters=filters,
        now=rt.clock.now(),
        display=display,
    )


@router.get("/inbox/requests/{request_id}")
async def request_page(
    request: Request, request_id: str, viewer: Signed, done: str = ""
) -> Response:
    """One request with its context, and the forms to act on it."""
    rt = runtime_of(request)
    return await _request_page(request, rt, viewer, request_id, notice=DONE.get(done))


@router.post("/inbox/requests/{request_id}/approve", dependencies=[CSRF])
async def approve(request: Request, request_id: str, viewer: Signed) -> Response:
    """Approve the arguments shown; a risky tool asks for a confirmation first."""
    rt = runtime_of(request)
    form = await request.form()
    req, _ = await rt.decisions.find(request_id)
    risky = isinstance(req.asked, ApprovalRequested) and req.asked.risky
    if risky and form.get("confirm") != "yes":
        return await _request_page(request, rt, viewer, request_id, confirm=True)
    seen = str(form.get("args_hash") or "") or None
    return await _decided(
        request,
        rt,
        viewer,
        request_id,
        "approved",
        rt.decisions.decide(request_id, Decision.APPROVE, viewer.actor, seen_hash=seen),
    )


@router.post("/inbox/requests/{request_id}/reject", dependencies=[CSRF])
async def reject(request: Request, request_id: str, viewer: Signed) -> Response:
    """Reject, with the reason the agent is told."""
    rt = runtime_of(request)
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    if not reason:
        return await _request_page(
            request, rt, viewer, request_id, error="Say why you reject it.", status=422
        )
    seen = str(form.get("args_hash") or "") or None
    decided = rt.decisions.decide(
        request_id, Decision.REJECT, viewer.actor, reason=reason, seen_hash=seen
    )
    return await _decided(request, rt, viewer, request_id, "rejected", decided)


@router.post("/inbox/requests/{request_id}/edit", dependencies=[CSRF])
async def edit(request: Request, request_id: str, viewer: Signed) -> Response:
    """Approve edited arguments, read from the form the tool's schema made."""
    rt = runtime_of(request)
    form = await request.form()
    req, state = await rt.decisions.find(request_id)
    schema = args_schema(rt, state, req)
    if schema is None:
        return await _request_page(
            request, rt, viewer, request_id, error="These arguments cannot be edited.", status=409
        )
    posted = _posted(form)
    value, errors = forms.from_posted(schema, posted, prefix="arg")
    if errors:
        return await _request_page(
            request,
            rt,
            viewer,
            request_id,
            error="Some arguments are not valid: see below.",
            status=422,
            edit=(value, errors),
        )
    asked = req.asked
    if isinstance(asked, ApprovalRequested) and asked.risky and form.get("confirm") != "yes":
        return await _request_page(
            request,
            rt,
            viewer,
            request_id,
            error=f"{asked.tool} is a risky tool: tick the box to confirm.",
            status=422,
            edit=(value, {}),
        )
    seen = str(form.get("args_hash") or "") or None
    decided = rt.decisions.decide(
        request_id, Decision.APPROVE, viewer.actor, edited_args=value, seen_hash=seen
    )
    return await _decided(request, rt, viewer, request_id, "edited", decided, edit=(value, {}))


@router.post("/inbox/requests/{request_id}/answer", dependencies=[CSRF])
async def answer(request: Request, request_id: str, viewer: Signed) -> Response:
    """Answer a question: free text, yes or no, a choice, or a typed answer (a form)."""
    rt = runtime_of(request)
    form = await request.form()
    req, _ = await rt.decisions.find(request_id)
    asked = req.asked
    if isinstance(asked, HumanQuestion) and asked.answer_schema is not None:
        posted = _posted(form)
        value, errors = forms.from_posted(asked.answer_schema, posted, prefix="ans")
        if errors:
            return await _request_page(
                request,
                rt,
                viewer,
                request_id,
                error="The answer is not valid: see below.",
                status=422,
                typed=(value, errors),
            )
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(form.get("answer") or "")
    decided = rt.decisions.answer(request_id, text, viewer.actor)
    return await _decided(request, rt, viewer, request_id, "answered", decided)


@router.get("/inbox/events")
async def events(request: Request, viewer: Signed) -> Response:
    """Server-sent events: each decision, answer or expiry, wherever it was taken."""
    live: Live = request.app.state.live
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(live.events(), media_type="text/event-stream", headers=headers)


def args_schema(rt: Any, state: ThreadState, req: HumanRequest) -> dict[str, Any] | None:
    """The JSON Schema an edit of ``req``'s arguments is made from and checked against: the
    one an agent elsewhere gave, or the hosted tool's own; None when there is none."""
    asked = req.asked
    if not isinstance(asked, ApprovalRequested):
        return None
    if asked.args_schema is not None:
        return asked.args_schema
    agent = rt.agents.get(state.agent) if state.hosted else None
    tool = agent.all_tools.get(asked.tool) if agent else None
    return tool.spec.input_schema if tool is not None else None


async def _decided(  # noqa: PLR0917 - the page, who, which request, and what was done
    request: Request,
    rt: Runtime,
    viewer: Viewer,
    request_id: str,
    done: str,
    deciding: Any,
    *,
    edit: tuple[Any, dict[str, str]] | None = None,
) -> Response:
    """Await the decision; back to the request page, saying what happened or why not."""
    try:
        await deciding
    except GreenlightError as exc:
        refusal = exc.refusal if isinstance(exc, RefusedError) else None
        message = to_words(refusal) + "." if refusal is not None else exc.message
        field_errors = exc.detail.get("errors")
        if edit is not None and isinstance(exc, InvalidInputError) and field_errors:
            edit = (
                edit[0],
                {"/" + str(e["field"]).replace(".", "/"): e["error"] for e in field_errors},
            )
        return await _request_page(
            request, rt, viewer, request_id, error=message, status=status_of(exc), edit=edit
        )
    return RedirectResponse(f"/inbox/requests/{request_id}?done={done}", status_code=303)


async def _request_page(
    request: Request,
    rt: Runtime,
    viewer: Viewer,
    request_id: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
    confirm: bool = False,
    edit: tuple[Any, dict[str, str]] | None = None,
    typed: tuple[Any, dict[str, str]] | None = None,
) -> Response:
    req, state = await rt.decisions.find(request_id)
    now = rt.clock.now()
    events = await rt.log.events(state.id, version=state.version)
    refusal = why_refused(req, viewer.actor, now)
    asked = req.asked
    context: dict[str, Any] = {
        "req": req,
        "asked": asked,
        "state": state,
        "now": now,
        "notice": notice,
        "error": error,
        "confirm": confirm,
        "refusal": to_words(refusal) + "." if refusal is not None else None,
        "rows": display.to_rows(events),
        "display": display,
        "words": _words_of(events, asked),
        "edit_fields": [],
        "answer_fields": [],
        "format": None,
    }
    if isinstance(asked, ApprovalRequested):
        context["args"] = display.to_args(asked.args, req.args if req.args != asked.args else None)
        schema = args_schema(rt, state, req)
        if schema is not None:
            value, errors = edit if edit is not None else (req.arguments, {})
            context["edit_fields"] = forms.to_inputs(schema, value, errors, prefix="arg")
    else:
        context["format"] = asked.format.value if asked.answer_schema is None else "typed"
        if asked.answer_schema is not None:
            value, errors = typed if typed is not None else (None, {})
            context["answer_fields"] = forms.to_inputs(
                asked.answer_schema, value, errors, prefix="ans"
            )
    context["yes_no"] = AnswerFormat.YES_NO.value
    return await render(request, "inbox/request.html.j2", status_code=status, **context)


def _posted(form: FormData) -> dict[str, list[str]]:
    """A posted form's text values by name (files are never posted here)."""
    return {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}


def _words_of(events: list[Any], asked: ApprovalRequested | HumanQuestion) -> str:
    """What the person who asked said last before the request (their own words)."""
    said = ""
    for e in events:
        if e.id == asked.id:
            break
        if isinstance(e, UserMessage):
            said = e.text
    return said
