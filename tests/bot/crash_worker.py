"""A worker process for the crash tests: its ``transfer`` tool counts its runs, then hangs.

Run as ``python -m tests.bot.crash_worker REDIS_URL [idempotent]``; the test kills it.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from bot.domain.agents import Agent
from bot.domain.policy import ANYONE, ApprovalPolicy
from bot.domain.tools import Tool, ToolContext
from bot.runtime import build_runtime
from bot.storage.connection import Client, connect
from tests.doubles import ScriptedModel, c, turns

RUNS = "test:transfer:runs"


class Transfer(BaseModel):
    """Move money."""

    to: str
    amount: int


def crash_agent(redis: Client, *, idempotent: bool, hang: bool) -> Agent:
    async def transfer(args: Transfer, ctx: ToolContext) -> str:
        await redis.rpush(RUNS, ctx.idempotency_key)  # type: ignore[misc]
        if hang:
            await asyncio.Event().wait()
        return f"sent {args.amount} to {args.to}"

    tool = Tool(
        "transfer",
        "Move money.",
        Transfer,
        transfer,
        approval=ApprovalPolicy(approvers=(ANYONE,)),
        idempotent=idempotent,
    )
    return Agent(name="bank", prompt="You move money.", tools=(tool,))


def crash_model() -> ScriptedModel:
    return ScriptedModel(turns(c("transfer", to="bob", amount=10)))


async def main(url: str, idempotent: bool) -> None:
    redis = await connect(url)  # one server or a cluster
    agent = crash_agent(redis, idempotent=idempotent, hang=True)
    rt = build_runtime(redis, {"bank": agent}, crash_model())
    await rt.worker(name="doomed", lease_ms=500, block_ms=50).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:] == ["idempotent"]))
