"""An approval to work through in the inbox, asked as an agent elsewhere asks it (the API)."""

from __future__ import annotations

from typing import Any

from tests.harness import Harness

SCHEMA = {
    "type": "object",
    "properties": {
        "service": {"type": "string", "description": "Which service."},
        "replicas": {"type": "integer", "minimum": 1},
        "region": {"enum": ["eu", "us"]},
    },
    "required": ["service", "replicas"],
}
"""The arguments' JSON Schema: the inbox builds its edit form from it."""


async def approval(h: Harness, **extra: Any) -> str:
    """Ask deployers to approve scaling the api (``extra`` overrides the body); its id."""
    body = {
        "agent": "scaler",
        "tool": "scale",
        "arguments": {"service": "api", "replicas": 3},
        "arguments_schema": SCHEMA,
        "summary": "more replicas for the launch",
        "requester": "ann@example.test",
        "policy": {"approvers": ["group:deployers"]},
        **extra,
    }
    r = await h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid
