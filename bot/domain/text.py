"""Text for people: a tool call on one line, an argument's value, cutting text short, and
URLs cut to where they point.

Every channel and the CLI show calls and cut text with these, so a call reads
the same in Slack, in an email subject and in the terminal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

ELLIPSIS = "…"


def to_shown(value: Any) -> str:
    """One argument as people read it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def to_args(args: Mapping[str, Any], show: Callable[[Any], str] = to_shown) -> str:
    """Arguments as ``name=value, …``, each value through ``show``."""
    return ", ".join(f"{name}={show(value)}" for name, value in args.items())


def to_call(
    tool: str,
    args: Mapping[str, Any],
    *,
    show: Callable[[Any], str] = to_shown,
    limit: int | None = None,
) -> str:
    """A tool call as ``tool(name=value, …)``.

    Args:
        show: renders each value; ``repr`` quotes strings, as a terminal shows them.
        limit: the most characters the whole call may take; the arguments are cut
            (with …) so that the closing parenthesis stays.
    """
    inner = to_args(args, show)
    if limit is not None:
        inner = cut(inner, max(limit - len(tool) - 2, len(ELLIPSIS)))
    return f"{tool}({inner})"


def to_sentence(text: str) -> str:
    """``text`` with its first letter upper case, as an error shown on its own reads."""
    return text[:1].upper() + text[1:]


def cut(text: str, limit: int, *, boundary: Callable[[str, int], int] | None = None) -> str:
    """``text`` within ``limit`` characters, ending in … when shortened.

    Args:
        boundary: given the text and the index a cut would fall at, where it may
            fall instead (at or before it), so that it splits nothing the caller
            cares about, such as a markup entity.
    """
    if len(text) <= limit:
        return text
    at = limit - len(ELLIPSIS)
    if boundary is not None:
        at = boundary(text, at)
    return text[:at] + ELLIPSIS


_URL_CHAR = r"(?:[^\s'\"<>\\]|\\\\|\\(?![nrtxuU\\]))"
"""A character of a URL in text: not a space, a quote or an angle bracket, nor a backslash
that starts the escape a ``repr`` writes for a character no URL holds (``\\n``, ``\\t``,
``\\x85``, ``\\u2028``). A backslash in the URL itself (``\\\\`` in a ``repr``) is part
of it, so what follows it is cut too."""
_URL = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://{_URL_CHAR}*[^\s'\"<>\\.,:;!?)]")
"""A URL in text: up to a space, a quote, an angle bracket or a ``repr``'s escape (the
exception's own text goes on after it), and not its last punctuation."""


def to_site(url: str) -> str:
    """A URL cut to its scheme, host and port: enough to tell where it points, without what
    may be a secret in it (user and password, path, query, fragment). For logs and errors."""
    scheme = url.partition("://")[0]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{scheme}://?"
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def redact_urls(text: str, *urls: str) -> str:
    """``text`` with every URL in it cut to its scheme, host and port (``to_site``): ``urls``
    wherever they occur, whatever they hold, then anything that looks like a URL."""
    for url in urls:
        text = text.replace(url, to_site(url))
    return _URL.sub(lambda found: to_site(found.group()), text)
