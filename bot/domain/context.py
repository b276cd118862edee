"""Render a thread into the model's context with code we own (factor 3).

Each event becomes a tagged block. Machine ids, tokens and URLs stay out.
Errors are compacted into one block and disappear after a success (factor 9).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from bot.domain.events import (
    AgentChosen,
    AgentReply,
    ApprovalDecision,
    ApprovalRequested,
    Cancelled,
    ContextFetched,
    DeliveryFailed,
    ErrorEvent,
    Escalated,
    Event,
    Expired,
    HumanAnswer,
    HumanQuestion,
    Outcome,
    Paused,
    Reminded,
    Resumed,
    ThreadCreated,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from bot.domain.model import Block
from bot.domain.validate import answer_value

REJECTED_NOTE = (
    "The call was rejected; it did not run. Do not retry the same call unchanged: "
    "change it to address the reason, ask the human, or tell the user."
)


def to_blocks(events: list[Event]) -> list[Block]:
    """The blocks a model reads for these events."""
    tools: dict[str, str] = {}
    questions: dict[str, HumanQuestion] = {}
    blocks: list[Block] = []
    errors: list[str] = []

    for e in events:
        if type(e) in _NO_BLOCK:
            continue
        # ``type(e) is``, not a ``match`` on classes: each case of a ``match`` pays an
        # ``isinstance``, and one that fails on a pydantic class is an ABC check.
        if type(e) is UserMessage:
            blocks.append(Block("user_message", e.text, {"from": e.by.label()}))
        elif type(e) is ContextFetched:
            blocks.append(Block("prefetched", _body(e, e.data), {"name": e.name}))
        elif type(e) is ToolCall:
            tools[e.call_id] = e.tool
            blocks.append(Block("tool_call", _body(e, e.args), {"tool": e.tool}))
        elif type(e) is ApprovalDecision:
            if e.edited_args is not None:
                body = _body(e, e.edited_args)
                blocks.append(Block("arguments_edited", body, {"by": e.by.label()}))
        elif type(e) is HumanQuestion:
            questions[e.request_id] = e
            blocks.append(Block("ask_human", e.question))
        elif type(e) is HumanAnswer:
            errors.clear()
            blocks.append(_answer(e, questions.get(e.request_id)))
        elif type(e) is ToolResult:
            if e.outcome is Outcome.ERROR:
                errors.append(f"{tools.get(e.call_id, 'tool')} failed: {e.output}")
            else:
                errors.clear()
                attrs = {"tool": tools.get(e.call_id, "tool"), "outcome": e.outcome.value}
                body = _body(e, e.output)
                if e.outcome is Outcome.REJECTED:
                    body = f"{body}\n{REJECTED_NOTE}"
                blocks.append(Block("tool_result", body, attrs))
        elif type(e) is ErrorEvent:
            errors.append(e.message)
        elif type(e) is Expired:
            blocks.append(Block("expired", "A request to a human expired unanswered."))
        elif type(e) is AgentReply:
            errors.clear()
            blocks.append(Block("agent_reply", e.text))
    # Only errors since the last success are shown, as one block: the latest.
    if errors:
        blocks.append(Block("errors", errors[-1], {"consecutive": str(len(errors))}))
    return blocks


_NO_BLOCK = frozenset(
    {
        ThreadCreated,
        AgentChosen,
        ApprovalRequested,
        ToolStarted,
        Paused,
        Resumed,
        Cancelled,
        Escalated,
        Reminded,
        DeliveryFailed,
    }
)
"""Events that ``to_blocks`` never renders, passed over before its checks (one look-up)."""


def _answer(e: HumanAnswer, q: HumanQuestion | None) -> Block:
    """A person's answer; a typed one is its JSON value, marked so."""
    if q is None or q.answer_schema is None:
        return Block("human_answer", e.text, {"from": e.by.label()})
    return Block(
        "human_answer", _dump(answer_value(q, e.text)), {"from": e.by.label(), "format": "json"}
    )


_JSON = json.JSONEncoder(ensure_ascii=False, default=str, sort_keys=True)
"""Built once: ``json.dumps`` with options builds an encoder on every call."""


def _dump(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _JSON.encode(value)


def _body(e: Event, value: Any) -> str:
    """``_dump(value)`` for the value an event holds, encoded once per event object.

    A thread is rendered again on each of its model turns, and the thread log hands back
    the same event objects; events never change once recorded, so their text does not
    either. Keyed by the object: an entry holds its event, so while the entry lives no
    other object can have the same ``id()``.
    """
    if isinstance(value, str):
        return value
    hit = _BODIES.get(id(e))
    if hit is not None and hit[0] is e:
        return hit[1]
    text = _JSON.encode(value)
    _BODIES[id(e)] = (e, text)
    if len(_BODIES) > _BODIES_MAX:
        _BODIES.popitem(last=False)
    return text


_BODIES: OrderedDict[int, tuple[Event, str]] = OrderedDict()
"""``_body``'s texts, oldest first: a thread's turns come close together, so the oldest
entries are the ones of threads that have moved on."""

_BODIES_MAX = 1024
