"""Email end to end: real SMTP both ways, the real app and worker, a real Redis."""

from __future__ import annotations

import re

from bot.domain.events import (
    ApprovalDecision,
    ApprovalRequested,
    HumanAnswer,
    HumanQuestion,
    Outcome,
    ToolResult,
)
from bot.domain.reducer import Status
from tests.channels.email.helpers import ANN, FIN, OPS, Mailroom, new_mail, reply_to
from tests.channels.email.provider import Sent

TOKEN_ADDRESS = re.compile(r"^reply\+[a-z2-7]{48}@example\.test$")


async def start_deploy(room: Mailroom, text: str = "deploy api 1.5.0 to production") -> str:
    """Ann emails deploy@; returns the thread id once the approval emails are out."""
    answer = await room.smtp(new_mail(ANN, "deploy@example.test", "Release api", text))
    assert answer.startswith("created"), answer
    await room.h.drain()
    (tid,) = (await room.h.rt.indexes.threads(offset=0, limit=50))[0]
    return tid


async def test_email_to_agent_then_approve_by_reply_runs_the_tool(room: Mailroom) -> None:
    first = new_mail(ANN, "deploy@example.test", "Release api", "deploy api 1.5.0 to production")
    await room.smtp(first)
    await room.h.drain()

    ask = room.provider.last_to(OPS)
    root = first["Message-ID"]
    assert ask["Message-ID"].endswith("@example.test>")
    assert ask["In-Reply-To"] == root and root in ask["References"]
    assert TOKEN_ADDRESS.match(ask["Reply-To"]), ask["Reply-To"]
    assert ask["Auto-Submitted"] == "auto-generated"
    for shown in (
        "deploy",
        "service: api",
        "version: 1.5.0",
        "environment: production",
        f"Asked by: {ANN}",
        "Why: deploy api 1.5.0 to production",
        "Expires:",
        "APPROVE",
        "REJECT:",
    ):
        assert shown in ask.text, shown
    assert "<strong>APPROVE</strong>" in ask.html
    waiting = room.provider.last_to(ANN)
    assert waiting["In-Reply-To"] == root and waiting["Subject"] == "Re: Release api"
    assert OPS in waiting.text

    reply = reply_to(ask, "APPROVE", sender=f"Olga <{OPS}>")
    assert (await room.smtp(reply)).startswith("decided")
    await room.h.drain()

    (tid,) = (await room.h.rt.indexes.threads(offset=0, limit=50))[0]
    state = await room.h.thread(tid)
    assert state.status is Status.DONE
    events = await room.events(tid)
    (vote,) = [e for e in events if isinstance(e, ApprovalDecision)]
    assert (vote.by.channel, vote.by.email, vote.delivery) == ("email", OPS, reply["Message-ID"])
    (ran,) = [e for e in events if isinstance(e, ToolResult)]
    assert ran.outcome is Outcome.OK and "1.5.0" in str(ran.output)

    confirmation = room.provider.last_to(OPS)
    assert confirmation["In-Reply-To"] == reply["Message-ID"]
    assert ask["Message-ID"] in confirmation["References"]
    assert confirmation["Subject"] == f"Re: {ask['Subject']}"
    assert "you approved deploy" in confirmation.text
    done = room.provider.last_to(ANN)
    assert done["In-Reply-To"] == root and "Done:" in done.text and "1.5.0" in done.text


async def test_reject_by_reply_gives_the_model_the_reason(room: Mailroom) -> None:
    tid = await start_deploy(room)
    ask = room.provider.last_to(OPS)

    answer = await room.smtp(reply_to(ask, "REJECT: not during the freeze", sender=OPS))
    assert answer.startswith("decided")
    await room.h.drain()

    assert (await room.h.thread(tid)).status is Status.DONE
    (result,) = [e for e in await room.events(tid) if isinstance(e, ToolResult)]
    assert result.outcome is Outcome.REJECTED and "not during the freeze" in str(result.output)
    final = room.provider.last_to(ANN)
    assert "Not done" in final.text and "not during the freeze" in final.text
    assert "you rejected" in room.provider.last_to(OPS).text


async def refund_question(room: Mailroom) -> tuple[str, Sent]:
    """Ann emails the refunds agent, which asks her the reason: the thread and the
    question's email."""
    await room.smtp(new_mail(ANN, "refunds@example.test", "Refund", "refund A-1002"))
    await room.h.drain()
    (tid,) = (await room.h.rt.indexes.threads(offset=0, limit=50))[0]
    return tid, room.provider.last_to(ANN)


async def test_answering_an_ask_human_email_resumes_the_agent(room: Mailroom) -> None:
    tid, question = await refund_question(room)
    assert "What is the reason for refunding A-1002?" in question.text
    assert TOKEN_ADDRESS.match(question["Reply-To"])
    assert question["Subject"] == "Re: Refund"

    reply = reply_to(question, "The customer was charged twice.\n\nBest regards,\nAnn", sender=ANN)
    answer = await room.smtp(reply)
    assert answer.startswith("answered"), answer
    await room.h.drain()

    events = await room.events(tid)
    (answered,) = [e for e in events if isinstance(e, HumanAnswer)]
    assert answered.text == "The customer was charged twice."
    # The agent carried on: the refund of 900 needs finance, who got an approval email.
    (asked,) = [e for e in events if isinstance(e, ApprovalRequested)]
    assert asked.args["reason"] == "The customer was charged twice."
    assert "The customer was charged twice." in room.provider.last_to(FIN).text
    (thanks,) = [s for s in room.provider.to(ANN) if "your answer went to" in s.text]
    assert thanks["In-Reply-To"] == reply["Message-ID"]


async def test_replies_that_must_not_decide(room: Mailroom) -> None:
    tid = await start_deploy(room)
    ask = room.provider.last_to(OPS)

    async def votes() -> list[ApprovalDecision]:
        return [e for e in await room.events(tid) if isinstance(e, ApprovalDecision)]

    # Someone else replies with the approver's valid token: refused, and told why.
    answer = await room.smtp(reply_to(ask, "APPROVE", sender="intern@example.test"))
    assert answer.startswith("refused")
    assert "sent to someone else" in room.provider.last_to("intern@example.test").text

    # An out-of-office from the approver: ignored, and no answer (no mail loop).
    before = len(room.provider.to(OPS))
    ooo = reply_to(
        ask,
        "I am out of the office until Monday.",
        sender=OPS,
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert (await room.smtp(ooo)).startswith("ignored")
    assert len(room.provider.to(OPS)) == before

    # "not approved" is never an approval: the approver is asked again, same token.
    assert (await room.smtp(reply_to(ask, "not approved", sender=OPS))).startswith("unclear")
    again = room.provider.last_to(OPS)
    assert again["Reply-To"] == ask["Reply-To"] and "APPROVE" in again.text
    assert again["Auto-Submitted"] == "auto-replied"

    # "ok" from the requester, who is no approver, replying in her thread: just a message.
    waiting = room.provider.last_to(ANN)
    assert (await room.smtp(reply_to(waiting, "ok", sender=ANN))).startswith("message")

    assert await votes() == []
    assert (await room.h.thread(tid)).status is Status.AWAITING_APPROVAL

    approve = reply_to(ask, "Approved", sender=OPS)
    assert (await room.smtp(approve)).startswith("decided")
    # The same message delivered twice changes nothing and says nothing.
    before = len(room.provider.sent)
    assert (await room.smtp(approve)).startswith("duplicate")
    assert len(room.provider.sent) == before
    # A second reply after the decision: refused, with who decided.
    answer = await room.smtp(reply_to(ask, "APPROVE", sender=OPS))
    assert answer.startswith("refused") and "already approved" in answer
    assert "already approved" in room.provider.last_to(OPS).text
    assert len(await votes()) == 1


async def test_only_the_person_asked_can_answer_a_question(room: Mailroom) -> None:
    tid = await start_deploy(room, "deploy api")
    question = room.provider.last_to(ANN)
    assert "Which version of api" in question.text

    assert (await room.smtp(reply_to(question, "1.4.2", sender=OPS))).startswith("refused")
    assert not [e for e in await room.events(tid) if isinstance(e, HumanAnswer)]

    assert (await room.smtp(reply_to(question, "1.4.2", sender=ANN))).startswith("answered")
    await room.h.drain()
    events = await room.events(tid)
    assert [e for e in events if isinstance(e, HumanQuestion)]
    (asked,) = [e for e in events if isinstance(e, ApprovalRequested)]
    assert asked.args["version"] == "1.4.2"


async def test_an_out_of_office_without_auto_submitted_answers_nothing(room: Mailroom) -> None:
    # Many responders (older Exchange, hosted panels, phone apps) send no RFC 3834 header;
    # their subject is all that tells. Else the OOO text became the answer to a question,
    # and each "please answer again" could trigger another auto-reply.
    tid, question = await refund_question(room)
    before = len(room.provider.sent)
    for subject in (
        "Automatic reply: Re: Refund",
        "Out of Office: Re: Refund",
        "Abwesenheitsnotiz: Re: Refund",
        "Réponse automatique : Re: Refund",
    ):
        ooo = reply_to(question, "I am out of the office until Monday.", sender=ANN)
        ooo.replace_header("Subject", subject)
        assert (await room.smtp(ooo)).startswith("ignored"), subject
    assert len(room.provider.sent) == before
    assert not [e for e in await room.events(tid) if isinstance(e, HumanAnswer)]
    assert (await room.h.thread(tid)).status is Status.AWAITING_HUMAN


async def test_mail_from_the_null_path_answers_nothing(room: Mailroom) -> None:
    # Auto-responders and bounces are sent from MAIL FROM:<> (RFC 3834 §3.1.2), often with
    # no Auto-Submitted and a subject of their own. aiosmtpd keeps that path as "<>".
    tid, question = await refund_question(room)
    before = len(room.provider.sent)

    # To the question's reply address: else the text became the answer.
    away = reply_to(question, "I am away until Monday.", sender=ANN)
    assert (await room.smtp(away, mail_from="")).startswith("ignored: automatic message")
    # In the thread's conversation, to the agent's address: else a message on the thread.
    away = reply_to(question, "I am away until Monday.", sender=ANN)
    answer = await room.smtp(away, rcpts=["refunds@example.test"], mail_from="")
    assert answer.startswith("ignored: automatic message"), answer

    await room.h.drain()
    assert len(room.provider.sent) == before
    assert not [e for e in await room.events(tid) if isinstance(e, HumanAnswer)]
    assert (await room.h.thread(tid)).status is Status.AWAITING_HUMAN
