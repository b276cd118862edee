"""The model port: one coroutine that turns a rendered thread into tool calls.

Adapters (``bot.models.anthropic``, ``bot.models.offline``) and test doubles
implement ``Model``. The loop never sees a provider's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: its name, what it does, its JSON schema."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class Block:
    """One tagged block of rendered context (factor 3), e.g. ``<user_message>``."""

    tag: str
    body: str
    attrs: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        """The block as the model reads it. Text is escaped, so words a person wrote
        (``</user_message>``, a quote in a display name) can never fake a block."""
        attrs = "".join(f' {k}="{escape(v, quote=True)}"' for k, v in self.attrs.items())
        return f"<{self.tag}{attrs}>\n{escape(self.body, quote=False)}\n</{self.tag}>"


@dataclass(frozen=True)
class ModelRequest:
    """Everything a model turn needs; built by ``bot.domain.context``."""

    agent: str
    system: str
    blocks: list[Block]
    tools: list[ToolSpec]

    def context_text(self) -> str:
        """The thread as one text, the way a language model reads it."""
        return "\n\n".join(block.render() for block in self.blocks)


@dataclass(frozen=True)
class ModelCall:
    """One tool call the model chose."""

    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ModelTurn:
    """What one model turn produced: one or more tool calls, never prose."""

    calls: list[ModelCall]
    input_tokens: int | None = None
    """Tokens the provider counted in the prompt, when it says (for metrics)."""
    output_tokens: int | None = None
    """Tokens it produced, when it says."""


class Model(Protocol):
    """A model: rendered thread and tools in, tool calls out."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelTurn:
        """Run one model turn.

        Raises:
            ModelError: the provider failed after its retries.
        """
        ...
