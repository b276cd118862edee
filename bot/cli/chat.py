"""``greenlight chat``: talk to an agent from a terminal, answering what it asks inline.

A client of the REST API like the other commands: it sends each line as a
message, follows the thread by polling, and turns open approvals and questions
into a key press or a typed answer.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from bot.cli.client import ApiError, Client
from bot.cli.display import event_line, status, what

# Statuses in which the thread waits for someone else than the agent.
SETTLED = {"waiting_for_user", "done", "failed", "cancelled", "paused"}
# Events not echoed: what the user typed, what the prompts show, and bookkeeping.
_QUIET = {
    "thread_created", "user_message", "approval_requested", "human_question", "human_answer",
    "context_fetched", "tool_started", "reminded",
}  # fmt: skip


class Chat:
    """One terminal conversation: send lines, follow the thread, answer what it asks.

    Args:
        api: the API client.
        out: where to print.
        agent: the agent to talk to.
        me: who speaks (and answers questions).
        approver: who decides approvals shown here (one may not approve one's own).
        poll: seconds between two looks at the thread.
    """

    def __init__(
        self, api: Client, out: Console, agent: str, *, me: str, approver: str, poll: float
    ) -> None:
        self.api, self.out, self.agent = api, out, agent
        self.me, self.approver, self.poll = me, approver, poll
        self.thread_id: str | None = None
        self.shown = 0
        self.handled: set[str] = set()

    def run(self) -> None:
        """Read lines until end of input; each one is a message to the agent."""
        with contextlib.suppress(EOFError):
            while True:
                text = self.out.input("[bold cyan]you>[/] ")
                if not text.strip():
                    continue
                if self.thread_id is None:
                    self.thread_id = self.api.create_thread(self.agent, text, user=self.me)["id"]
                    self.out.print(f"[dim]thread {self.thread_id}[/]")
                else:
                    self.api.say(self.thread_id, text, user=self.me)
                self.follow(self.thread_id)
        self.out.print("bye")

    def follow(self, thread_id: str) -> None:
        """Print what happens until the thread waits for the user (or for nobody here)."""
        started, warned = time.monotonic(), False
        while True:
            thread = self.api.thread(thread_id)
            for event in thread["events"][self.shown :]:
                self._show(event)
            self.shown = len(thread["events"])
            asked = [r for r in thread["open_requests"] if r["id"] not in self.handled]
            if asked:
                self._ask(asked[0])
                continue
            if thread["status"] in SETTLED:
                if thread["status"] not in ("waiting_for_user", "done"):
                    self.out.print(f"[dim]thread is[/] {status(thread['status'])}")
                return
            if not warned and time.monotonic() - started > 10:
                self.out.print("[dim]still waiting (is a worker running? Ctrl-C leaves)[/]")
                warned = True
            time.sleep(self.poll)

    def _show(self, e: dict[str, Any]) -> None:
        if e["type"] in _QUIET or e.get("tool") == "ask_human":
            return
        self.out.print(event_line(e))

    def _ask(self, req: dict[str, Any]) -> None:
        self.out.print(f"[bold yellow]{req['kind']}:[/] {escape(what(req))}")
        try:
            if req["kind"] == "approval":
                self._decide(req)
            else:
                self._answer(req)
        except ApiError as exc:
            self.out.print(f"[red]{escape(exc.detail)}[/]")
            if exc.status == 409:  # decided meanwhile: the thread shows what happened
                self.handled.add(req["id"])
            elif exc.status == 403:  # asked again: wait, or leave it to someone who may
                self.out.print(
                    f"[dim]someone else can: greenlight approve {req['id']} --as NAME[/]"
                )
            else:
                raise

    def _decide(self, req: dict[str, Any]) -> None:
        self.out.print("[a]pprove  [r]eject  [w]ait for someone else? ", end="", markup=False)
        try:
            key = typer.getchar()
        except OSError:  # no terminal to press a key on (input piped): a line's first letter
            key = self.out.input().strip()[:1]
        else:
            if key in ("", "\x04"):
                raise EOFError
        self.out.print(key)
        if key.lower() == "a":
            self.api.decide(req["id"], "approve", by=self.approver)
        elif key.lower() == "r":
            reason = self.out.input("reason> ")
            self.api.decide(req["id"], "reject", by=self.approver, reason=reason)
        elif key.lower() != "w":
            self.out.print("press a, r or w")
            return
        self.handled.add(req["id"])

    def _answer(self, req: dict[str, Any]) -> None:
        choices: list[str] = req.get("choices") or []
        for n, choice in enumerate(choices, start=1):
            self.out.print(f"  {n}. {escape(choice)}")
        text = self.out.input("answer> ").strip()
        if text.isdigit() and 0 < int(text) <= len(choices):
            text = choices[int(text) - 1]
        self.api.answer(req["id"], text, by=self.me)
        self.handled.add(req["id"])
