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
