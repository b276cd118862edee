"""How the offline model plays the refunds agent, from the blocks it is shown."""

from __future__ import annotations

import json
import re

from bot.domain.model import ModelCall, ModelRequest
from bot.models.offline import call, last_block

ORDER = re.compile(r"\b([A-Z]-\d{4})\b", re.I)
REASON = re.compile(r"\b(?:because|reason:?)\s+(.+)$", re.I)


def script(request: ModelRequest) -> list[ModelCall]:
    last = last_block(request, "user_message", "human_answer", "tool_result", "errors")
    user = last_block(request, "user_message")
    if last is None or user is None:
        return call("reply", text="Tell me which order to refund, e.g. 'refund A-1001'.")
    if last.tag == "errors":
        return call("reply", text=f"Something went wrong: {last.body}")
    order = ORDER.search(user.body)
    if last.tag == "user_message":
        if order is None:
            return call("ask_human", question="Which order should I refund?")
        return call("lookup_order", order_id=order[1].upper())
    asked = last_block(request, "ask_human")
    if last.tag == "human_answer" and asked and asked.body.startswith("Which order"):
        return call("lookup_order", order_id=last.body.strip().upper())
    if last.tag == "tool_result" and last.attrs["tool"] == "refund":
        if last.attrs["outcome"] == "rejected":
            return call("reply", text=f"Refund not made. {last.body.splitlines()[0]}", final=True)
        return call("reply", text=f"Refunded: {last.body}", final=True)
    looked_up = last_block(request, "tool_result")
    if looked_up is None or looked_up.attrs.get("outcome") != "ok":
        return call("reply", text="I could not find that order.", final=True)
    found = json.loads(looked_up.body)
    reason = REASON.search(user.body)
    if last.tag == "human_answer":
        why = last.body.strip()
    elif reason:
        why = reason[1].strip()
    else:
        return call("ask_human", question=f"What is the reason for refunding {found['order_id']}?")
    amount = round(found["paid"] - found["refunded"], 2)
    return call("refund", order_id=found["order_id"], amount=amount, reason=why)
