"""What an agent is (factor 10), and where agents come from: packages, modules, entry points."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from bot.domain.errors import ConfigError
from bot.domain.model import ModelCall, ModelRequest
from bot.domain.tools import BUILTINS, Tool

Prefetch = Callable[[], Awaitable[dict[str, Any]]]
OfflineScript = Callable[[ModelRequest], list[ModelCall]]


@dataclass(frozen=True)
class Agent:
    """A small, focused agent.

    Attributes:
        name: how users address it (``deploy``).
        prompt: its system prompt, read from the ``prompt.md`` in its folder.
        tools: its own tools; ``ask_human`` and ``reply`` are added for it.
        prefetch: data fetched before its first model call, by name.
        offline: a scripted policy the offline model follows for this agent.
        max_steps: model turns allowed between two human inputs.
        description: what it is for, in a sentence: how the triage step picks an
            agent for a message that names none (``bot.domain.triage``).
    """

    name: str
    prompt: str
    tools: tuple[Tool, ...]
    prefetch: dict[str, Prefetch] = field(default_factory=dict)
    offline: OfflineScript | None = None
    max_steps: int = 10
    description: str = ""

    @cached_property
    def all_tools(self) -> dict[str, Tool]:
        """Its own tools and the built-ins, by name."""
        return {t.name: t for t in (*self.tools, *BUILTINS)}


def read_prompt(module_file: str) -> str:
    """The ``prompt.md`` beside an agent's module, read as is (factor 2)."""
    return (Path(module_file).parent / "prompt.md").read_text(encoding="utf-8")


ENTRY_POINTS = "greenlight.agents"
"""The entry-point group through which an installed package offers agents."""


def load_agents(modules: Sequence[str] = ("agents",)) -> dict[str, Agent]:
    """Every agent of ``modules`` and of the ``greenlight.agents`` entry points.

    A name in ``modules`` is a module defining ``AGENT``, or a package whose
    subpackages and modules each define one (``agents``: the bundled ones). An
    entry point names an ``Agent`` (``my_pkg.billing:AGENT``) or such a module.

    Raises:
        ConfigError: a module cannot be imported, defines no ``AGENT`` or one
            that is not an ``Agent``, or two agents share a name; the message
            names the module and what is wrong.
    """
    found: dict[str, tuple[Agent, str]] = {}
    for name in modules:
        for agent, where in _from_module(name, f"AGENT_MODULES names {name!r}"):
            _add(found, agent, where)
    for point in entry_points(group=ENTRY_POINTS):
        where = f"entry point {point.name!r} ({point.value}) of {ENTRY_POINTS}"
        try:
            loaded = point.load()
        except Exception as exc:
            raise ConfigError(f"{where} does not load: {type(exc).__name__}: {exc}") from exc
        offered = getattr(loaded, "AGENT", None) if isinstance(loaded, ModuleType) else loaded
        _add(found, _checked(offered, where), where)
    return {name: agent for name, (agent, _) in found.items()}


def _from_module(name: str, why: str) -> list[tuple[Agent, str]]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(f"{why}, which does not import: {type(exc).__name__}: {exc}") from exc
    if hasattr(module, "AGENT") or not hasattr(module, "__path__"):
        return [(_checked(getattr(module, "AGENT", None), name), name)]
    agents = []
    for info in pkgutil.iter_modules(module.__path__):
        inner = f"{name}.{info.name}"
        try:
            sub = importlib.import_module(inner)
        except Exception as exc:
            raise ConfigError(f"{inner} does not import: {type(exc).__name__}: {exc}") from exc
        if info.ispkg or hasattr(sub, "AGENT"):
            agents.append((_checked(getattr(sub, "AGENT", None), inner), inner))
    return agents


def _checked(agent: object, where: str) -> Agent:
    if not isinstance(agent, Agent):
        got = "nothing" if agent is None else type(agent).__name__
        raise ConfigError(f"{where} must define AGENT = Agent(...), found {got}")
    return agent


def _add(found: dict[str, tuple[Agent, str]], agent: Agent, where: str) -> None:
    if agent.name in found and found[agent.name][0] is not agent:
        raise ConfigError(
            f"two agents are named {agent.name!r}: from {found[agent.name][1]} and from {where}"
        )
    found[agent.name] = (agent, where)
