"""Triage: which agent a message that names none is for. Pure.

A thread started without naming an agent has the agent ``TRIAGE`` until the
loop chooses one (``AgentChosen``): the person's words name one (``deploy api
1.5.0``), or there is only one, or the model picks among the agents'
descriptions with one tool call whose only argument is an enum of their names.
Any other answer (no call, ``none``, a name that is no agent) asks the person,
with the list; their reply is triaged the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from bot.domain.agents import Agent
from bot.domain.model import Block, ModelRequest, ModelTurn, ToolSpec
from bot.domain.text import cut

TRIAGE = "triage"
"""The agent of a thread until triage chooses one; no agent may have this name."""
CHOOSE = "choose_agent"
NONE = "none"
SAID_MAX = 5
"""The person's last messages the model reads."""
PROMPT = (
    "You route a person's message to the one agent that should handle it, from the "
    "agents listed with what each is for. Call choose_agent with that agent's name, "
    'or with "none" when no agent fits or the message is unclear. Never guess.'
)


def to_agent(text: str, agents: Collection[str]) -> str | None:
    """The agent the first word names (``deploy api 1.5.0`` → ``deploy``), if any."""
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    name = first.strip(":,").lower()
    return name if name in agents else None


def describe(agent: Agent) -> str:
    """What an agent is for: its description, else its prompt's first line."""
    lines = agent.description.strip() or agent.prompt.strip()
    return cut(lines.splitlines()[0] if lines else agent.name, 300)


def to_request(agents: Mapping[str, Agent], said: Sequence[str]) -> ModelRequest:
    """The one model call that picks an agent for what the person ``said``."""
    listing = "\n".join(f"{name}: {describe(agent)}" for name, agent in sorted(agents.items()))
    choose = ToolSpec(
        name=CHOOSE,
        description="Choose the agent that should handle the person's message.",
        input_schema={
            "type": "object",
            "properties": {"agent": {"type": "string", "enum": [*sorted(agents), NONE]}},
            "required": ["agent"],
            "additionalProperties": False,
        },
    )
    blocks = [
        Block("agents", listing),
        *(Block("user_message", cut(text, 2000)) for text in said[-SAID_MAX:]),
    ]
    return ModelRequest(agent=TRIAGE, system=PROMPT, blocks=blocks, tools=[choose])


def from_turn(turn: ModelTurn, agents: Collection[str]) -> str | None:
    """The agent the model chose, or None when its answer names no agent."""
    for call in turn.calls:
        chosen = call.args.get("agent") if call.name == CHOOSE else None
        if isinstance(chosen, str) and chosen in agents:
            return chosen
    return None


def to_question(agents: Mapping[str, Agent]) -> str:
    """Asks the person which agent, with the list: their reply, starting with a name, picks it."""
    listed = "\n".join(f"• {name}: {describe(agent)}" for name, agent in sorted(agents.items()))
    return f'Which agent is this for? Reply with its name first, e.g. "{min(agents)} …".\n{listed}'
