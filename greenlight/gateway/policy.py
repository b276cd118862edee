"""The gateway's policy file: which tool calls wait for people, and who decides them.

A TOML file of ``[[gate]]`` tables, tried in order; the first that matches a call gates
it, and a call no gate matches passes straight through::

    [[gate]]
    name = "deletes in production"
    tools = ["delete_*", "drop_table"]        # glob patterns on the tool's name
    when = [{ arg = "path", glob = "/prod/*" }] # all must hold (none: every call)
    approvers = ["group:ops", "alice@example.com"]
    min_approvals = 2
    expires_in = 900
    on_expiry = "escalate"
    escalate_to = ["group:leads"]

Loading is pure: :func:`load` reads, checks everything it can and raises
:class:`PolicyError` naming the gate and field that is wrong. Whether the gates fit the
upstream's tools is checked once they are known (:meth:`Policy.check`): a pattern of
``tools`` that matches none of them (a misspelled name) would guard nothing, and a test
that needs an argument a tool it covers does not take would never hold, so the gate
would let every call of that tool through. Who the approvers resolve to is checked by
the server, which refuses (and the call with it) a policy naming nobody.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from greenlight.errors import ConfigError
from greenlight.gateway.arguments import lookup, path_matches, takes

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
OPERATORS = ("equals", "not_equals", "in", "glob", "regex", "gt", "ge", "lt", "le", "exists")


class PolicyError(ConfigError):
    """The policy file cannot be used: the message names the file, the gate and the field."""


class Predicate(BaseModel):
    """One test of one argument, e.g. ``{ arg = "amount", gt = 100 }``.

    A missing argument fails every test but ``exists = false``. A test that cannot be
    made (``gt`` between a number and text) holds: in doubt, people are asked.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    arg: Text
    """The argument, a dotted path into nested objects (``target.env``)."""
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    glob: str | None = None
    regex: str | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Predicate:
        given = [op for op in OPERATORS if op in self._given()]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one test for {self.arg!r} (one of {', '.join(OPERATORS)}); "
                f"got {', '.join(given) or 'none'}"
            )
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self

    def _given(self) -> set[str]:
        return {"in" if name == "in_" else name for name in self.model_fields_set} - {"arg"}

    def holds(self, arguments: dict[str, Any]) -> bool:
        op = next(iter(self._given()))
        found, value = lookup(arguments, self.arg)
        if op == "exists":
            return found == self.exists
        if not found:
            return False
        expected = getattr(self, "in_" if op == "in" else op)
        try:
            return _test(op, value, expected)
        except TypeError:
            return True

    def needs_argument(self) -> bool:
        """Whether the test can hold only when its argument is given: every test but
        ``exists = false``, which holds exactly when it is not."""
        return self.exists is not False


def _test(op: str, value: Any, expected: Any) -> bool:
    if op == "equals":
        return bool(value == expected)
    if op == "not_equals":
        return bool(value != expected)
    if op == "in":
        return bool(value in expected)
    if op in ("glob", "regex"):
        if not isinstance(value, str):
            raise TypeError(op)
        if op == "glob" and expected.startswith("/"):
            return path_matches(value, expected)
        if op == "glob":
            return fnmatch.fnmatchcase(value, expected)
        return re.search(expected, value) is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(op)
    return bool(_COMPARE[op](value, expected))


class Gate(BaseModel):
    """Calls that wait for people: which, and the approval policy they are asked under."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = None
    """Shown in the call log; default the gate's position (``gate 1``)."""
    tools: list[Text] = Field(min_length=1)
    """Glob patterns on the tool's name (``delete_*``); ``*`` gates every tool. Each must
    match a tool the upstream lists at start-up, unless ``tools_added_later``."""
    tools_added_later: bool = False
    """The gate is for tools the upstream adds after start-up (announcing that its tool
    list changed): start-up does not require ``tools`` to match a tool listed then."""
    when: list[Predicate] = Field(default_factory=list)
    """Tests on the call's arguments, all of which must hold; none: every call."""
    summary: Text | None = None
    """What approvers read first; default "<tool> through the MCP gateway"."""
    policy: Text | None = None
    """The name of one of the server's APPROVAL_POLICIES, instead of the fields below."""
    approvers: list[Text] | None = Field(None, min_length=1)
    """Identities or ``group:<name>`` (APPROVER_GROUPS on the server), or ``*``."""
    min_approvals: int | None = Field(None, ge=1, le=20)
    allow_self_approval: bool | None = None
    expires_in: float | None = Field(None, gt=0)
    """Seconds until the request expires."""
    on_expiry: Literal["reject", "escalate"] | None = None
    escalate_to: list[Text] | None = None
    remind_before: list[Annotated[float, Field(gt=0)]] | None = None
    risky: bool | None = None
    slack_channel: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,40}$")] | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> Gate:
        inline = self.inline()
        if self.policy is not None and inline:
            raise ValueError(
                f"give either policy = {self.policy!r} or {', '.join(sorted(inline))}, not both"
            )
        if inline and self.approvers is None:
            raise ValueError(f"{', '.join(sorted(inline))} needs approvers")
        if self.on_expiry == "escalate" and not self.escalate_to:
            raise ValueError('on_expiry = "escalate" needs escalate_to')
        return self

    def inline(self) -> dict[str, Any]:
        """The inline approval policy, as the approvals API takes it; empty: none given."""
        fields = set(type(self).model_fields) - {
            "name",
            "tools",
            "tools_added_later",
            "when",
            "summary",
            "policy",
            "slack_channel",
        }
        return {k: v for k, v in self.model_dump(include=fields).items() if v is not None}

    def to_policy(self) -> str | dict[str, Any] | None:
        """What ``POST /approvals`` takes as ``policy``: a name, an object, or the default."""
        return self.policy or self.inline() or None

    def covers(self, tool: str) -> bool:
        """Whether one of ``tools`` names ``tool``."""
        return any(fnmatch.fnmatchcase(tool, p) for p in self.tools)

    def unmatched(self, listed: Collection[str]) -> list[str]:
        """The patterns of ``tools`` that name none of the tools ``listed`` (none if the
        gate's tools may be added later)."""
        if self.tools_added_later:
            return []
        return [p for p in self.tools if not any(fnmatch.fnmatchcase(t, p) for t in listed)]

    def matches(self, tool: str, arguments: dict[str, Any]) -> bool:
        return self.covers(tool) and all(p.holds(arguments) for p in self.when)


class Policy(BaseModel):
    """The whole file: its gates, in the order they are tried."""

    model_config = ConfigDict(extra="forbid")

    gate: list[Gate] = Field(default_factory=list)

    def gate_for(self, tool: str, arguments: dict[str, Any]) -> tuple[str, Gate] | None:
        """The first gate that matches the call, with its name; None: let it through."""
        for name, gate in self._named():
            if gate.matches(tool, arguments):
                return name, gate
        return None

    def tests(self, tool: str) -> bool:
        """Whether a gate covering ``tool`` tests its arguments (then its schema matters)."""
        return any(gate.when for _, gate in self._named() if gate.covers(tool))

    def misfits(self, tool: str, schema: Mapping[str, Any] | None) -> list[str]:
        """The tests of the gates covering ``tool`` that need an argument it does not take,
        described; ``schema`` is the tool's input schema, None when the upstream lists no
        such tool. Such a test never holds: the gate would never stop a call of the tool.
        (``exists = false`` of an argument the tool does not take always holds: it fits.)
        """
        if schema is None:
            takes_ = "it is not among the upstream's tools"
        else:
            names = sorted(schema.get("properties") or {})
            takes_ = f"it takes {', '.join(names) or 'no arguments'}"
        return [
            f"gate {name!r} tests argument {test.arg!r}, which tool {tool!r} does not take "
            f"({takes_})"
            for name, gate in self._named()
            if gate.covers(tool)
            for test in gate.when
            if test.needs_argument() and not takes(schema, test.arg)
        ]

    def check(self, tools: Mapping[str, Mapping[str, Any]]) -> None:
        """Raise :class:`PolicyError` unless every gate's tools name tools the upstream
        lists and every test fits the tools it covers.

        Args:
            tools: the upstream's tools, by name: their input schemas.
        """
        problems: list[str] = []
        unmatched = [
            f"gate {name!r}: {', '.join(map(repr, patterns))}"
            for name, gate in self._named()
            if (patterns := gate.unmatched(tools))
        ]
        if unmatched:
            problems.append(
                "the policy names tools the upstream does not list, so its gates would "
                f"guard nothing there: {'; '.join(unmatched)}. The upstream lists "
                f"{_listing(tools)}. Correct the name or leave it out of the gate's tools; "
                "a gate for tools the upstream adds after start-up says "
                "tools_added_later = true"
            )
        misfits = [p for tool in sorted(tools) for p in self.misfits(tool, tools[tool])]
        if misfits:
            problems.append(
                "the policy does not fit the upstream's tools, so calls it means to gate "
                f"would pass: {'; '.join(misfits)}. Test an argument each tool takes "
                "(a gate per argument: its tests must all hold), or leave the tool out of "
                "the gate's tools"
            )
        if problems:
            raise PolicyError(". ".join(problems))

    def _named(self) -> list[tuple[str, Gate]]:
        return [(gate.name or f"gate {n}", gate) for n, gate in enumerate(self.gate, start=1)]


def _listing(tools: Collection[str], most: int = 40) -> str:
    """``a, b, c``: the tools' names, at most ``most`` of them."""
    names = sorted(tools)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"{', '.join(names[:most])}{more}" if names else "no tools"


def load(path: Path) -> Policy:
    """The policy in the TOML file at ``path``, checked; :class:`PolicyError` if it is not."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"policy file {path}: cannot be read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path}: not TOML: {exc}") from exc
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise PolicyError(f"policy file {path}: {problems}") from exc
    if not policy.gate:
        raise PolicyError(f"policy file {path}: no [[gate]] tables: it would gate nothing")
    return policy


def _where(loc: tuple[int | str, ...]) -> str:
    """``gate[2].when[1].regex`` for ``("gate", 1, "when", 0, "regex")``: counted from 1."""
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else f".{part}" if out else part
    return out or "the file"
