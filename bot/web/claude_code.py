"""Claude Code's permission prompt contract: what it asks, and the allow/deny it expects.

``claude --permission-prompt-tool mcp__greenlight__permission_prompt`` calls the tool
with ``{tool_name, input, tool_use_id}`` and reads back, as JSON text,
``{"behavior": "allow", "updatedInput": {...}}`` or ``{"behavior": "deny", "message": ...}``.

The input schemas of Claude Code's own tools that change things are known here, so
approvers may edit the input (a command, a file's new content) before allowing it. They
leave extra fields open: a field Claude Code adds later still passes, unedited.
"""

from __future__ import annotations

from typing import Any

_TEXT = {"type": "string"}
_PATH = {"type": "string", "minLength": 1}

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "Bash": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "minLength": 1},
            "description": _TEXT,
            "timeout": {"type": "number", "minimum": 0, "maximum": 600_000},
            "run_in_background": {"type": "boolean"},
        },
        "required": ["command"],
    },
    "Write": {
        "type": "object",
        "properties": {"file_path": _PATH, "content": _TEXT},
        "required": ["file_path", "content"],
    },
    "Edit": {
        "type": "object",
        "properties": {
            "file_path": _PATH,
            "old_string": _TEXT,
            "new_string": _TEXT,
            "replace_all": {"type": "boolean"},
        },
        "required": ["file_path", "old_string", "new_string"],
    },
    "MultiEdit": {
        "type": "object",
        "properties": {
            "file_path": _PATH,
            "edits": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "old_string": _TEXT,
                        "new_string": _TEXT,
                        "replace_all": {"type": "boolean"},
                    },
                    "required": ["old_string", "new_string"],
                },
            },
        },
        "required": ["file_path", "edits"],
    },
    "NotebookEdit": {
        "type": "object",
        "properties": {
            "notebook_path": _PATH,
            "new_source": _TEXT,
            "cell_id": _TEXT,
            "cell_type": {"enum": ["code", "markdown"]},
            "edit_mode": {"enum": ["replace", "insert", "delete"]},
        },
        "required": ["notebook_path", "new_source"],
    },
    "WebFetch": {
        "type": "object",
        "properties": {"url": {"type": "string", "pattern": "^https?://"}, "prompt": _TEXT},
        "required": ["url", "prompt"],
    },
}
"""Claude Code's tools' input schemas, by tool name; other tools' input cannot be edited."""


def input_schema(tool_name: str, given: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema approvers edit ``tool_name``'s input against: the caller's, else the
    known one of a Claude Code tool, else None (the input is approved as it is)."""
    return given if given is not None else TOOL_SCHEMAS.get(tool_name)


def permission_answer(out: dict[str, Any]) -> dict[str, Any]:
    """The allow/deny answer for an approval as ``GET /approvals/{id}`` shows it: allow
    with the approved input (an approver's edit, if any), else deny with the reason."""
    if out["status"] == "approved":
        return {"behavior": "allow", "updatedInput": out["arguments"]}
    if out["status"] == "open":
        message = (
            f"still waiting for approval {out['id']}: nobody has decided yet; "
            "ask again to keep waiting on the same request"
        )
    else:
        by = ", ".join(a.get("name") or a["id"] for a in out.get("decided_by", []))
        message = f"{out['status']}" + (f" by {by}" if by else "")
        message += f": {out['reason']}" if out.get("reason") else ""
    return {"behavior": "deny", "message": message}
