"""The ``greenlight`` command: run the bot, and talk to it from a terminal.

``run``, ``web`` and ``worker`` serve; the other commands are clients of the
REST API (``--url``, ``--token``), with tables for people and ``--json`` for
scripts. An API error is printed from its ``detail`` and exits with status 1.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.client import DEFAULT_URL, ApiError, Client, find_token
from bot.errors import ConfigError
from bot.settings import Settings

app = typer.Typer(
    help="Greenlight: human-in-the-loop approvals for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
)

Url = Annotated[
    str, typer.Option("--url", envvar="GREENLIGHT_URL", help="The Greenlight API's base URL.")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="API_TOKEN",
        show_default=False,
        help="API token. Default: $API_TOKEN, else $DATA_DIR/api_token from `greenlight run`.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
Me = Annotated[
    str | None,
    typer.Option(
        "--as", envvar="GREENLIGHT_USER", show_default=False, help="Who you are. Default: $USER."
    ),
]
STATUS_STYLE = {
    "running": "cyan",
    "awaiting_approval": "bold yellow",
    "awaiting_human": "bold yellow",
    "waiting_for_user": "blue",
    "paused": "magenta",
    "done": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "open": "bold yellow",
    "approved": "green",
    "rejected": "red",
}
SETTLED = {"waiting_for_user", "done", "failed", "cancelled", "paused"}
_QUIET = {
    "thread_created", "user_message", "approval_requested", "human_question", "human_answer",
    "context_fetched", "tool_started", "reminded",
}  # fmt: skip


# --- serving ----------------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def _serve(*, web: bool, worker: bool) -> None:
    from bot.serve import run_loop, serve

    try:
        run_loop(serve(_settings(), web=web, worker=worker))
    except ConfigError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def run() -> None:
    """Web + worker in one process (embedded Redis when REDIS_URL is unset)."""
    _serve(web=True, worker=True)


@app.command()
def web() -> None:
    """The web process: REST API and channel endpoints."""
    _serve(web=True, worker=False)


@app.command()
def worker() -> None:
    """A worker process: steps threads and delivers prompts."""
    _serve(web=False, worker=True)


# --- client commands --------------------------------------------------------------------------


@app.command()
def threads(
    *,
    status: Annotated[str | None, typer.Option(help="Only threads in this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only threads of this agent.")] = None,
    limit: int = 20,
    offset: int = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List threads, newest first."""
    with _api(url, token) as api:
        page = api.threads(status=status, agent=agent, offset=offset, limit=limit)
    if as_json:
        return _json(page)
    table = Table(title=f"{len(page['items'])} of {page['total']} threads")
    for name in ("thread", "agent", "status", "events", "updated"):
        table.add_column(name, no_wrap=True)
    for t in page["items"]:
        row = (t["id"], t["agent"], _status(t["status"]), str(t["version"]), _ago(t["updated_at"]))
        table.add_row(*row)
    Console().print(table)


@app.command()
def show(
    thread_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show a thread: its status, open requests and every event."""
    with _api(url, token) as api:
        thread = api.thread(thread_id)
    if as_json:
        return _json(thread)
    out = Console()
    out.print(f"[bold]{thread['id']}[/]  agent {thread['agent']}  {_status(thread['status'])}")
    for event in thread["events"]:
        out.print(
            f"[dim]{time.strftime('%H:%M:%S', time.localtime(event['at']))}[/] {_event(event)}"
        )
    for req in thread["open_requests"]:
        out.print(f"[bold yellow]open[/] {req['id']}: {escape(_what(req))}")


@app.command()
def requests(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List open approvals and questions, oldest first."""
    with _api(url, token) as api:
        page = api.requests()
    if as_json:
        return _json(page)
    table = Table(title=f"{page['total']} open requests")
    table.add_column("request", no_wrap=True)
    table.add_column("kind")
    table.add_column("what")
    table.add_column("asked by")
    table.add_column("expires", no_wrap=True)
    for r in page["items"]:
        who = (r.get("requester") or {}).get("id", "")
        expires = _ago(r["expires_at"]) if r["expires_at"] else "never"
        table.add_row(r["id"], r["kind"], escape(_what(r)), who, expires)
    Console().print(table)


@app.command()
def approve(
    request_id: str,
    *,
    reason: Annotated[str | None, typer.Option(help="Why; recorded with the decision.")] = None,
    me: Me = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Approve a request; the agent resumes where it stopped."""
    with _api(url, token) as api:
        _decided(api.decide(request_id, "approve", by=_me(me), reason=reason), as_json)


@app.command()
def reject(
    request_id: str,
    *,
    reason: Annotated[str, typer.Option(help="Why; the agent is told.")],
    me: Me = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Reject a request; the agent hears the reason."""
    with _api(url, token) as api:
        _decided(api.decide(request_id, "reject", by=_me(me), reason=reason), as_json)


@app.command()
def answer(
    request_id: str,
    text: str,
    *,
    me: Me = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Answer an agent's question (the text, or one of its choices)."""
    with _api(url, token) as api:
        _decided(api.answer(request_id, text, by=_me(me)), as_json)


@app.command()
def chat(
    agent: str,
    *,
    user: Annotated[
        str | None, typer.Option(envvar="GREENLIGHT_USER", help="Who you are. Default: $USER.")
    ] = None,
    approver: Annotated[
        str | None, typer.Option("--as", help="Who decides the approvals shown. Default: --user.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    poll: Annotated[float, typer.Option(hidden=True)] = 0.2,
) -> None:
    """Talk to an agent; approvals and questions appear inline. Ctrl-D leaves."""
    out = Console(highlight=False)
    me = _me(user)
    out.print(f"Talking to [bold]{agent}[/] as {me}. Ctrl-D leaves.")
    with _api(url, token) as api:
        Chat(api, out, agent, me=me, approver=approver or me, poll=poll).run()


def main() -> None:
    app()


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _api(url: str, token: str | None) -> Iterator[Client]:
    try:
        with Client(url, token or find_token()) as api:
            yield api
    except ApiError as exc:
        fail(exc)


def fail(exc: ApiError) -> None:
    """Print an API error for people and exit with status 1."""
    hint = {
        0: "Is it running? Start it with `greenlight run`, or pass --url.",
        401: "Pass --token, set API_TOKEN, or run where DATA_DIR holds api_token.",
    }.get(exc.status)
    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/] {escape(exc.detail)} [dim]({exc.error}, HTTP {exc.status})[/]")
    if hint:
        err.print(f"[dim]{hint}[/]")
    raise typer.Exit(1)


def _me(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except OSError:  # no user name in the environment or the password database
        return os.environ.get("USERNAME", "cli")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _decided(request: dict[str, Any], as_json: bool) -> None:
    if as_json:
        return _json(request)
    who = ", ".join(a["id"] for a in request["closed_by"] or request["approvals"])
    by = f" by {who}" if who else ""
    Console(highlight=False).print(f"{request['id']}: {_status(request['status'])}{by}")


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'default')}]{status}[/]"


def _ago(at: float) -> str:
    delta = at - time.time()
    span = abs(delta)
    units = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
    size = next((f"{int(span // n)}{u}" for n, u in units if span >= n), "0s")
    return f"in {size}" if delta > 0 else f"{size} ago"


def _args(args: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (args or {}).items())


def _what(req: dict[str, Any]) -> str:
    """One line saying what a request asks."""
    if req["kind"] == "approval":
        return f"{req['tool']}({_args(req['args'])})"
    choices = f" [{' / '.join(req['choices'])}]" if req.get("choices") else ""
    return f"{req['question']}{choices}"


def _event(e: dict[str, Any]) -> str:
    """One line of a thread's history, as rich markup."""
    by = (e.get("by") or {}).get("id", "")
    match e["type"]:
        case "thread_created":
            return f"[dim]started by {by} via {e['origin']['channel']}[/]"
        case "user_message":
            return f"[bold]{by}:[/] {escape(e['text'])}"
        case "tool_call":
            return f"[dim]→ {e['tool']}({escape(_args(e['args']))})[/]"
        case "tool_result":
            return f"[dim]← {e['outcome']}: {escape(str(e['output'])[:160])}[/]"
        case "approval_requested":
            return f"[yellow]? approval for {e['tool']} ({e['request_id']})[/]"
        case "approval_decision":
            why = f": {escape(e['reason'])}" if e.get("reason") else ""
            return f"[bold]{e['decision']}d[/] by {by}{why}"  # approve-d, reject-d
        case "human_question":
            return f"[yellow]? {escape(e['question'])} ({e['request_id']})[/]"
        case "human_answer":
            return f"answered by {by}: {escape(e['text'])}"
        case "agent_reply":
            return f"[green]agent:[/] {escape(e['text'])}"
        case "context_fetched":
            return f"[dim]fetched {e['name']}[/]"
        case "error":
            return f"[red]! {escape(e['message'])}[/]"
    return f"[dim]{e['type']} {by}[/]"


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
        waiting_since = time.monotonic()
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
                    self.out.print(f"[dim]thread is[/] {_status(thread['status'])}")
                return
            if waiting_since and time.monotonic() - waiting_since > 10:
                self.out.print("[dim]still waiting (is a worker running? Ctrl-C leaves)[/]")
                waiting_since = 0.0
            time.sleep(self.poll)

    def _show(self, e: dict[str, Any]) -> None:
        # Skipped: what the user typed, what the prompts show, and bookkeeping.
        if e["type"] in _QUIET or e.get("tool") == "ask_human":
            return
        self.out.print(_event(e))

    def _ask(self, req: dict[str, Any]) -> None:
        self.out.print(f"[bold yellow]{req['kind']}:[/] {escape(_what(req))}")
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
        key = typer.getchar()
        self.out.print(key)
        if key in ("", "\x04"):
            raise EOFError
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
