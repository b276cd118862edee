"""Sign-in with OpenID Connect (Google, Okta, Entra ID, any provider), through authlib.

The authorization code flow with PKCE (S256): ``GET /signin/oidc`` keeps the
state, nonce and code verifier in the signed session and sends the browser to
the provider; ``GET /signin/oidc/callback`` checks the state, trades the code
(with the client secret and the verifier) for tokens, verifies the ID token
against the provider's JWKS (issuer, audience, expiry, nonce) and signs in the
address in its ``email`` claim when ``email_verified`` says true (a provider that
leaves it out is refused) and the address may sign in (``may_sign_in``, the rule
email links follow too).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Request
from fastapi.responses import Response
from joserfc.errors import JoseError

from bot.runtime import Runtime
from bot.web.signin import (
    HOME,
    OidcConfig,
    SignInConfig,
    finish,
    may_sign_in,
    safe_next,
    signin_page,
)

log = logging.getLogger(__name__)

CALLBACK = "/signin/oidc/callback"
_NEXT = "oidc_next"
"""Where the browser goes after the provider sends it back (in the session)."""

router = APIRouter(include_in_schema=False)


def to_client(config: OidcConfig) -> Any:
    """The authlib client of the provider (discovery is read on first use)."""
    oauth = OAuth()
    oauth.register(
        "oidc",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )
    return oauth.create_client("oidc")


@router.get("/signin/oidc")
async def start(request: Request, next: str = HOME) -> Response:
    """Off to the provider's sign-in page."""
    config: SignInConfig = request.app.state.signin
    client = request.app.state.oidc_client
    if client is None or config.oidc is None:
        return await _refused(request, "OpenID Connect is not configured here", 404)
    request.session[_NEXT] = safe_next(next)
    try:
        redirect: Response = await client.authorize_redirect(
            request, f"{config.public_url}{CALLBACK}"
        )
    except (httpx2.HTTPError, OAuthError, ValueError, KeyError) as exc:
        log.warning("web: the OIDC provider's discovery failed: %r", exc)
        return await _refused(request, f"{config.oidc.name} cannot be reached just now", 502)
    return redirect


@router.get(CALLBACK)
async def callback(request: Request) -> Response:
    """Back from the provider: verify everything, then sign the address in."""
    config: SignInConfig = request.app.state.signin
    client = request.app.state.oidc_client
    if client is None or config.oidc is None:
        return await _refused(request, "OpenID Connect is not configured here", 404)
    try:
        token = await client.authorize_access_token(request)
    except (OAuthError, JoseError) as exc:
        log.warning("web: an OIDC sign-in was refused: %r", exc)
        return await _refused(request, f"signing in with {config.oidc.name} failed: {exc}")
    except httpx2.HTTPError as exc:
        log.warning("web: the OIDC provider could not be reached: %r", exc)
        return await _refused(request, f"{config.oidc.name} cannot be reached just now", 502)
    claims = token.get("userinfo") or {}
    email = claims.get("email")
    if not claims or not isinstance(email, str) or "@" not in email:
        return await _refused(request, f"{config.oidc.name} did not say your email address")
    if not is_verified(claims.get("email_verified")):
        return await _refused(request, f"{config.oidc.name} has not verified {email}")
    runtime: Runtime = request.app.state.runtime
    if not may_sign_in(email, runtime, config.email_domains):
        log.warning("web: %s may not sign in; its %s sign-in was refused", email, config.oidc.name)
        return await _refused(request, f"{email} may not sign in here", 403)
    name = claims.get("name")
    next = request.session.pop(_NEXT, HOME)
    return await finish(
        request, email, name if isinstance(name, str) else None, next, config.oidc.name
    )


def is_verified(claim: object) -> bool:
    """Whether an ``email_verified`` claim says yes: true, or the string "true" some
    providers send; left out, false or anything else is no."""
    return claim is True or (isinstance(claim, str) and claim.lower() == "true")


async def _refused(request: Request, why: str, status_code: int = 400) -> Response:
    return await signin_page(request, error=why, status_code=status_code)
