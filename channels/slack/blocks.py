"""Block Kit messages for requests and replies: pure functions of a request's state.

A card is rendered from the request as it stands, so posting it and updating
it after any decision (through any channel) are the same function. Every text
is cut within Block Kit's limits; model-written text is escaped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bot.domain.events import Actor, AnswerFormat, ApprovalRequested, HumanQuestion
from bot.domain.reducer import Request, RequestStatus
from bot.domain.text import cut, to_args, to_call, to_shown
from channels.slack.payloads import to_value
from channels.slack.people import escape

Block = dict[str, Any]

APPROVE, REJECT, EDIT, VIEW = "gl_approve", "gl_reject", "gl_edit", "gl_view"
ANSWER = "gl_answer"
"""Opens the form of a question with an answer schema."""
CHOICE = "gl_choice_"
"""Prefix of choice buttons' action ids (``gl_choice_0``…): ids in one block must differ."""

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTONS_MAX = 25
TEXT_MAX = 3900
"""Longer message texts are split: Slack cuts ``text`` past about 4,000 characters."""
VALUE_SHOWN = 300
"""How much of one argument a card shows; the rest is one click away."""


@dataclass(frozen=True)
class CardInfo:
    """What a card shows besides the request itself.

    Attributes:
        agent: the agent's name.
        approvers: who may decide, already as mentions.
        why: the requester's own words, or the reason given.
        link: a mrkdwn link back to the conversation, when the card is elsewhere.
    """

    agent: str
    approvers: list[str]
    why: str | None = None
    link: str | None = None


def cut_escaped(text: str, limit: int) -> str:
    """``text`` escaped for mrkdwn and cut so that the escaped form fits ``limit``.

    Escaping can make text up to five times longer (``&`` is ``&amp;``), so cutting
    before escaping can overflow Block Kit, and cutting after it can end inside
    an entity, which Slack shows raw.
    """
    return cut(escape(text), limit, boundary=_entity_safe)


def _entity_safe(text: str, at: int) -> int:
    """``at``, moved back to before an entity (``&lt;``) a cut there would split."""
    amp = text.rfind("&", max(0, at - 4), at)
    return amp if amp != -1 and ";" not in text[amp:at] else at


def to_pieces(text: str, size: int) -> list[str]:
    """Escaped ``text`` in pieces of at most ``size`` characters, no entity split."""
    pieces: list[str] = []
    while len(text) > size:
        piece = text[: _entity_safe(text, size)]
        pieces.append(piece)
        text = text[len(piece) :]
    return [*pieces, text]


def who(actor: Actor) -> str:
    """An actor as Slack shows people: a mention for Slack users, the name otherwise."""
    return f"<@{actor.id}>" if actor.channel == "slack" else escape(actor.label())


def when(at: float) -> str:
    """A date Slack shows in each reader's time zone."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def card(req: Request, info: CardInfo) -> tuple[str, list[Block]]:
    """The fallback text and blocks of a request's card, open or closed."""
    if isinstance(req.asked, ApprovalRequested):
        return approval_card(req, req.asked, info)
    return question_card(req, req.asked, info)


def approval_card(
    req: Request, asked: ApprovalRequested, info: CardInfo
) -> tuple[str, list[Block]]:
    """An approval request: what would run, who asked, who may decide, and the buttons."""
    title = {
        RequestStatus.OPEN: "Approval needed",
        RequestStatus.APPROVED: "Approved",
        RequestStatus.REJECTED: "Rejected",
        RequestStatus.EXPIRED: "Expired",
        RequestStatus.CANCELLED: "Cancelled",
    }.get(req.status, req.status.value.capitalize())
    args = dict(req.arguments)
    fields, cut_short = _fields(args)
    intro = f"The *{escape(info.agent)}* agent wants to run *{escape(asked.tool)}*."
    intro += f"\nAsked by {who(asked.requester)}"
    if info.link:
        intro += f" in {info.link}"
    if info.why:
        intro += "\n" + _quote(cut(info.why, 500))
    blocks: list[Block] = [
        {"type": "header", "text": _plain(cut(f"{title}: {asked.tool}", HEADER_MAX))},
        {"type": "section", "text": _mrkdwn(cut(intro, SECTION_MAX))},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    else:
        blocks.append({"type": "section", "text": _mrkdwn("_No arguments._")})
    blocks.append({"type": "context", "elements": [_mrkdwn(_approval_status(req, asked, info))]})
    if req.is_open:
        blocks.append(_approval_buttons(req, asked, cut_short))
    elif cut_short:
        blocks.append(
            {
                "type": "actions",
                "block_id": "gl_done",
                "elements": [_button("View full arguments", VIEW, to_value(r=req.id))],
            }
        )
    # The fallback text is mrkdwn too, and it is what notifications show.
    text = f"{title}: {asked.tool}({cut_escaped(to_args(args), 200)}) for the {info.agent} agent"
    return text, blocks


def question_card(req: Request, asked: HumanQuestion, info: CardInfo) -> tuple[str, list[Block]]:
    """A question to people: choices as buttons, or answered by a reply in the thread."""
    urgent = " (urgent)" if asked.urgency == "high" else ""
    body = f":question: The *{escape(info.agent)}* agent asks{urgent}:\n*{escape(asked.question)}*"
    if asked.context:
        body += "\n" + _quote(cut(asked.context, 1000))
    if info.link:
        body += f"\nFrom {info.link}"
    blocks: list[Block] = [{"type": "section", "text": _mrkdwn(cut(body, SECTION_MAX))}]
    choices = to_choices(asked)
    if req.is_open and choices:
        buttons = [
            _button(cut(choice, BUTTON_TEXT_MAX), f"{CHOICE}{i}", to_value(r=req.id, i=i))
            for i, choice in enumerate(choices[:BUTTONS_MAX])
        ]
        blocks.append({"type": "actions", "block_id": "gl_choices", "elements": buttons})
    elif req.is_open and asked.answer_schema is not None:
        button = _button("Answer…", ANSWER, to_value(r=req.id), style="primary")
        blocks.append({"type": "actions", "block_id": "gl_answer", "elements": [button]})
    blocks.append({"type": "context", "elements": [_mrkdwn(_question_status(req, asked, info))]})
    return f"{info.agent} asks: {cut_escaped(asked.question, 300)}", blocks


def to_choices(asked: HumanQuestion) -> list[str]:
    """The answers offered as buttons."""
    if asked.format is AnswerFormat.YES_NO:
        return ["yes", "no"]
    if asked.format is AnswerFormat.CHOICES:
        return list(asked.choices)
    return []


def to_chunks(text: str, limit: int = TEXT_MAX) -> list[str]:
    """An agent's reply as messages within Slack's length, split at line ends if possible."""
    text = escape(text.strip()) or "(empty reply)"
    chunks: list[str] = []
    while len(text) > limit:
        at = text.rfind("\n", 0, limit)
        at = at if at > limit // 2 else limit
        chunks.append(text[:at])
        text = text[at:].lstrip("\n")
    return [*chunks, text]


def _approval_status(req: Request, asked: ApprovalRequested, info: CardInfo) -> str:
    closed = ", ".join(who(a) for a in req.closed_by)
    at = when(req.closed_at) if req.closed_at else ""
    if req.status is RequestStatus.APPROVED:
        edited = " with edited arguments" if req.args_hash != asked.args_hash else ""
        return f":white_check_mark: *Approved* by {closed} {at}{edited}"
    if req.status is RequestStatus.REJECTED:
        reason = f": {cut_escaped(req.reason, 1500)}" if req.reason else ""
        return f":no_entry: *Rejected* by {closed} {at}{reason}"
    if req.status is RequestStatus.EXPIRED:
        return f":hourglass: *Expired* {at} without a decision"
    if req.status is RequestStatus.CANCELLED:
        return f":heavy_multiplication_x: *Cancelled*{' by ' + closed if closed else ''} {at}"
    parts = [f"Approvers: {', '.join(info.approvers) if info.approvers else 'anyone here'}"]
    if req.expires_at:
        parts.append(f"expires {when(req.expires_at)}")
    votes = req.approvals()
    if asked.min_approvals > 1 or votes:
        got = ", ".join(who(v.by) for v in votes)
        parts.append(f"{len(votes)} of {asked.min_approvals} approvals{': ' + got if got else ''}")
    return cut(" · ".join(parts), SECTION_MAX)


def _question_status(req: Request, asked: HumanQuestion, info: CardInfo) -> str:
    closed = ", ".join(who(a) for a in req.closed_by)
    at = when(req.closed_at) if req.closed_at else ""
    if req.status is RequestStatus.ANSWERED:
        answer = cut_escaped(req.answer or "", 1500)
        return f":speech_balloon: Answered by {closed} {at}: *{answer}*"
    if req.status is RequestStatus.EXPIRED:
        return f":hourglass: *Expired* {at} without an answer"
    if req.status is RequestStatus.CANCELLED:
        return f":heavy_multiplication_x: *Cancelled* {at}"
    text = "Reply in this thread to answer."
    if asked.answer_schema is not None:
        text = "Press *Answer…* to fill in the answer, or reply in this thread with it as JSON."
    if info.approvers:
        text += f" Who may answer: {', '.join(info.approvers)}"
    if req.expires_at:
        text += f" · expires {when(req.expires_at)}"
    return cut(text, SECTION_MAX)


def _approval_buttons(req: Request, asked: ApprovalRequested, cut_short: bool) -> Block:
    value = to_value(r=req.id, h=req.args_hash or asked.args_hash)
    approve = _button("Approve", APPROVE, value, style="primary")
    if asked.risky:
        approve["confirm"] = {
            "title": _plain(cut(f"Approve {asked.tool}?", 100)),
            "text": _plain(to_call(asked.tool, req.arguments, limit=300)),
            "confirm": _plain("Approve"),
            "deny": _plain("Cancel"),
            "style": "primary",
        }
    elements = [
        approve,
        _button("Reject", REJECT, value, style="danger"),
        _button("Edit", EDIT, value),
    ]
    if cut_short:
        elements.append(_button("View full arguments", VIEW, value))
    return {"type": "actions", "block_id": "gl_decide", "elements": elements}


def _fields(args: dict[str, Any]) -> tuple[list[Block], bool]:
    shown = list(args.items())
    cut_short = len(shown) > FIELDS_MAX
    if cut_short:
        shown = shown[: FIELDS_MAX - 1]
    fields = []
    for key, value in shown:
        text = to_shown(value)
        cut_short = cut_short or len(text) > VALUE_SHOWN
        fields.append(_mrkdwn(cut(f"*{escape(key)}*\n{escape(cut(text, VALUE_SHOWN))}", FIELD_MAX)))
    if len(args) > len(shown):
        fields.append(_mrkdwn(f"_…and {len(args) - len(shown)} more_"))
    return fields, cut_short


def _quote(text: str) -> str:
    return "\n".join(f">{escape(line)}" for line in text.splitlines() or [""])


def _button(text: str, action_id: str, value: str, *, style: str | None = None) -> Block:
    button: Block = {"type": "button", "text": _plain(text), "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text}
