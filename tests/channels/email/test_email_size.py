"""Whole emails are large: the inbound route takes them; the REST API keeps its limit."""

from __future__ import annotations

from tests.channels.email.helpers import ANN, Mailroom, new_mail

DEPLOY = {"agent": "deploy", "text": "deploy api 1.5.0 to production"}


async def test_a_reply_with_a_large_image_is_taken_but_rest_keeps_its_limit(
    room: Mailroom,
) -> None:
    mail = new_mail(ANN, "deploy@example.test", "Release", "deploy api 1.5.0 to prod")
    mail.add_attachment(b"\x89PNG" + b"\0" * 3_000_000, maintype="image", subtype="png")
    r = await room.post(mail.as_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "created"

    too_big = {**DEPLOY, "text": "x" * 1_100_000}
    r = await room.h.api.post("/threads", json=too_big)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
