"""Server-rendered pages: one Jinja2 environment, and ``render`` for page routes.

Templates live in ``bot/web/templates/`` and extend ``base.html.j2``; every page
gets the ``viewer`` (or None) and the session's ``csrf`` token in its context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bot.web.session import CSRF_FIELD, csrf_token, current_viewer

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(("html", "j2")),
    undefined=StrictUndefined,
    enable_async=False,
)


async def render(
    request: Request, name: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render template ``name`` with ``context``, the viewer and the CSRF token."""
    context.setdefault("viewer", await current_viewer(request))
    html = environment.get_template(name).render(
        request=request, csrf=csrf_token(request), csrf_field=CSRF_FIELD, **context
    )
    return HTMLResponse(html, status_code=status_code)


_HEADINGS = {
    400: "Bad request",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Not valid",
}


def is_page(request: Request) -> bool:
    """Whether ``request`` is for one of the inbox's pages (people read its refusals), not
    the API or the inbox's event stream and exports (programs read theirs)."""
    path = request.url.path
    return (path == "/inbox" or path.startswith("/inbox/")) and path not in (
        "/inbox/events",
        "/inbox/audit.csv",
        "/inbox/audit.jsonl",
    )


async def refused_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """A page route's refusal (a 4xx) as a page in the inbox's layout saying what it was."""
    heading = _HEADINGS.get(status, "Refused")
    return await render(
        request,
        "inbox/refused.html.j2",
        status_code=status,
        heading=heading,
        detail=detail.rstrip("."),
        section="",
    )
