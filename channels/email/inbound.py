"""What an inbound email means: a decision, an answer, a message, a new thread, or nothing.

Both inbound paths (the SMTP receiver, ``POST /email/inbound``) call
``Intake.receive`` with the raw bytes. Matching, in order: a reply token among
the recipients → its request; ``In-Reply-To``/``References`` → a thread we
linked; an agent's address → a new thread. Decisions go through
``Decisions`` and messages through ``Inbox``, like every other channel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from bot.domain import ids
from bot.domain.errors import (
    ConflictError,
    DeliveryError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
)
from bot.domain.events import Actor, ApprovalRequested, Decision, Origin
from bot.domain.refusals import to_words, why_refused
from bot.domain.text import cut
from bot.engine.ports import ChannelPorts
from channels.email import compose, drafts, mime, tokens
from channels.email.config import EmailConfig
from channels.email.mime import Inbound
from channels.email.outbound import Mailer
from channels.email.replies import Kind, read_verdict

log = logging.getLogger(__name__)


ARGS_CHANGED = (
    "An approver edited the arguments after the email you answered was sent, so your "
    "answer would be about other ones. Answer the newest approval email, which shows them."
)


class Disposition(StrEnum):
    CREATED = "created"
    """A new thread with the agent the address names."""
    MESSAGE = "message"
    """A message on an existing thread."""
    DECIDED = "decided"
    ANSWERED = "answered"
    DUPLICATE = "duplicate"
    """Seen before (same Message-ID): nothing changed."""
    IGNORED = "ignored"
    """An auto-reply, a bounce, or nothing new to read: never counts, gets no answer."""
    UNCLEAR = "unclear"
    """No decision could be read; the sender was asked again."""
    REFUSED = "refused"
    """Not allowed to decide (wrong sender, expired, closed…); nothing decided."""


@dataclass(frozen=True)
class Handled:
    """What became of one inbound email."""

    disposition: Disposition
    detail: str
    thread_id: str | None = None


class Intake:
    """Turns inbound emails into events.

    Args:
        cfg: the channel's email settings.
        runtime: the inbox, decisions, threads and the email state.
        mailer: sends the short answers (asking again, refusals).
    """

    def __init__(self, cfg: EmailConfig, runtime: ChannelPorts, mailer: Mailer) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.mailer = mailer

    def check_recipient(self, address: str) -> str | None:
        """Why the receiver refuses mail for ``address`` (at RCPT time), or None to accept."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower() != self.cfg.domain:
            return f"relay to {domain or address!r} denied"
        token = tokens.token_of(address, self.cfg.domain)
        if token is not None:
            if tokens.verify(token, self.cfg.secret) is None:
                return "unknown or forged reply address"
            return None
        if local.lower() in self.rt.agents:
            return None
        return f"no mailbox {address.strip('<>')!r}"

    async def receive(
        self, raw: bytes, *, mail_from: str | None = None, rcpts: list[str] | None = None
    ) -> Handled:
        """Handle one raw email; a malformed one raises before anything is recorded.

        Raises:
            TooLargeError: its text is over ``MAX_BODY_BYTES``, or its headers over
                the limits of ``headers``.
            InvalidInputError: unreadable, or addressed to no agent, thread or request.
        """
        mail = mime.from_bytes(
            raw,
            mail_from=mail_from,
            rcpts=rcpts,
            authserv_id=self.cfg.authserv_id,
            max_text=self.cfg.max_text_bytes,
        )
        if mail.automatic:
            log.info("email %s from %s ignored: %s", mail.message_id, mail.sender, mail.automatic)
            return Handled(Disposition.IGNORED, f"automatic message: {mail.automatic}")
        if mail.reaction:
            # A reaction is not an answer: it never decides, and is not worth asking again.
            log.info("email %s from %s ignored: a reaction", mail.message_id, mail.sender)
            return Handled(Disposition.IGNORED, "an emoji reaction is not an answer")
        for address in mail.recipients:
            if token := tokens.token_of(address, self.cfg.domain):
                return await self._answer(mail, token)
        for mid in mail.thread_ids():
            if tid := await self.rt.state.resolve(mid):
                return await self._message(mail, tid)
        for address in mail.recipients:
            local, _, domain = address.rpartition("@")
            if domain == self.cfg.domain and local in self.rt.agents:
                return await self._start(mail, local)
        raise InvalidInputError(
            f"no recipient names an agent (e.g. deploy@{self.cfg.domain}), a reply address "
            f"or a known thread: {', '.join(mail.recipients) or 'none'}"
        )

    def _unverified(self, mail: Inbound) -> str | None:
        """Why ``mail`` may not act as its sender, when ``EMAIL_REQUIRE_AUTH_RESULTS`` asks
        our server to have verified its From (DKIM or DMARC pass); None when it may.

        Every email that acts as its sender is checked (a new thread, a message on one, a
        decision, an answer): a forged From must not put words or requests in someone's name.
        """
        if not self.cfg.require_auth_results or mail.authenticated:
            return None
        return (
            "Your message could not be verified (no DKIM or DMARC pass for "
            f"{mail.sender.rpartition('@')[2]} from our mail server {self.cfg.authserv_id})."
        )

    # --- messages ------------------------------------------------------------------------

    async def _start(self, mail: Inbound, agent: str) -> Handled:
        text = mail.text or mail.subject
        if not text:
            return Handled(Disposition.IGNORED, "the email is empty")
        root = mail.root()
        tid = ids.thread_id_for("email", root)
        if unverified := self._unverified(mail):
            return self._dropped(mail, tid, unverified)
        origin = Origin(
            channel="email",
            conversation=root,
            metadata={
                "subject": mail.subject,
                "from": mail.sender,
                "message_id": mail.message_id,
                "to": self.cfg.agent_address(agent),
            },
        )
        try:
            got = await self.rt.inbox.message(
                agent=agent,
                text=text,
                by=_actor(mail),
                origin=origin,
                thread_id=tid,
                delivery=mail.message_id,
            )
        except ConflictError as exc:
            return await self._refuse(mail, tid, exc.message)
        await self.rt.state.link(root, tid)
        await self.rt.state.link(mail.message_id, tid)
        if got.duplicate:
            return Handled(Disposition.DUPLICATE, "seen before", tid)
        kind = Disposition.CREATED if got.created else Disposition.MESSAGE
        return Handled(kind, f"message for {agent}", tid)

    async def _message(self, mail: Inbound, tid: str) -> Handled:
        if not mail.text:
            return Handled(Disposition.IGNORED, "nothing new in the reply", tid)
        if unverified := self._unverified(mail):
            return self._dropped(mail, tid, unverified)
        try:
            got = await self.rt.inbox.say(tid, mail.text, _actor(mail), delivery=mail.message_id)
        except RefusedError as exc:
            return await self._refuse(mail, tid, exc.message)
        await self.rt.state.link(mail.message_id, tid)
        if got.duplicate:
            return Handled(Disposition.DUPLICATE, "seen before", tid)
        return Handled(Disposition.MESSAGE, "message on the thread", tid)

    # --- answers to requests -------------------------------------------------------------

    async def _answer(self, mail: Inbound, token: str) -> Handled:
        claim = tokens.verify(token, self.cfg.secret)
        if claim is None:
            # Forged or mangled: likely spoofing, so no answer that could be backscatter.
            log.warning(
                "email %s from %s: forged reply token refused", mail.message_id, mail.sender
            )
            return Handled(Disposition.REFUSED, "unknown or forged reply address")
        tid = ids.thread_of_request(claim.request_id)
        assert tid is not None  # a genuine token names a well-formed request id
        now = self.rt.clock.now()
        if claim.is_expired(now):
            return await self._refuse(mail, tid, "This reply address has expired.")
        if not claim.is_for(mail.sender, self.cfg.secret):
            return await self._refuse(
                mail,
                tid,
                f"This reply address was sent to someone else, not to {mail.sender}. "
                "Only the person it was sent to can answer with it.",
            )
        if unverified := self._unverified(mail):
            return await self._refuse(mail, tid, unverified)
        try:
            req, state = await self.rt.decisions.find(claim.request_id)
        except NotFoundError:
            return await self._refuse(mail, tid, "The request this answers no longer exists.")
        if await self.rt.threads.seen(state.id, mail.message_id):
            return Handled(Disposition.DUPLICATE, "seen before", tid)
        await self.rt.state.link(mail.message_id, tid)
        if refusal := why_refused(req, _actor(mail), now):  # before reading what it says
            return await self._refuse(mail, tid, f"{to_words(refusal)}.")
        if isinstance(req.asked, ApprovalRequested):
            return await self._decide(mail, tid, token, req.asked)
        return await self._reply_to_question(mail, tid, token, claim.request_id)

    async def _decide(
        self, mail: Inbound, tid: str, token: str, asked: ApprovalRequested
    ) -> Handled:
        verdict = read_verdict(mail.text, exact=asked.risky)
        if verdict.kind is Kind.UNCLEAR:
            first = next((ln.strip() for ln in mail.text.splitlines() if ln.strip()), "")
            said = f' ("{cut(first, 80)}")' if first else ""
            exactly = (
                " This request is marked risky: only the word APPROVE or REJECT counts."
                if asked.risky
                else ""
            )
            return await self._ask_again(
                mail,
                tid,
                token,
                f"I could not read a decision in your reply{said}, so nothing was decided. "
                f"{compose.HOW_TO_ANSWER} The decision must be on the first line.{exactly}",
            )
        decision = Decision.APPROVE if verdict.kind is Kind.APPROVE else Decision.REJECT
        # The arguments the email answered showed: those asked, or an edit of them in a
        # later email. None recorded (no In-Reply-To, an email sent before we recorded
        # them): those asked, so an answer after an edit is refused, never misread.
        shown = await self.mailer.shown_hash(tid, mail.thread_ids())
        try:
            outcome = await self.rt.decisions.decide(
                asked.request_id,
                decision,
                _actor(mail),
                reason=verdict.reason,
                seen_hash=shown or asked.args_hash,
                delivery=mail.message_id,
            )
        except RefusedError as exc:
            if "args_hash" in exc.detail:
                return await self._refuse(mail, tid, ARGS_CHANGED)
            return await self._refuse(mail, tid, exc.message)
        if outcome.duplicate:
            return Handled(Disposition.DUPLICATE, "seen before", tid)
        log.info(
            "thread %s: %s %s by email from %s", tid, asked.request_id, decision.value, mail.sender
        )
        return Handled(Disposition.DECIDED, decision.value, tid)

    async def _reply_to_question(
        self, mail: Inbound, tid: str, token: str, request_id: str
    ) -> Handled:
        if not mail.text:
            return await self._ask_again(
                mail, tid, token, "Your reply was empty, so nothing was answered."
            )
        try:
            outcome = await self.rt.decisions.answer(
                request_id, mail.text, _actor(mail), delivery=mail.message_id
            )
        except InvalidInputError as exc:
            return await self._ask_again(mail, tid, token, exc.message)
        except RefusedError as exc:
            return await self._refuse(mail, tid, exc.message)
        if outcome.duplicate:
            return Handled(Disposition.DUPLICATE, "seen before", tid)
        log.info("thread %s: %s answered by email from %s", tid, request_id, mail.sender)
        return Handled(Disposition.ANSWERED, "answer recorded", tid)

    # --- telling the sender --------------------------------------------------------------

    def _dropped(self, mail: Inbound, tid: str, why: str) -> Handled:
        """Refuse an unverified email to an agent or a thread, telling its sender nothing:
        its From is what could not be trusted, and anyone may write an agent's address, so
        a notice would mail whoever was forged (a reply with a reply address, which only
        those it was sent to have seen, is told, by ``_refuse``)."""
        log.warning(
            "thread %s: email %s from %s refused, not told: %s",
            tid,
            mail.message_id,
            mail.sender,
            why,
        )
        return Handled(Disposition.REFUSED, why, tid)

    async def _refuse(self, mail: Inbound, tid: str, why: str) -> Handled:
        log.info(
            "thread %s: email %s from %s did not count: %s", tid, mail.message_id, mail.sender, why
        )
        if not self.cfg.bounces:
            return Handled(Disposition.REFUSED, why, tid)
        text = f"{why}\n\nNothing was decided or recorded from your message."
        draft = drafts.for_inbound(self.cfg, mail, text, title="Your reply did not count")
        if await self.mailer.sent_before(tid, draft):  # a redelivery: told once is enough
            return Handled(Disposition.REFUSED, f"{why} (told before)", tid)
        if not await self._may_answer(mail, tid):
            return Handled(Disposition.REFUSED, f"{why} (not told: limit reached)", tid)
        await self._notify(mail, tid, draft)
        return Handled(Disposition.REFUSED, why, tid)

    async def _ask_again(self, mail: Inbound, tid: str, token: str, why: str) -> Handled:
        log.info("thread %s: email %s from %s unclear: %s", tid, mail.message_id, mail.sender, why)
        reply_to = tokens.to_reply_address(token, self.cfg.domain)
        draft = drafts.for_inbound(
            self.cfg, mail, why, title="Please answer again", reply_to=reply_to
        )
        if await self.mailer.sent_before(tid, draft):  # a redelivery: asked once is enough
            return Handled(Disposition.UNCLEAR, f"{why} (asked before)", tid)
        if not await self._may_answer(mail, tid):
            return Handled(Disposition.UNCLEAR, f"{why} (not asked again: limit reached)", tid)
        await self._notify(mail, tid, draft)
        return Handled(Disposition.UNCLEAR, why, tid)

    async def _may_answer(self, mail: Inbound, tid: str) -> bool:
        """Whether one more answer (asking again, a refusal) may go to the sender this hour.

        Bounded, so two auto-responders (or someone scripting replies) cannot loop, and
        replies forged with someone's From cannot make us mail them without end. Asked only
        for an answer not sent before: a redelivered email, answered once, uses none.
        """
        if await self.rt.state.take(
            f"answers:{mail.sender}",
            limit=self.cfg.ask_again_per_hour,
            per=3600.0,
            now=self.rt.clock.now(),
        ):
            return True
        log.warning(
            "thread %s: nothing more sent to %s: %d answers per hour already sent",
            tid,
            mail.sender,
            self.cfg.ask_again_per_hour,
        )
        return False

    async def _notify(self, mail: Inbound, tid: str, draft: drafts.Draft) -> None:
        # Best effort: the inbound email is handled either way; a lost notice is only logged.
        try:
            await self.mailer.send(tid, draft)
        except DeliveryError as exc:
            log.warning("thread %s: could not tell %s: %s", tid, mail.sender, exc.message)


def _actor(mail: Inbound) -> Actor:
    # No display name: Actor.names() would let a sender-chosen name match a policy identity.
    return Actor(channel="email", id=mail.sender, email=mail.sender)
