"""The offline model: deterministic, no key, no network.

It follows each agent's own scripted policy (``Agent.offline``), reading the
same rendered blocks a language model would. Greenlight runs on it when no
``ANTHROPIC_API_KEY`` is set, and says so loudly at start-up.
"""

from __future__ import annotations

from bot.domain.agents import Agent
from bot.domain.errors import ModelError
from bot.domain.model import Block, ModelCall, ModelRequest, ModelTurn


class OfflineModel:
    """Scripted turns per agent; an agent without a script only replies."""

    name = "offline"

    def __init__(self, agents: dict[str, Agent]) -> None:
        self.agents = agents

    async def complete(self, request: ModelRequest) -> ModelTurn:
        agent = self.agents.get(request.agent)
        if agent is None or agent.offline is None:
            raise ModelError(f"the offline model has no script for agent {request.agent!r}")
        return ModelTurn(calls=agent.offline(request))


def last_block(request: ModelRequest, *tags: str) -> Block | None:
    """The latest block, or the latest with one of ``tags``."""
    for block in reversed(request.blocks):
        if not tags or block.tag in tags:
            return block
    return None


def call(name: str, **args: object) -> list[ModelCall]:
    """One tool call, as a script returns it."""
    return [ModelCall(name=name, args=dict(args))]
