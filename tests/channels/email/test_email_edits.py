"""An approver elsewhere edits the arguments: email approvers then see and decide the new ones.

An answer by email is bound to the arguments the email it answers showed: a reply to
an email sent before the edit is refused, one to an email or a page after it counts.
"""

from __future__ import annotations

import re

from bot.domain.events import ApprovalDecision
from tests.channels.email.helpers import FIN, OPS, Mailroom, reply_to
from tests.channels.email.provider import Sent
from tests.channels.email.test_email_outbound import LINK

SCHEMA = {
    "type": "object",
    "properties": {"package": {"type": "string"}, "version": {"type": "string"}},
    "required": ["package", "version"],
}
EDITED = {"package": "greenlight", "version": "0.2.1"}
SHOWN_HASH = re.compile(r'name="args_hash" value="([^"]+)"')


async def ask(room: Mailroom, **policy: object) -> tuple[str, str]:
    """An approval of publish 0.2.0 that needs two of ops, fin and bob; (request, thread)."""
    body = {
        "agent": "ci",
        "requester": "pipeline",
        "tool": "publish",
        "arguments": {"package": "greenlight", "version": "0.2.0"},
        "arguments_schema": SCHEMA,
        "summary": "Tag v0.2.0 passed every check",
        "policy": {"approvers": [OPS, FIN, "bob"], "min_approvals": 2, **policy},
    }
    r = await room.h.api.post("/approvals", json=body)
    assert r.status_code == 201, r.text
    await room.h.drain()
    return str(r.json()["id"]), str(r.json()["thread_id"])


async def bob_edits(room: Mailroom, rid: str) -> None:
    """Bob approves over the API, with the version edited to 0.2.1."""
    r = await room.h.api.post(
        f"/requests/{rid}/decision",
        json={"decision": "approve", "by": "bob", "edited_args": EDITED},
    )
    assert r.status_code == 200, r.text
    await room.h.drain()


async def votes(room: Mailroom, tid: str) -> list[ApprovalDecision]:
    return [e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]


def link_of(mail: Sent) -> str:
    found = LINK.search(mail.text)
    assert found, mail.text
    return found.group(0)


async def test_after_an_edit_email_approvers_decide_the_new_arguments(room: Mailroom) -> None:
    rid, tid = await ask(room)
    first = room.provider.last_to(OPS)
    assert "version: 0.2.0" in first.text
    await bob_edits(room, rid)

    # Asked again, in the same conversation, with the arguments now up for approval.
    again = room.provider.last_to(OPS)
    assert again is not first and again["In-Reply-To"] == first["Message-ID"]
    assert "bob edited the arguments and approved them" in again.text
    assert "version: 0.2.1" in again.text and "version: 0.2.0" not in again.text
    assert "arguments edited by an approver since first asked" in again.text
    assert again["Reply-To"] == first["Reply-To"]  # the same reply address
    assert "version: 0.2.1" in room.provider.last_to(FIN).text

    # A reply to the email sent before the edit was about 0.2.0: refused, and told why.
    answer = await room.smtp(reply_to(first, "APPROVE", sender=OPS))
    assert answer.startswith("refused") and "edited the arguments" in answer
    assert "Answer the newest approval email" in room.provider.last_to(OPS).text
    assert len(await votes(room, tid)) == 1

    # A reply to the email that showed 0.2.1 counts: the second approval of 0.2.1.
    assert (await room.smtp(reply_to(again, "APPROVE", sender=OPS))).startswith("decided")
    out = (await room.h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["arguments"], out["edited"]) == ("approved", EDITED, True)
    await room.h.drain()
    told = room.provider.last_to(FIN)
    assert f"{OPS} approved publish(package=greenlight, version=0.2.1)" in told.text
    assert "you approved publish(package=greenlight, version=0.2.1)" in (
        room.provider.last_to(OPS).text
    )


async def test_the_decision_page_shows_and_decides_the_arguments_now(room: Mailroom) -> None:
    rid, tid = await ask(room)
    link = link_of(room.provider.last_to(OPS))
    before = await room.h.http.get(link)
    (seen_before,) = SHOWN_HASH.findall(before.text)
    assert "0.2.0" in before.text
    await bob_edits(room, rid)

    # A page opened before the edit is refused, and shows the new arguments to decide on.
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = await room.h.http.post(
        link, content=f"decision=approve&args_hash={seen_before}".encode(), headers=form
    )
    assert r.status_code == 409 and "edited since this page was opened" in r.text
    assert "0.2.1" in r.text and "0.2.0" not in r.text
    assert len(await votes(room, tid)) == 1

    # The page as rendered now approves what it shows.
    page = await room.h.http.get(link)
    assert "0.2.1" in page.text and "0.2.0" not in page.text
    (seen_now,) = SHOWN_HASH.findall(page.text)
    r = await room.h.http.post(
        link, content=f"decision=approve&args_hash={seen_now}".encode(), headers=form
    )
    assert r.status_code == 200 and "Approved" in r.text, r.text
    out = (await room.h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["arguments"]) == ("approved", EDITED)


async def test_a_reminder_after_an_edit_asks_again_whoever_approved_before(
    room: Mailroom,
) -> None:
    rid, tid = await ask(room, expires_in=3600, remind_before=[600])
    first = room.provider.last_to(OPS)
    # Ops approves 0.2.0; then bob edits: ops's approval no longer counts.
    assert (await room.smtp(reply_to(first, "APPROVE", sender=OPS))).startswith("decided")
    await room.h.drain()
    await bob_edits(room, rid)
    room.clock.advance(3000)  # the reminder, ten minutes before expiry

    reminder = await room.drain_until(
        lambda: [s for s in room.provider.to(OPS) if "Reminder:" in s.text]
    )
    assert "version: 0.2.1" in reminder[-1].text
    assert (await room.smtp(reply_to(reminder[-1], "APPROVE", sender=OPS))).startswith("decided")
    out = (await room.h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["arguments"]) == ("approved", EDITED)
    assert [v.by.id for v in await votes(room, tid)] == [OPS, "bob", OPS]


async def test_approving_by_the_same_link_again_after_an_edit_counts(room: Mailroom) -> None:
    """The email asking again after an edit carries the same link: an approval of the new
    arguments through it is a new decision, not a replay of the approval of the old ones."""
    rid, tid = await ask(room)
    link = link_of(room.provider.last_to(OPS))
    form = {"content-type": "application/x-www-form-urlencoded"}
    (seen_before,) = SHOWN_HASH.findall((await room.h.http.get(link)).text)
    r = await room.h.http.post(
        link, content=f"decision=approve&args_hash={seen_before}".encode(), headers=form
    )
    assert r.status_code == 200 and "Approved" in r.text, r.text
    await room.h.drain()
    await bob_edits(room, rid)
    assert link_of(room.provider.last_to(OPS)) == link  # asked again, with the same link

    (seen_now,) = SHOWN_HASH.findall((await room.h.http.get(link)).text)
    assert seen_now != seen_before
    r = await room.h.http.post(
        link, content=f"decision=approve&args_hash={seen_now}".encode(), headers=form
    )
    assert r.status_code == 200 and "Approved" in r.text, r.text
    out = (await room.h.api.get(f"/approvals/{rid}", params={"wait": 5})).json()
    assert (out["status"], out["arguments"]) == ("approved", EDITED)
    assert [v.by.id for v in await votes(room, tid)] == [OPS, "bob", OPS]
