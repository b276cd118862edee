"""An agent elsewhere asks over REST; the approver answers the email; the agent reads it."""

from __future__ import annotations

from tests.channels.email.helpers import OPS, Mailroom, reply_to


async def test_an_email_reply_approves_an_external_request(room: Mailroom) -> None:
    body = {
        "agent": "ci",
        "requester": "pipeline",
        "tool": "publish",
        "arguments": {"package": "greenlight", "version": "0.2.0"},
        "summary": "Tag v0.2.0 passed every check",
        "policy": {"approvers": [OPS]},
    }
    r = await room.h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    await room.h.drain()

    ask = room.provider.last_to(OPS)
    for shown in ("publish", "version: 0.2.0", "Why: Tag v0.2.0 passed every check", "APPROVE"):
        assert shown in ask.text, shown
    reply = reply_to(ask, "APPROVE", sender=f"Olga <{OPS}>")
    assert (await room.smtp(reply)).startswith("decided")

    out = (await room.h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["decision"]) == ("approved", "approve")
    assert [(a["channel"], a["id"]) for a in out["decided_by"]] == [("email", OPS)]
    await room.h.drain()
    assert "you approved publish" in room.provider.last_to(OPS).text
