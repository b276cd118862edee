"""The clients: ask for an approval or an answer over HTTP, then long-poll for it.

:class:`Greenlight` blocks, :class:`AsyncGreenlight` awaits; both share everything but
the sending (:class:`_Base`). Each call opens its own HTTP connection pool, so a client
is plain configuration: safe to share between threads and event loops.

What to send and what to make of the answers is written once, as flows (generators that
yield a :class:`Call` or a :class:`Pause` and are sent back the response); each client's
``_drive`` does only the I/O, blocking or awaited.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import httpx
from pydantic import TypeAdapter

from greenlight.calls import Slots, call_key, current_run
from greenlight.errors import (
    Cancelled,
    ConfigError,
    Expired,
    GreenlightError,
    NotApproved,
    Rejected,
    RequestError,
    StillPending,
)

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
MAX_WAIT = 60.0
"""The server's longest long-poll, in seconds."""
MAX_RETRY_AFTER = 60.0
"""The longest a server's ``Retry-After`` makes the client wait before it asks again."""
Policy = str | dict[str, Any] | None
"""The name of one of the server's APPROVAL_POLICIES, an inline policy, or its default."""


@dataclass(frozen=True)
class Approved:
    """An approved request: the arguments to run with (an approver's edit if ``edited``)."""

    request_id: str
    arguments: dict[str, Any]
    edited: bool
    by: list[str]
    reason: str | None


class _Base:
    """Configuration and the pure halves of each call: what to send, what came back."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        agent: str = "external",
        requester: str | None = None,
        timeout: float | None = None,
        retries: int = 8,
        http_timeout: float = 10.0,
    ) -> None:
        """Args:
        url: the server; default ``GREENLIGHT_URL``.
        token: its API token; default ``GREENLIGHT_TOKEN``.
        agent: the name requests are listed under on the server.
        requester: who asks (an approval never counts its own vote); default ``api:<agent>``.
        timeout: how long to wait for people, in seconds, before :class:`StillPending`;
            None waits until the request is decided or expires on the server.
        retries: how many times in a row to retry an unreachable server or a 5xx.
        http_timeout: seconds for one HTTP exchange, on top of any long-poll.
        """
        url = url or os.environ.get("GREENLIGHT_URL")
        if not url:
            raise ConfigError("give the server's url, or set GREENLIGHT_URL")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("GREENLIGHT_TOKEN")
        self.agent = agent
        self.requester = requester
        self.timeout = timeout
        self.retries = retries
        self.http_timeout = http_timeout
        self.slots = Slots()

    def require_approval(
        self, tool: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """:func:`greenlight.require_approval` asking with this client."""
        from greenlight.decorator import require_approval

        return require_approval(tool, client=self, **options)  # type: ignore[arg-type]

    def _settings(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "token": self.token,
            "agent": self.agent,
            "requester": self.requester,
            "timeout": self.timeout,
            "retries": self.retries,
            "http_timeout": self.http_timeout,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "greenlight-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _ask(self, **fields: Any) -> dict[str, Any]:
        body = {"agent": self.agent, "requester": self.requester, **fields}
        return {k: v for k, v in body.items() if v is not None}

    def _question(
        self,
        question: str,
        *,
        choices: list[str] | None,
        yes_no: bool,
        answer_schema: type[Any] | dict[str, Any] | None,
        key: str | None,
        fields: dict[str, Any],
    ) -> tuple[dict[str, Any], TypeAdapter[Any] | None, str]:
        adapter = None
        schema = answer_schema
        if isinstance(answer_schema, dict) or answer_schema is None:
            pass
        else:
            adapter = TypeAdapter(answer_schema)
            schema = adapter.json_schema()
        fmt = "choices" if choices else "yes_no" if yes_no else "free_text"
        body = self._ask(
            question=question, format=fmt, choices=choices, answer_schema=schema, **fields
        )
        run = current_run()
        base = call_key("question", question, body, f"{key}\x00{run}" if key or run else None)
        return body, adapter, base

    def _retry_in(self, failures: int, after: float | None = None) -> float | None:
        """Seconds before retrying after ``failures`` failures in a row: the server's
        ``Retry-After`` (``after``, at most :data:`MAX_RETRY_AFTER`) if it gave one, else
        the client's own backoff; None: give up."""
        if failures > self.retries:
            return None
        return min(after, MAX_RETRY_AFTER) if after is not None else min(0.25 * 2**failures, 10.0)

    def _deadline(self, timeout: float | None) -> Callable[[], float | None]:
        end = None if timeout is None else time.monotonic() + timeout
        return lambda: None if end is None else max(0.0, end - time.monotonic())

    # --- flows: what each call sends and makes of the answers, with no I/O -------------------

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        wait: float = 0.0,
        left: Callable[[], float | None] | None = None,
        **kw: Any,
    ) -> Flow[dict[str, Any]]:
        """One request, retried while the server is unreachable or answers 5xx, when its
        ``Retry-After`` says if it said; a pause never goes past the deadline (``left``:
        the seconds it leaves), and a failure at the deadline is the call's error."""
        timeout = httpx.Timeout(self.http_timeout, read=self.http_timeout + wait)
        headers = {"Idempotency-Key": key} if key else {}
        call = Call(method, path, {"headers": headers, "timeout": timeout, **kw})
        failures = 0
        while True:
            status: int | None = None  # the last failure's: None when unreachable
            error: Any = None
            after: float | None = None
            try:
                r = yield call
                got = _status(r)
                if got is not None:
                    return got
                status, error, after = r.status_code, _failed(r), _retry_after(r)
            except httpx.TransportError as exc:
                error = exc
            failures += 1
            pause = self._retry_in(failures, after)
            remaining = None if left is None else left()
            if pause is None or remaining == 0.0:
                raise RequestError(status, error)
            yield Pause(pause if remaining is None else min(pause, remaining))

    def _waiting(
        self, kind: str, out: dict[str, Any], timeout: float | None
    ) -> Flow[dict[str, Any]]:
        """Long-poll ``out`` until it is closed, or :class:`StillPending` after ``timeout``."""
        timeout = self.timeout if timeout is None else timeout  # the call's, else the client's
        left = self._deadline(timeout)
        rid = out["id"]
        while out["status"] == "open":
            remaining = left()
            if remaining == 0.0:
                raise StillPending(rid, timeout or 0.0)
            wait = MAX_WAIT if remaining is None else min(MAX_WAIT, remaining)
            try:
                out = yield from self._exchange(
                    "GET", f"/{kind}/{rid}", params={"wait": wait}, wait=wait, left=left
                )
            except RequestError as exc:  # an outage while waiting: the request is still there
                exc._made(rid, None)
                raise
        return out

    def _approval(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        summary: str,
        arguments_schema: dict[str, Any] | None,
        policy: Policy,
        context: str | None,
        slack_channel: str | None,
        idempotency_key: str | None,
        timeout: float | None,
    ) -> Flow[Approved]:
        body = self._ask(
            tool=tool,
            arguments=arguments,
            arguments_schema=arguments_schema,
            summary=summary,
            context=context,
            policy=policy,
            slack_channel=slack_channel,
        )
        # A retried POST (a response lost to a timeout, a 5xx) must find the request its
        # first try made, never ask twice: so every POST has a key, random if none given.
        key = idempotency_key or f"gl-approval-{uuid.uuid4().hex}"
        try:
            out = yield from self._exchange("POST", "/approvals", key=key, json=body)
        except RequestError as exc:  # unreachable or failing: it may have made the request
            if _transient(exc):
                exc._made(None, key)
            raise
        try:
            out = yield from self._waiting("approvals", out, timeout)
        except RequestError as exc:  # to wait on it again, ask under the same key
            exc._made(None, key)
            raise
        except StillPending as exc:
            exc.idempotency_key = key
            raise
        return to_approved(out)

    def _answer(
        self,
        question: str,
        *,
        choices: list[str] | None,
        yes_no: bool,
        answer_schema: type[Any] | dict[str, Any] | None,
        context: str | None,
        answerers: list[str] | None,
        expires_in: float | None,
        key: str | None,
        timeout: float | None,
    ) -> Flow[Any]:
        fields = {"context": context, "answerers": answerers, "expires_in": expires_in}
        body, adapter, base = self._question(
            question,
            choices=choices,
            yes_no=yes_no,
            answer_schema=answer_schema,
            key=key,
            fields=fields,
        )
        nth = self.slots.take(base)
        try:
            out = yield from self._exchange("POST", "/questions", key=f"{base}.{nth}", json=body)
            out = yield from self._waiting("questions", out, timeout)
        except BaseException:
            self.slots.give_back(base, nth)
            raise
        return to_answer(out, adapter)


@dataclass(frozen=True)
class Call:
    """A flow's HTTP request: ``request(method, path, **options)`` on the client's pool."""

    method: str
    path: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Pause:
    """A flow's wait before it retries."""

    seconds: float


Flow = Generator[Call | Pause, Any, T]
"""A call's logic: yields what to do, is sent each :class:`Call`'s response (or has its
transport error thrown in), and returns the call's result."""


def _step(flow: Flow[T], reply: Any, error: BaseException | None) -> Call | Pause | _Done[T]:
    """The flow's next step after ``reply`` (or ``error``), or its result."""
    try:
        return flow.throw(error) if error is not None else flow.send(reply)
    except StopIteration as done:
        return _Done(done.value)


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


def _status(r: httpx.Response) -> dict[str, Any] | None:
    """The body of a success; None for a 5xx worth retrying; anything else raised.

    A success is a JSON request (an object with its ``id`` and ``status``): a redirect,
    or a 2xx that is not one (a proxy's page, another service at a wrong url), is a
    :class:`RequestError` naming the url and the status.
    """
    if r.status_code >= 500:
        return None
    if r.status_code >= 400:
        try:
            error: Any = r.json()
        except ValueError:
            error = None
        if not isinstance(error, dict):
            raise RequestError(r.status_code, r.text)
        code = error.get("error")
        raise RequestError(r.status_code, error.get("detail", r.text), code and str(code))
    asked = f"{r.request.method} {r.request.url}"
    if not 200 <= r.status_code < 300:
        where = r.headers.get("location")
        to = f" to {where}" if where else ""
        raise RequestError(
            r.status_code,
            f"{asked} was redirected{to}: the client follows no redirects, so give it "
            "the server's own url",
        )
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    if not (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and isinstance(body.get("status"), str)
    ):
        kind = r.headers.get("content-type", "no content type")
        raise RequestError(
            r.status_code,
            f"{asked} answered {r.status_code} with {kind}, not a Greenlight request "
            f"(is the client's url the server's?): {r.text[:200]!r}",
        )
    return body


def _failed(r: httpx.Response) -> str:
    """What a 5xx said: its JSON ``detail``, else the start of its text."""
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        return f"the server kept failing: {body['detail']}"
    return f"the server kept failing: {r.text[:200] or r.reason_phrase}"


def _retry_after(r: httpx.Response) -> float | None:
    """The seconds a 5xx's ``Retry-After`` says to wait, if it says them as seconds."""
    try:
        return max(0.0, float(r.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _transient(exc: RequestError) -> bool:
    """Whether the server may have handled the request that failed so."""
    return exc.status is None or exc.status >= 500


def _people(actors: list[dict[str, Any]]) -> list[str]:
    return [f"{a['channel']}:{a['id']}" for a in actors]


def to_approved(out: dict[str, Any]) -> Approved:
    """The decided approval, or the typed error of a request that was not approved."""
    rid, status, reason = out["id"], out["status"], out.get("reason")
    if status == "approved":
        by = _people(out.get("decided_by", []))
        return Approved(rid, out["arguments"], bool(out.get("edited")), by, reason)
    raise _not_done(rid, status, reason, out.get("decided_by", []))


def to_answer(out: dict[str, Any], adapter: TypeAdapter[Any] | None) -> Any:
    """The answered question's value (typed by ``adapter``), or the error of one unanswered."""
    if out["status"] == "answered":
        value = out.get("value")
        return value if adapter is None else adapter.validate_python(value)
    raise _not_done(out["id"], out["status"], out["status"], [])


def _not_done(rid: str, status: str, reason: str | None, by: list[dict[str, Any]]) -> NotApproved:
    if status == "rejected":
        return Rejected(rid, reason, _people(by))
    if status == "expired":
        return Expired(rid, reason or "expired")
    if status == "cancelled":
        return Cancelled(rid, reason or "cancelled")
    raise GreenlightError(f"{rid}: unexpected status {status!r}")


class Greenlight(_Base):
    """A blocking client: each call returns once people decided, answered or let it expire.

    ``Greenlight()`` reads ``GREENLIGHT_URL`` and ``GREENLIGHT_TOKEN``.
    """

    def _drive(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        with httpx.Client(base_url=self.url, headers=self._headers()) as http:
            while not isinstance(step := _step(flow, reply, error), _Done):
                reply, error = None, None
                try:
                    if isinstance(step, Pause):
                        time.sleep(step.seconds)
                    else:
                        reply = http.request(step.method, step.path, **step.options)
                except BaseException as exc:  # thrown into the flow, which gives back its slot
                    error = exc
        return step.value

    def request_approval(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        summary: str,
        arguments_schema: dict[str, Any] | None = None,
        policy: Policy = None,
        context: str | None = None,
        slack_channel: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Approved:
        """Ask people to approve ``tool(**arguments)`` and wait for their decision.

        Args:
            idempotency_key: names the request: the same key again (another process,
                after a restart) finds the request it made. None: a random key of this
                call, so a retry after a lost response still makes one request.

        Returns:
            the approval, with the arguments to run (an approver's edit, if any).

        Raises:
            Rejected: with the approver's reason; Expired, Cancelled; StillPending when
            ``timeout`` (or the client's) ran out; RequestError when the server refused.
        """
        return self._drive(
            self._approval(
                tool,
                arguments,
                summary=summary,
                arguments_schema=arguments_schema,
                policy=policy,
                context=context,
                slack_channel=slack_channel,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    @overload
    def ask_human(
        self,
        question: str,
        *,
        answer_schema: type[T],
        context: str | None = ...,
        answerers: list[str] | None = ...,
        expires_in: float | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,
    ) -> T: ...
    @overload
    def ask_human(
        self,
        question: str,
        *,
        choices: list[str] | None = ...,
        yes_no: bool = ...,
        answer_schema: dict[str, Any] | None = ...,
        context: str | None = ...,
        answerers: list[str] | None = ...,
        expires_in: float | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,
    ) -> Any: ...
    def ask_human(
        self,
        question: str,
        *,
        choices: list[str] | None = None,
        yes_no: bool = False,
        answer_schema: type[Any] | dict[str, Any] | None = None,
        context: str | None = None,
        answerers: list[str] | None = None,
        expires_in: float | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Ask people a question and wait for the answer.

        Args:
            question: what to ask.
            choices: the answers allowed; the answer is one of them, as spelled here.
            yes_no: answers are yes or no; the answer is True or False.
            answer_schema: a JSON Schema, or a type (a pydantic model, ``int``,
                ``list[str]``...): the answer is JSON matching it, returned parsed (typed).
            context: more for the people asked.
            answerers: who may answer (``group:<name>`` or identities); none: anyone.
            expires_in: seconds until the question expires unanswered.
            key: your own key (a run or job id): the same question in another run is asked
                again, in a restarted process of the same run it is not.
            timeout: how long to wait here before :class:`StillPending`.

        Raises:
            Expired, Cancelled; StillPending; RequestError.
        """
        return self._drive(
            self._answer(
                question,
                choices=choices,
                yes_no=yes_no,
                answer_schema=answer_schema,
                context=context,
                answerers=answerers,
                expires_in=expires_in,
                key=key,
                timeout=timeout,
            )
        )


class AsyncGreenlight(_Base):
    """The same as :class:`Greenlight`, awaited: for agents that run on an event loop."""

    async def _drive(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        async with httpx.AsyncClient(base_url=self.url, headers=self._headers()) as http:
            while not isinstance(step := _step(flow, reply, error), _Done):
                reply, error = None, None
                try:
                    if isinstance(step, Pause):
                        await asyncio.sleep(step.seconds)
                    else:
                        reply = await http.request(step.method, step.path, **step.options)
                except BaseException as exc:  # cancelled too: the flow gives back its slot
                    error = exc
        return step.value

    async def request_approval(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        summary: str,
        arguments_schema: dict[str, Any] | None = None,
        policy: Policy = None,
        context: str | None = None,
        slack_channel: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a wait for people, not one await
    ) -> Approved:
        """Ask people to approve ``tool(**arguments)``: see :meth:`Greenlight.request_approval`."""
        return await self._drive(
            self._approval(
                tool,
                arguments,
                summary=summary,
                arguments_schema=arguments_schema,
                policy=policy,
                context=context,
                slack_channel=slack_channel,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    @overload
    async def ask_human(
        self,
        question: str,
        *,
        answer_schema: type[T],
        context: str | None = ...,
        answerers: list[str] | None = ...,
        expires_in: float | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> T: ...
    @overload
    async def ask_human(
        self,
        question: str,
        *,
        choices: list[str] | None = ...,
        yes_no: bool = ...,
        answer_schema: dict[str, Any] | None = ...,
        context: str | None = ...,
        answerers: list[str] | None = ...,
        expires_in: float | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> Any: ...
    async def ask_human(
        self,
        question: str,
        *,
        choices: list[str] | None = None,
        yes_no: bool = False,
        answer_schema: type[Any] | dict[str, Any] | None = None,
        context: str | None = None,
        answerers: list[str] | None = None,
        expires_in: float | None = None,
        key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a wait for people, not one await
    ) -> Any:
        """Ask people a question and wait for the answer: see :meth:`Greenlight.ask_human`."""
        return await self._drive(
            self._answer(
                question,
                choices=choices,
                yes_no=yes_no,
                answer_schema=answer_schema,
                context=context,
                answerers=answerers,
                expires_in=expires_in,
                key=key,
                timeout=timeout,
            )
        )


_defaults: dict[type[_Base], _Base] = {}
_defaults_lock = threading.Lock()


def default_client(kind: type[_Base]) -> _Base:
    """The client built from the environment, once per process, for decorators given none."""
    with _defaults_lock:
        if kind not in _defaults:
            _defaults[kind] = kind()
        return _defaults[kind]
