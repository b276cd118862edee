"""Who is signed in to the web pages: the signed session cookie, the viewer, CSRF.

A sign-in (``bot.web.signin``) stores the person in Starlette's signed session
cookie, with a random session id whose key (``bot.storage.signin.SignInSessions``)
lives in Redis for the session's lifetime; pages read them back with
``current_viewer`` or depend on ``signed_in``, and a cookie is signed in only while
its id's key exists (one Redis read a request), so signing out, which deletes the
key, signs out every copy of the cookie. Every page route that changes something
also depends on ``csrf_checked``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.exceptions import HTTPException

from bot.domain.errors import ConfigError
from bot.domain.events import Actor
from bot.settings import Settings
from bot.storage.signin import SignInSessions

COOKIE = "greenlight_session"
SIGNIN_PATH = "/signin"
MIN_SECRET = 32
"""The shortest ``SESSION_SECRET`` taken."""
CSRF_FIELD = "csrf"
"""The hidden input of every form that changes something."""
CSRF_HEADER = "X-CSRF-Token"
"""The header scripts send instead."""
_VIEWER = "greenlight.viewer"
"""Where a request keeps the viewer ``current_viewer`` found: one Redis read a request."""


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are kept: built from settings, None when ``SESSION_SECRET`` is unset.

    Attributes:
        secret: signs the cookie.
        https: the cookie is ``Secure`` (``PUBLIC_URL`` is https).
        max_age: seconds a sign-in lasts.
        admins: ``ADMINS``: identities (addresses, ``slack:U123``) that are admins.
    """

    secret: str
    https: bool
    max_age: float
    admins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionConfig | None:
        """The sessions ``settings`` ask for, None without ``SESSION_SECRET``.

        Raises:
            ConfigError: ``SESSION_SECRET`` is too short to keep cookies from being forged.
        """
        if settings.session_secret is None:
            return None
        secret = settings.session_secret.get_secret_value()
        if len(secret) < MIN_SECRET:
            raise ConfigError(
                f"SESSION_SECRET is {len(secret)} characters: use at least {MIN_SECRET} random"
                " ones (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return cls(
            secret=secret,
            https=settings.public_url.lower().startswith("https://"),
            max_age=settings.session_max_age,
            admins=frozenset(a.lower() for a in settings.admins) | frozenset(settings.admins),
        )


@dataclass(frozen=True)
class Viewer:
    """The person signed in to the web pages.

    Attributes:
        actor: channel ``web``, ``id`` the lower-cased address; ``elsewhere`` holds the
            same person in other channels (``slack:U123``), so policies naming them
            there match too.
        admin: one of the actor's names is in ``ADMINS``.
    """

    actor: Actor
    admin: bool

    @property
    def email(self) -> str:
        return self.actor.id


def to_actor(email: str, name: str | None, elsewhere: tuple[str, ...] = ()) -> Actor:
    """The web actor for a signed-in address."""
    address = email.strip().lower()
    return Actor(channel="web", id=address, email=address, name=name, elsewhere=elsewhere)


async def start_session(request: Request, actor: Actor) -> None:
    """Sign ``actor`` in: a fresh session (its id kept in Redis for ``SESSION_MAX_AGE``,
    and a CSRF token) replaces whatever was there, which is signed out."""
    config: SessionConfig = request.app.state.sessions
    sessions = _sessions(request)
    old = request.session.get("sid")
    if isinstance(old, str):
        await sessions.end(old)
    sid = await sessions.start(actor.id, ttl=config.max_age)
    request.session.clear()
    request.session.update(
        {
            "sid": sid,
            "email": actor.id,
            "name": actor.name,
            "elsewhere": list(actor.elsewhere),
            "at": _clock(request).now(),
            "csrf": secrets.token_urlsafe(24),
        }
    )
    request.scope.pop(_VIEWER, None)


async def end_session(request: Request) -> None:
    """Sign out: the session's key is deleted, so every copy of its cookie is signed out,
    and this browser's cookie is cleared with the next response."""
    sid = request.session.get("sid")
    if isinstance(sid, str):
        await _sessions(request).end(sid)
    request.session.clear()
    request.scope[_VIEWER] = None


async def current_viewer(request: Request) -> Viewer | None:
    """The signed-in viewer, or None: no session, one older than ``SESSION_MAX_AGE``, or
    one whose id Redis does not hold (signed out, expired, or from before session ids).

    The first call of a request reads Redis once; later ones reuse its answer.
    """
    if _VIEWER in request.scope:
        found: Viewer | None = request.scope[_VIEWER]
        return found
    viewer = await _read_viewer(request)
    request.scope[_VIEWER] = viewer
    return viewer


async def _read_viewer(request: Request) -> Viewer | None:
    config: SessionConfig | None = getattr(request.app.state, "sessions", None)
    if config is None or "session" not in request.scope:
        return None
    data: dict[str, Any] = request.session
    email, at, sid = data.get("email"), data.get("at"), data.get("sid")
    if not isinstance(email, str) or not isinstance(at, int | float) or not isinstance(sid, str):
        return None
    if _clock(request).now() - at > config.max_age:
        return None
    if not await _sessions(request).alive(sid):
        return None
    elsewhere = tuple(e for e in data.get("elsewhere") or () if isinstance(e, str))
    name = data.get("name")
    actor = to_actor(email, name if isinstance(name, str) else None, elsewhere)
    return Viewer(actor=actor, admin=bool(actor.names() & config.admins))


async def signed_in(request: Request) -> Viewer:
    """Dependency of every page route: the viewer, or off to ``/signin``.

    A GET with nobody signed in is redirected (303) to ``/signin?next=<path>``; any
    other method answers 401.
    """
    viewer = await current_viewer(request)
    if viewer is not None:
        return viewer
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"{SIGNIN_PATH}?{urlencode({'next': target})}"
        raise HTTPException(303, "sign in first", headers={"Location": location})
    raise HTTPException(401, "sign in first")


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use), for forms and scripts."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def csrf_checked(request: Request) -> None:
    """Dependency of every page route that changes something: 403 without the session's
    token in the ``csrf`` form field or the ``X-CSRF-Token`` header."""
    expected = request.session.get("csrf") if "session" in request.scope else None
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not secrets.compare_digest(sent, expected):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")


def _clock(request: Request) -> Any:
    return request.app.state.runtime.clock


def _sessions(request: Request) -> SignInSessions:
    return SignInSessions(request.app.state.runtime.redis)
