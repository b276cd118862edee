"""An agent elsewhere asks over REST; the approver answers the email; the agent reads it."""

from __future__ import annotations

from tests.channels.email.helpers import OPS, Mailroom, ask_publish, reply_to


async def test_an_email_reply_approves_an_external_request(room: Mailroom) -> None:
    rid = (await ask_publish(room, {"approvers": [OPS]}))["id"]

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


async def test_a_typed_question_links_to_its_form_and_takes_a_json_reply(room: Mailroom) -> None:
    schema = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "minimum": 1},
            "region": {"enum": ["eu", "us"]},
        },
        "required": ["replicas"],
    }
    body = {"question": "How should web scale?", "answer_schema": schema, "answerers": [OPS]}
    r = await room.h.api.post("/questions", json=body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    await room.h.drain()

    ask = room.provider.last_to(OPS)
    link = f"{room.h.settings.public_url.rstrip('/')}/inbox/requests/{rid}"
    assert f"Answer with the form: {link}" in ask.text
    assert f'href="{link}"' in ask.html
    for shown in ("replicas: a whole number (required)", 'region: one of "eu", "us"'):
        assert shown in ask.text, shown

    wrong = reply_to(ask, '{"replicas": 0}', sender=OPS)
    assert (await room.smtp(wrong)).startswith("unclear")
    assert "less than the minimum of 1" in room.provider.last_to(OPS).text  # asked again

    right = reply_to(ask, '{"replicas": 3, "region": "eu"}', sender=OPS)
    assert (await room.smtp(right)).startswith("answered")
    out = (await room.h.api.get(f"/questions/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["value"]) == ("answered", {"replicas": 3, "region": "eu"})
