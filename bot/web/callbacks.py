"""Callback URLs checked when a thread or request is created: a real http(s) URL, and
optionally public.

``CALLBACK_URL_REFUSE_PRIVATE=true`` refuses hosts that resolve to private,
loopback, link-local or otherwise non-global addresses, so an API client cannot
make the workers POST into the network they run in. It is checked when the
thread is created; a name that later resolves elsewhere is not checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from starlette.requests import Request

from bot.domain.errors import InvalidInputError

MAX_LENGTH = 2000


def why_invalid(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL with a host we could POST to, or None. Pure."""
    if len(url) > MAX_LENGTH:
        return f"callback_url is longer than {MAX_LENGTH} characters"
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 for c in url):
        return "callback_url must be ASCII without spaces (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"callback_url is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"callback_url must be http or https, not {parts.scheme or 'nothing'!r}"
    if not parts.hostname:
        return "callback_url names no host"
    if port == 0:
        return "callback_url names port 0"
    return None


async def check(url: str, *, refuse_private: bool) -> None:
    """Refuse an unusable callback URL; with ``refuse_private``, one that is not public.

    Raises:
        InvalidInputError: naming the URL's problem.
    """
    if problem := why_invalid(url):
        raise InvalidInputError(problem, field="callback_url")
    if not refuse_private:
        return
    host = urlsplit(url).hostname or ""
    for address in await _addresses(host):
        if not address.is_global:
            raise InvalidInputError(
                f"callback_url host {host!r} is a private address ({address}); "
                "CALLBACK_URL_REFUSE_PRIVATE is on",
                field="callback_url",
            )


async def check_for(request: Request, url: str | None) -> None:
    """``check`` the ``callback_url`` a request to the API names, if any, as the app is set
    to (``CALLBACK_URL_REFUSE_PRIVATE``): every route that takes one calls this. Refused
    whatever it is when callbacks cannot be signed (no ``WEBHOOK_SECRET``): their receiver
    could not tell them from forgeries, and one acts on ``request_decided``.

    Raises:
        InvalidInputError: naming the URL's problem.
    """
    if url is None:
        return
    if not request.app.state.sign_callbacks:
        raise InvalidInputError(
            "callback_url needs WEBHOOK_SECRET set on the server: callbacks are signed with"
            " it, so that their receiver can tell them from forgeries",
            field="callback_url",
        )
    await check(url, refuse_private=request.app.state.refuse_private_callbacks)


async def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(
            f"callback_url host {host!r} does not resolve", field="callback_url"
        ) from exc
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found]
