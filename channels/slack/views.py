"""Modals: reject with a reason, edit the arguments, read the full arguments.

Building a modal and reading its submission are pure functions; the modal's
``private_metadata`` carries the request id and the arguments hash it showed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.domain.events import ApprovalRequested
from bot.domain.limits import from_json
from bot.domain.reducer import Request
from bot.domain.text import cut, to_sentence, to_shown
from channels.slack.blocks import Block, to_pieces
from channels.slack.payloads import to_value
from channels.slack.people import escape

REJECT_VIEW, EDIT_VIEW = "gl_reject", "gl_edit"
REASON = "reason"
JSON_BLOCK = "args"
ARG_PREFIX = "arg:"
INPUT_MAX = 3000
"""Longest initial value of a text input (and of ``private_metadata``)."""
INPUTS_MAX = 40
BLOCKS_MAX = 50


def reject_modal(req: Request, asked: ApprovalRequested) -> Block:
    """Asks for the reason, which goes back to the agent."""
    meta = to_value(r=req.id, h=req.args_hash or asked.args_hash)
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": meta,
        "title": _plain("Reject"),
        "submit": _plain("Reject"),
        "close": _plain("Cancel"),
        "blocks": [
            _section(
                f"Reject *{asked.tool}*? The agent is told your reason and will not "
                "retry the same call unchanged."
            ),
            {
                "type": "input",
                "block_id": REASON,
                "label": _plain("Reason"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }


def edit_modal(req: Request, asked: ApprovalRequested) -> Block:
    """One input per argument (strings as they are, the rest as JSON), or one JSON input."""
    args = dict(req.arguments)
    strings = sorted(k for k, v in args.items() if isinstance(v, str))
    meta = to_value(r=req.id, h=req.args_hash or asked.args_hash, m="fields", s=strings)
    shown = {k: to_shown(v) for k, v in args.items()}
    blocks: list[Block] = [_section(f"Edit the arguments of *{asked.tool}*, then approve.")]
    if (
        len(args) <= INPUTS_MAX
        and len(meta) <= INPUT_MAX
        and all(len(k) <= 200 and len(v) <= INPUT_MAX for k, v in shown.items())
    ):
        for key, value in shown.items():
            hint = "" if key in strings else " (JSON)"
            blocks.append(_input(f"{ARG_PREFIX}{key}", cut(key + hint, 2000), value))
    else:
        whole = json.dumps(args, indent=2, ensure_ascii=False, default=str)
        if len(whole) > INPUT_MAX:
            return _notice(
                "Edit",
                "These arguments are too large to edit in Slack; "
                "decide through the REST API instead.",
            )
        meta = to_value(r=req.id, h=req.args_hash or asked.args_hash, m="json")
        blocks.append(_input(JSON_BLOCK, "Arguments (JSON)", whole))
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": meta,
        "title": _plain("Edit and approve"),
        "submit": _plain("Approve"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def args_modal(req: Request, asked: ApprovalRequested) -> Block:
    """The whole arguments, pretty JSON in as many sections as it takes."""
    whole = json.dumps(req.arguments, indent=2, ensure_ascii=False, default=str)
    # Escaped before it is split: escaping can make it five times longer.
    chunks = to_pieces(escape(whole), INPUT_MAX - len("``````"))
    blocks = [_section(f"```{c}```") for c in chunks[: BLOCKS_MAX - 1]]
    if len(chunks) >= BLOCKS_MAX:
        blocks.append(_section(f"_…cut here; read request `{req.id}` through the REST API._"))
    return {
        "type": "modal",
        "title": _plain(cut(f"{asked.tool} arguments", 24)),
        "close": _plain("Close"),
        "blocks": blocks,
    }


def from_reason(values: Mapping[str, Any]) -> str:
    """The reason typed in the reject modal."""
    return str((values.get(REASON) or {}).get(REASON, {}).get("value") or "").strip()


def from_edit(
    values: Mapping[str, Any], meta: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The edited arguments, or the errors to show in the modal (by block id)."""
    if meta.get("m") == "json":
        raw = _value(values, JSON_BLOCK)
        try:
            edited = from_json(raw, "")
        except ValueError as exc:
            return None, {JSON_BLOCK: cut(to_sentence(str(exc)), 150)}
        if not isinstance(edited, dict):
            return None, {JSON_BLOCK: "The arguments must be a JSON object."}
        return edited, {}
    strings = set(meta.get("s") or ())
    args: dict[str, Any] = {}
    for block_id in values:
        if not block_id.startswith(ARG_PREFIX):
            continue
        key, raw = block_id.removeprefix(ARG_PREFIX), _value(values, block_id)
        if key in strings:
            args[key] = raw
        elif raw.strip():
            try:
                args[key] = from_json(raw, "")
            except ValueError:
                args[key] = raw  # let the tool's schema say what it expected
    return args, {}


def to_errors(
    errors: list[dict[str, Any]], values: Mapping[str, Any], meta: Mapping[str, Any]
) -> dict[str, str]:
    """Schema errors (``{"field": "amount", "error": …}``) placed on their inputs."""
    if meta.get("m") == "json":
        text = "; ".join(f"{e.get('field') or '(root)'}: {e.get('error')}" for e in errors)
        return {JSON_BLOCK: cut(text, 150)}
    found: dict[str, list[str]] = {}
    first = next((b for b in values if b.startswith(ARG_PREFIX)), None)
    for e in errors:
        field = str(e.get("field") or "")
        block = f"{ARG_PREFIX}{field.split('.', maxsplit=1)[0]}"
        if block not in values:
            block, detail = (first or JSON_BLOCK), f"{field or '(root)'}: {e.get('error')}"
        else:
            detail = str(e.get("error"))
        found.setdefault(block, []).append(detail)
    return {block: cut("; ".join(details), 150) for block, details in found.items()}


def _value(values: Mapping[str, Any], block_id: str) -> str:
    state = values.get(block_id) or {}
    inner: dict[str, Any] = next(iter(state.values()), {}) if state else {}
    return str(inner.get("value") or "")


def _input(block_id: str, label: str, initial: str) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": "value",
        "multiline": len(initial) > 60 or "\n" in initial,
        "max_length": INPUT_MAX,
    }
    if initial:
        element["initial_value"] = initial
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": {"type": "plain_text", "text": label},
        "element": element,
    }


def _notice(title: str, text: str) -> Block:
    return {
        "type": "modal",
        "title": _plain(title),
        "close": _plain("Close"),
        "blocks": [_section(text)],
    }


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}
