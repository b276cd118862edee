"""What an agent is (factor 10) and how the ``agents/`` folders are found."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
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
    """

    name: str
    prompt: str
    tools: tuple[Tool, ...]
    prefetch: dict[str, Prefetch] = field(default_factory=dict)
    offline: OfflineScript | None = None
    max_steps: int = 10

    @cached_property
    def all_tools(self) -> dict[str, Tool]:
        """Its own tools and the built-ins, by name."""
        return {t.name: t for t in (*self.tools, *BUILTINS)}


def read_prompt(module_file: str) -> str:
    """The ``prompt.md`` beside an agent's module, read as is (factor 2)."""
    return (Path(module_file).parent / "prompt.md").read_text(encoding="utf-8")


def load_agents(package: str = "agents") -> dict[str, Agent]:
    """Every agent under ``package``: each subpackage exporting ``AGENT``."""
    root = importlib.import_module(package)
    found: dict[str, Agent] = {}
    for info in pkgutil.iter_modules(root.__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        agent = getattr(module, "AGENT", None)
        if not isinstance(agent, Agent):
            raise ConfigError(f"{package}.{info.name} must define AGENT = Agent(...)")
        found[agent.name] = agent
    return found
