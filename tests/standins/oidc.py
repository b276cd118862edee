"""A local OpenID Connect provider: discovery, authorize, token (PKCE), JWKS, RS256 ID tokens.

Usage::

    async with IdentityProvider(client_id="gl", client_secret="s3cret") as idp:
        idp.person = {"sub": "1", "email": "ops@example.test", "email_verified": True}
        settings = test_settings(oidc_issuer=idp.issuer, oidc_client_id="gl", ...)

``/authorize`` signs ``person`` in at once (no login page) and redirects back
with a code; ``/token`` checks the client secret (HTTP Basic or form), the
redirect URI and the PKCE verifier against the S256 challenge, and answers
with an ID token signed by the key ``/jwks`` publishes. To misbehave for a
test: ``nonce`` replaces the nonce in ID tokens, ``rogue_key`` signs with a
key the JWKS does not have. ``tokens`` records every token request's outcome.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import BasicAuth, web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

KID = "standin-key-1"


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    method: str
    nonce: str | None
    person: dict[str, Any]


@dataclass
class IdentityProvider:
    """The stand-in server; start it with ``async with``."""

    client_id: str
    client_secret: str
    person: dict[str, Any] = field(default_factory=dict)
    """The claims of whoever signs in at ``/authorize`` (``sub``, ``email``, ...)."""
    nonce: str | None = None
    """When set, ID tokens carry this nonce instead of the one asked for."""
    rogue_key: bool = False
    """When True, ID tokens are signed with a key the JWKS does not publish."""
    tokens: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """Each token request's status and answer, in order."""

    def __post_init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": KID})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": KID})
        self._grants: dict[str, _Grant] = {}
        self._runner: web.AppRunner | None = None
        self.issuer = ""

    async def __aenter__(self) -> IdentityProvider:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.issuer = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.json_response({"error": "unauthorized_client"}, status=400)
        if not q.get("code_challenge") or q.get("code_challenge_method") != "S256":
            return web.json_response({"error": "invalid_request", "why": "PKCE S256"}, 400)
        if "openid" not in q.get("scope", "").split():
            return web.json_response({"error": "invalid_scope"}, status=400)
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(
            client_id=q["client_id"],
            redirect_uri=q["redirect_uri"],
            challenge=q["code_challenge"],
            method=q["code_challenge_method"],
            nonce=q.get("nonce"),
            person=dict(self.person),
        )
        back = {"code": code, "state": q.get("state", "")}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(back)}")

    async def _token(self, request: web.Request) -> web.Response:
        status, answer = await self._exchange(request)
        self.tokens.append((status, answer))
        return web.json_response(answer, status=status)

    async def _exchange(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if "Authorization" in request.headers:
            basic = BasicAuth.decode(request.headers["Authorization"])
            client_id, secret = basic.login, basic.password
        if client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            return 401, {"error": "invalid_client"}
        grant = self._grants.pop(str(form.get("code", "")), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            **({"nonce": self.nonce or grant.nonce} if self.nonce or grant.nonce else {}),
            **grant.person,
        }
        key = self.other_key if self.rogue_key else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": KID}, claims, key)
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
