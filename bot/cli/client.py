"""A small client of Greenlight's REST API, for the CLI and for scripts.

Synchronous on purpose: its one user is a terminal program that waits for a
person between calls; there is no async twin.

    with Client("http://127.0.0.1:8000", token) as api:
        thread = api.create_thread("deploy", "deploy api 1.5.0 to production", user="ann")
        for request in api.requests()["items"]:
            api.decide(request["id"], "approve", by="bob")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API answered an error, or could not be reached (``status`` 0).

    Attributes:
        status: the HTTP status, 0 when there was no answer.
        error: the API's error code (``conflict``, ``not_found``...).
        detail: the API's explanation, meant for people.
        body: the whole error body, with any extra fields.
    """

    def __init__(self, status: int, error: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{detail} ({error}, HTTP {status})" if status else detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.body = body


def find_token(data_dir: Path | None = None) -> str | None:
    """``API_TOKEN`` from the environment, else the one ``greenlight run`` generated."""
    if token := os.environ.get("API_TOKEN"):
        return token
    folder = data_dir or Path(os.environ.get("DATA_DIR") or ".greenlight")
    path = folder / "api_token"  # bot.serve.token_file, without importing the server
    return path.read_text().strip() if path.is_file() else None


def _seg(value: str) -> str:
    """``value`` as one URL path segment: ``/``, ``?``, ``#`` and the rest escaped, and
    ``.`` or ``..`` spelt out, so that no id or name reaches another endpoint."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in {".", ".."} else segment


class Client:
    """Calls the REST API; every method returns the decoded JSON body.

    Args:
        url: the API's base URL.
        token: the bearer token.
        timeout: seconds per request.

    Raises:
        ApiError: from every method, when the API refuses or cannot be reached.
    """

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise ApiError(0, "invalid_url", f"{url!r} is not a URL: {exc}", {}) from exc

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- threads ------------------------------------------------------------------------

    def create_thread(
        self, agent: str, text: str, *, user: str, callback_url: str | None = None
    ) -> dict[str, Any]:
        body = {"agent": agent, "text": text, "user": user, "callback_url": callback_url}
        return self._call("POST", "/threads", json={k: v for k, v in body.items() if v})

    def threads(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        params = {"status": status, "agent": agent, "offset": offset, "limit": limit}
        given: dict[str, Any] = {k: v for k, v in params.items() if v}  # unset filters left out
        return self._call("GET", "/threads", params=given)

    def thread(self, thread_id: str) -> dict[str, Any]:
        return self._call("GET", f"/threads/{_seg(thread_id)}")

    def say(self, thread_id: str, text: str, *, user: str) -> dict[str, Any]:
        return self._call(
            "POST", f"/threads/{_seg(thread_id)}/messages", json={"text": text, "user": user}
        )

    def control(
        self, thread_id: str, action: str, *, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        """``pause``, ``resume`` or ``cancel`` a thread."""
        body = {"by": by, "reason": reason}
        return self._call("POST", f"/threads/{_seg(thread_id)}/{action}", json=body)

    # --- requests -----------------------------------------------------------------------

    def requests(self, *, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        params = {"status": "open", "offset": offset, "limit": limit}
        return self._call("GET", "/requests", params=params)

    def request(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"/requests/{_seg(request_id)}")

    def decide(
        self, request_id: str, decision: str, *, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        body = {"decision": decision, "by": by, "reason": reason}
        return self._call("POST", f"/requests/{_seg(request_id)}/decision", json=body)

    def answer(self, request_id: str, text: str, *, by: str) -> dict[str, Any]:
        return self._call(
            "POST", f"/requests/{_seg(request_id)}/answer", json={"text": text, "by": by}
        )

    def archived(self, *, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Threads retention moved to the archive, the most recent first."""
        return self._call("GET", "/archive", params={"offset": offset, "limit": limit})

    def archived_thread(self, thread_id: str) -> dict[str, Any]:
        return self._call("GET", f"/archive/{_seg(thread_id)}")

    # --- audit --------------------------------------------------------------------------

    def verify(self, thread_id: str) -> dict[str, Any]:
        """Whether the thread's hash chain holds, and where it breaks."""
        return self._call("GET", f"/threads/{_seg(thread_id)}/audit")

    def audit(
        self, *, since: str | None = None, until: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Decision records between two ISO 8601 times, oldest first: every one, the first
        page read now, each next one as the records are asked for (``GET /audit`` answers
        a page at a time, and links to the next)."""
        params = {k: v for k, v in {"since": since, "until": until}.items() if v}
        return self._pages(self._call("GET", "/audit", params=params))

    def _pages(self, page: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from page["items"]
        while page.get("next"):
            page = self._call("GET", page["next"])
            yield from page["items"]

    # --- tokens (an admin token's business) ----------------------------------------------

    def create_token(self, name: str, scope: str, *, identity: str | None = None) -> dict[str, Any]:
        """A new token; the answer's ``token`` is shown this once."""
        body = {"name": name, "scope": scope, "identity": identity}
        return self._call("POST", "/tokens", json={k: v for k, v in body.items() if v})

    def whoami(self) -> dict[str, Any]:
        """The calling token's name, scope and, for an approver, identity."""
        return self._call("GET", "/tokens/me")

    def tokens(self) -> dict[str, Any]:
        """Every token's name, scope, identity, creation and last use; never the token."""
        return self._call("GET", "/tokens")

    def revoke_token(self, name: str) -> None:
        self._call("DELETE", f"/tokens/{_seg(name)}")

    # --- plumbing -----------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach Greenlight at {self.url}: {exc}", {}
            ) from exc
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {"value": body}
        if answer.is_success:
            return body
        raise ApiError(
            answer.status_code,
            str(body.get("error", "http_error")),
            str(body.get("detail", answer.text[:200] or answer.reason_phrase)),
            body,
        )
