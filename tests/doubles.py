"""Test doubles that implement our ports (never mocks of our own code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from bot.domain.agents import Agent
from bot.domain.errors import ModelError
from bot.domain.model import ModelCall, ModelRequest, ModelTurn
from bot.domain.policy import ANYONE, ApprovalPolicy
from bot.domain.tools import Tool, ToolContext

Script = Callable[[ModelRequest], list[ModelCall]]


class ScriptedModel:
    """A model whose every turn is decided by a function; it records requests."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self.requests.append(request)
        calls = self.script(request)
        if not calls:
            raise ModelError("scripted model has nothing to say")
        return ModelTurn(calls=calls)


def turns(*scripted: list[ModelCall] | Exception) -> Script:
    """A script that plays the given turns in order, then replies ``done``."""
    queue = list(scripted)

    def play(request: ModelRequest) -> list[ModelCall]:
        if not queue:
            return [ModelCall("reply", {"text": "done", "final": True})]
        turn = queue.pop(0)
        if isinstance(turn, Exception):
            raise turn
        return turn

    return play


def c(name: str, **args: Any) -> list[ModelCall]:
    return [ModelCall(name, args)]


class Transfer(BaseModel):
    """Move money."""

    to: str
    amount: int


class Echo(BaseModel):
    """Echo a word back."""

    word: str


@dataclass
class Ledger:
    """What the test tools did, so tests can see a tool ran (and how often)."""

    runs: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    fail_next: int = 0


def make_agent(
    ledger: Ledger,
    *,
    policy: ApprovalPolicy | None = None,
    name: str = "bank",
    max_steps: int = 10,
) -> Agent:
    """An agent with a gated ``transfer`` and a read-only ``echo``."""

    async def transfer(args: Transfer, ctx: ToolContext) -> str:
        if ledger.fail_next:
            ledger.fail_next -= 1
            raise RuntimeError("bank is down")
        ledger.runs.append(("transfer", args.model_dump(), ctx.idempotency_key))
        return f"sent {args.amount} to {args.to}"

    async def echo(args: Echo, ctx: ToolContext) -> str:
        if ledger.fail_next:
            ledger.fail_next -= 1
            raise RuntimeError("echo chamber collapsed")
        ledger.runs.append(("echo", args.model_dump(), ctx.idempotency_key))
        return args.word

    return Agent(
        name=name,
        prompt="You move money.",
        tools=(
            Tool(
                "transfer",
                "Move money.",
                Transfer,
                transfer,
                approval=policy or ApprovalPolicy(approvers=(ANYONE,)),
            ),
            Tool("echo", "Echo a word.", Echo, echo),
        ),
        max_steps=max_steps,
    )
