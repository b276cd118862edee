"""The refunds agent: look up an order and refund it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from agents.refunds.offline import script
from bot.domain.agents import Agent, read_prompt
from bot.domain.policy import ApprovalPolicy
from bot.domain.tools import Tool, ToolContext

APPROVAL_THRESHOLD = 500.0


@dataclass
class Order:
    id: str
    customer: str
    paid: float
    refunded: float = 0.0


ORDERS = {
    "A-1001": Order("A-1001", "ada@example.com", 120.0),
    "A-1002": Order("A-1002", "grace@example.com", 900.0),
    "A-1003": Order("A-1003", "linus@example.com", 2400.0),
}
_APPLIED: set[str] = set()


class LookupOrder(BaseModel):
    """Look up an order: customer, amount paid, amount already refunded."""

    order_id: str = Field(description="Order id, e.g. A-1001.")


class Refund(BaseModel):
    """Refund part or all of an order."""

    order_id: str
    amount: float = Field(gt=0, description="Amount to refund, in the order's currency.")
    reason: str = Field(min_length=3, description="Why the customer is refunded.")


async def lookup_order(args: LookupOrder, ctx: ToolContext) -> dict[str, Any]:
    order = ORDERS.get(args.order_id.upper())
    if order is None:
        raise ValueError(f"no order {args.order_id}")
    return {
        "order_id": order.id,
        "customer": order.customer,
        "paid": order.paid,
        "refunded": order.refunded,
    }


async def refund(args: Refund, ctx: ToolContext) -> dict[str, Any]:
    order = ORDERS.get(args.order_id.upper())
    if order is None:
        raise ValueError(f"no order {args.order_id}")
    if ctx.idempotency_key not in _APPLIED:
        if args.amount > order.paid - order.refunded:
            raise ValueError(f"only {order.paid - order.refunded:.2f} is left to refund")
        order.refunded += args.amount
        _APPLIED.add(ctx.idempotency_key)
    return {"order_id": order.id, "refunded": args.amount, "total_refunded": order.refunded}


def _over_threshold(args: Any) -> bool:
    return bool(args.amount > APPROVAL_THRESHOLD)


AGENT = Agent(
    name="refunds",
    prompt=read_prompt(__file__),
    description="Looks up customer orders and refunds them.",
    tools=(
        Tool("lookup_order", LookupOrder.__doc__ or "", LookupOrder, lookup_order),
        Tool(
            "refund",
            Refund.__doc__ or "",
            Refund,
            refund,
            approval=ApprovalPolicy(required=_over_threshold, approvers=("group:finance",)),
            idempotent=True,
        ),
    ),
    offline=script,
)
