"""``require_approval``: a function that runs only once people approved the call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from greenlight.calls import Signature, call_key, current_run
from greenlight.client import AsyncGreenlight, Greenlight, Policy, _Base, default_client
from greenlight.errors import ConfigError, NotApproved

P = ParamSpec("P")
R = TypeVar("R")
Summary = str | Callable[[dict[str, Any]], str] | None
Key = str | Callable[[dict[str, Any]], str] | None


def require_approval(
    tool: str | None = None,
    *,
    summary: Summary = None,
    context: str | None = None,
    policy: Policy = None,
    arguments_schema: dict[str, Any] | bool = True,
    exclude: tuple[str, ...] = (),
    key: Key = None,
    slack_channel: str | None = None,
    timeout: float | None = None,
    client: Greenlight | AsyncGreenlight | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Ask people to approve each call of the decorated function before it runs.

    The function (sync or async) runs once approved, with the approved arguments: an
    approver's edit if they edited them. The request is keyed by the call (the function,
    its arguments, ``key`` and the :func:`greenlight.run` id), so a process killed while
    waiting and started again waits on the same request instead of asking twice.

    Args:
        tool: the name approvers see; default the function's name.
        summary: why the call is made, shown to approvers: text, or a function of the
            arguments (as JSON) returning it; default the call itself.
        context: more for approvers, under the summary.
        policy: the name of one of the server's APPROVAL_POLICIES, or a policy object
            (``{"approvers": ["group:deployers"], "min_approvals": 2, ...}``); default
            the server's ``default`` policy.
        arguments_schema: True derives the arguments' JSON Schema from the type hints
            (approvers may then edit them, and edits are checked against it); a schema
            to give one; False for none (no edits).
        exclude: parameters neither shown nor sent (contexts, clients); ``self`` and
            ``cls`` are always left out. They are passed through as called.
        key: your own key for the call, or a function of the arguments returning it.
        slack_channel: the Slack channel to ask in; default the server's.
        timeout: seconds to wait before :class:`StillPending`; default the client's.
        client: the client to ask with; default one built from GREENLIGHT_URL and
            GREENLIGHT_TOKEN.

    Raises (from the decorated function):
        Rejected: with the reason and who rejected; Expired; Cancelled; StillPending;
        RequestError.

    Raises:
        ConfigError: ``tool`` is not a name: the decorator used without parentheses, or a
            policy given in its place (it goes in ``policy=``).
    """
    if tool is not None and not isinstance(tool, str):
        used = "without parentheses" if callable(tool) else f"with a {type(tool).__name__}"
        raise ConfigError(
            f"require_approval's first argument is the tool's name, a str (used {used}): "
            "write @require_approval() or @require_approval(policy=...)"
        )

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        sig = Signature.of(fn, exclude, typed=arguments_schema is True)
        schema = arguments_schema if isinstance(arguments_schema, dict) else sig.schema()
        name = tool or fn.__name__
        is_async = inspect.iscoroutinefunction(fn)
        chosen = _client_for(client, is_async)

        def prepare(args: Any, kwargs: Any) -> tuple[Any, dict[str, Any], dict[str, Any], str]:
            bound = sig.arguments(args, kwargs)
            shown = sig.to_json(bound)
            own = key(shown) if callable(key) else key
            asked = _asked(shown, policy)
            base = call_key("approval", sig.identity, asked, _join(own, current_run()))
            ask = {
                "summary": _summary(summary, name, shown),
                "arguments_schema": schema,
                "policy": policy,
                "context": context,
                "slack_channel": slack_channel,
                "timeout": timeout,
            }
            return bound, shown, ask, base

        if is_async:

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                gl = cast(AsyncGreenlight, chosen())
                bound, shown, ask, base = prepare(args, kwargs)
                nth = gl.slots.take(base)
                try:
                    ok = await gl.request_approval(
                        name, shown, idempotency_key=f"{base}.{nth}", **ask
                    )
                except BaseException as exc:
                    _release(gl, base, nth, exc)
                    raise
                a, kw = sig.rebuild(bound, ok.arguments, ok.edited)
                return await fn(*a, **kw)  # type: ignore[misc]

            return cast(Callable[P, R], functools.wraps(fn)(run_async))

        def run_sync(*args: Any, **kwargs: Any) -> Any:
            gl = cast(Greenlight, chosen())
            bound, shown, ask, base = prepare(args, kwargs)
            nth = gl.slots.take(base)
            try:
                ok = gl.request_approval(name, shown, idempotency_key=f"{base}.{nth}", **ask)
            except BaseException as exc:
                _release(gl, base, nth, exc)
                raise
            a, kw = sig.rebuild(bound, ok.arguments, ok.edited)
            return fn(*a, **kw)

        return cast(Callable[P, R], functools.wraps(fn)(run_sync))

    return decorate


def _client_for(given: Greenlight | AsyncGreenlight | None, is_async: bool) -> Callable[[], _Base]:
    """The client a call asks with: built at the first call, so importing needs no env."""
    kind: type[_Base] = AsyncGreenlight if is_async else Greenlight
    if given is None:
        return lambda: default_client(kind)
    if isinstance(given, kind):
        return lambda: given
    same = kind(**given._settings())
    same.slots = given.slots
    return lambda: same


def _release(gl: _Base, base: str, nth: int, exc: BaseException) -> None:
    """A decided request keeps its slot; a wait cut short gives it back for a retry."""
    if not isinstance(exc, NotApproved):
        gl.slots.give_back(base, nth)


def _asked(shown: dict[str, Any], policy: Policy) -> Any:
    """What of a call its key is derived from: its arguments and, if given, its policy.

    A process started again with another policy asks people anew under it, as the MCP
    gateway does: the server refuses a key sent again for other approvers, and the
    request made under the old policy is not this call's approval.
    """
    return shown if policy is None else [shown, policy]


def _join(own: str | None, run: str | None) -> str | None:
    return None if own is None and run is None else f"{own or ''}\x00{run or ''}"


def _summary(summary: Summary, name: str, shown: dict[str, Any]) -> str:
    if callable(summary):
        text = summary(shown)
    elif summary:
        text = summary
    else:
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        text = f"{name}({args})"
    if not text.strip():
        raise ConfigError(f"the summary of {name} is empty")
    return text[:2000]
