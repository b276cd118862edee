"""Drafts to MIME messages: text and HTML parts from the jinja2 templates beside this module."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from channels.email.config import EmailConfig
from channels.email.drafts import Draft

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=lambda name: (name or "").endswith(".html.j2"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
# Line breaks and other controls: subjects carry an inbound subject or a model's arguments.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")


def render(template: str, **context: Any) -> tuple[str, str]:
    """The text and the HTML rendering of ``template``."""
    context.setdefault("agent", None)
    text = _ENV.get_template(f"{template}.txt.j2").render(context)
    html = _ENV.get_template(f"{template}.html.j2").render(context)
    return text, html


def page(template: str, **context: Any) -> str:
    """An HTML page (the confirmation page of a decision link)."""
    context.setdefault("agent", None)
    return _ENV.get_template(f"{template}.html.j2").render(context)


def to_message(draft: Draft, cfg: EmailConfig) -> EmailMessage:
    """The email for ``draft``, with threading and loop-avoidance headers."""
    text, html = render(draft.template, **draft.context)
    msg = EmailMessage()
    name, address = parseaddr(cfg.sender)
    agent = draft.context.get("agent")
    msg["From"] = formataddr(
        (name or (f"Greenlight ({agent})" if agent else "Greenlight"), address)
    )
    msg["To"] = draft.to
    msg["Subject"] = " ".join(_CONTROLS.sub(" ", draft.subject).split())
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = draft.message_id
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = " ".join(draft.references)
    if draft.reply_to:
        msg["Reply-To"] = draft.reply_to
    # RFC 3834, and Exchange's variant: no out-of-office answers to what a bot sends.
    msg["Auto-Submitted"] = draft.auto
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    for header, value in draft.headers.items():
        msg[header] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg
