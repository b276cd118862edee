"""The deploy agent: list services, show releases, deploy and roll back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.deploy.inventory import INVENTORY, RELEASES
from agents.deploy.offline import script
from bot.domain.agents import Agent, read_prompt
from bot.domain.policy import ApprovalPolicy
from bot.domain.tools import Tool, ToolContext

Environment = Literal["production", "staging"]


class ListServices(BaseModel):
    """List services and the version running in each environment."""


class ShowRelease(BaseModel):
    """Show what a release of a service changes."""

    service: str
    version: str


class Deploy(BaseModel):
    """Deploy a version of a service to an environment."""

    service: str = Field(description="Service name, e.g. api.")
    version: str = Field(description="Release version, e.g. 1.4.2.")
    environment: Environment


class Rollback(BaseModel):
    """Roll a service back to the version it ran before the last deploy."""

    service: str
    environment: Environment


def _running() -> dict[str, dict[str, str]]:
    """What runs where now, as a copy."""
    return {name: dict(envs) for name, envs in INVENTORY.running.items()}


async def list_services(args: ListServices, ctx: ToolContext) -> dict[str, Any]:
    return _running()


async def show_release(args: ShowRelease, ctx: ToolContext) -> list[str]:
    changes = RELEASES.get(args.service, {}).get(args.version)
    if changes is None:
        raise ValueError(f"no release {args.service} {args.version}")
    return changes


async def deploy(args: Deploy, ctx: ToolContext) -> str:
    return INVENTORY.deploy(args.service, args.version, args.environment, ctx.idempotency_key)


async def rollback(args: Rollback, ctx: ToolContext) -> str:
    return INVENTORY.rollback(args.service, args.environment, ctx.idempotency_key)


def _is_production(args: Any) -> bool:
    return bool(args.environment == "production")


PRODUCTION = ApprovalPolicy(
    required=_is_production,
    approvers=("group:deployers",),
    expires_in=3600,
    remind_before=(600,),
    risky=True,
)


async def _services() -> dict[str, Any]:
    return _running()


AGENT = Agent(
    name="deploy",
    prompt=read_prompt(__file__),
    description="Deploys and rolls back services, lists services and what a release changes.",
    tools=(
        Tool("list_services", ListServices.__doc__ or "", ListServices, list_services),
        Tool("show_release", ShowRelease.__doc__ or "", ShowRelease, show_release),
        Tool("deploy", Deploy.__doc__ or "", Deploy, deploy, approval=PRODUCTION),
        Tool("rollback", Rollback.__doc__ or "", Rollback, rollback, approval=PRODUCTION),
    ),
    prefetch={"services": _services},
    offline=script,
)
