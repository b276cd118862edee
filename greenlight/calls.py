"""A call of a decorated function as an approval sees it: JSON arguments, a schema, a key.

Pure functions, no I/O: binding a call, turning its arguments into JSON, deriving the
arguments' JSON Schema from the type hints, the idempotency key of the call, and
rebuilding the call from the (possibly edited) arguments an approver approved.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, get_type_hints

import pydantic
from pydantic_core import PydanticSerializationError, to_jsonable_python

from greenlight.errors import ConfigError

_RUN: ContextVar[str | None] = ContextVar("greenlight_run", default=None)


@contextlib.contextmanager
def run(run_id: str) -> Iterator[None]:
    """Key every request made inside the block by ``run_id`` as well as by the call.

    A restarted process that enters the same run asks nothing twice; another run asks
    again. Use the id of the unit of work: a LangGraph thread id, a job id, a ticket.
    """
    token = _RUN.set(run_id)
    try:
        yield
    finally:
        _RUN.reset(token)


def current_run() -> str | None:
    """The run id set by the innermost :func:`run` block, if any."""
    return _RUN.get()


@dataclass(frozen=True)
class Signature:
    """What is known of a decorated function before it is called."""

    identity: str
    """``module.qualname``: the same in a restarted process."""
    signature: inspect.Signature
    shown: tuple[str, ...]
    """The parameters sent for approval; the rest (``self``, contexts) pass through."""
    model: type[pydantic.BaseModel] | None
    """The shown parameters as a model: their JSON Schema, and edited arguments read back."""

    @classmethod
    def of(cls, fn: Callable[..., Any], exclude: tuple[str, ...], typed: bool) -> Signature:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        skip = set(exclude)
        if params and params[0].name in ("self", "cls"):
            skip.add(params[0].name)
        unknown = skip - {p.name for p in params} - {"self", "cls"}
        if unknown:
            raise ConfigError(f"exclude names no parameter of {fn.__qualname__}: {sorted(unknown)}")
        shown = tuple(p.name for p in params if p.name not in skip)
        model = _model(fn, [p for p in params if p.name in shown]) if typed else None
        return cls(f"{fn.__module__}.{fn.__qualname__}", sig, shown, model)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """The call bound to the parameters, defaults filled in (approvers see them too)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def to_json(self, bound: inspect.BoundArguments) -> dict[str, Any]:
        """The shown arguments as JSON values: what approvers see and approve."""
        shown = {k: v for k, v in bound.arguments.items() if k in self.shown}
        if self.model is not None:
            return self.model.model_validate(shown).model_dump(mode="json")
        out: dict[str, Any] = {}
        for name, value in shown.items():
            try:
                out[name] = to_jsonable_python(value)
            except PydanticSerializationError as exc:
                raise ConfigError(
                    f"argument {name!r} of type {type(value).__name__} is not JSON: "
                    f"leave it out with exclude=({name!r},)"
                ) from exc
        return out

    def schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the shown arguments, derived from the type hints."""
        return None if self.model is None else self.model.model_json_schema()

    def rebuild(
        self, bound: inspect.BoundArguments, approved: dict[str, Any], edited: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call to make: the original one, or the approver's edit typed by the hints."""
        if not edited:
            return bound.args, bound.kwargs
        if self.model is not None:
            parsed = self.model.model_validate(approved)
            approved = {name: getattr(parsed, name) for name in self.shown}
        values = {**bound.arguments, **{k: v for k, v in approved.items() if k in self.shown}}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self.signature.parameters.values():
            if p.name not in values:
                continue
            value = values[p.name]
            if p.kind is p.POSITIONAL_ONLY:
                args.append(value)
            elif p.kind is p.VAR_POSITIONAL:
                args.extend(value)
            elif p.kind is p.VAR_KEYWORD:
                kwargs.update(value)
            elif p.kind is p.POSITIONAL_OR_KEYWORD and not kwargs:
                args.append(value)
            else:
                kwargs[p.name] = value
        return tuple(args), kwargs


def _model(fn: Callable[..., Any], params: list[inspect.Parameter]) -> type[pydantic.BaseModel]:
    try:
        hints = get_type_hints(fn)
    except (NameError, TypeError) as exc:
        raise ConfigError(
            f"the type hints of {fn.__qualname__} cannot be read ({exc}): give "
            "arguments_schema=... or arguments_schema=False"
        ) from exc
    fields: dict[str, Any] = {}
    for p in params:
        hint: Any = hints.get(p.name, Any)
        default: Any = ... if p.default is p.empty else p.default
        if p.kind is p.VAR_POSITIONAL:
            hint, default = list[hint], []
        elif p.kind is p.VAR_KEYWORD:
            hint, default = dict[str, hint], {}
        try:
            pydantic.TypeAdapter(hint).json_schema()
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
            raise ConfigError(
                f"argument {p.name!r} of {fn.__qualname__} has no JSON Schema: leave it out "
                f"with exclude=({p.name!r},), or give arguments_schema=... or False"
            ) from exc
        fields[p.name] = (hint, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    try:
        return pydantic.create_model(fn.__name__, __config__=config, **fields)
    except (pydantic.PydanticSchemaGenerationError, TypeError, NameError) as exc:
        raise ConfigError(
            f"no JSON Schema for the arguments of {fn.__qualname__} ({exc}): give "
            "arguments_schema=... or arguments_schema=False, or exclude=(...) the argument"
        ) from exc


def call_key(kind: str, identity: str, payload: Any, key: str | None) -> str:
    """The key of a call, the same in a restarted process: a request's key adds its slot.

    Args:
        kind: ``approval`` or ``question``.
        identity: the function (``module.qualname``) or the question asked.
        payload: the arguments (or the question's shape), as JSON.
        key: the caller's own key and run id, if any.
    """
    material = json.dumps([kind, identity, payload, key], sort_keys=True, default=str)
    return f"gl-{kind}-{hashlib.sha256(material.encode()).hexdigest()[:40]}"


class Slots:
    """Which occurrences of each call this process has taken: the n-th same call's slot.

    A slot is held while its request is waited on and kept once the request is decided,
    so a second identical call makes a new request; a wait cut short (a timeout, an
    unreachable server) gives its slot back, so calling again waits on the same request.
    """

    def __init__(self) -> None:
        self._taken: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def take(self, base: str) -> int:
        with self._lock:
            taken = self._taken.setdefault(base, set())
            nth = next(n for n in itertools.count() if n not in taken)
            taken.add(nth)
            return nth

    def give_back(self, base: str, nth: int) -> None:
        with self._lock:
            self._taken.get(base, set()).discard(nth)
