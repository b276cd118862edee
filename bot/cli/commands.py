"""The ``greenlight`` command: run the bot, and talk to it from a terminal.

``run``, ``web`` and ``worker`` serve; the other commands are clients of the
REST API (``--url``, ``--token``), with tables for people and ``--json`` for
scripts. An API error is printed from its ``detail`` and exits with status 1.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.cli import display
from bot.cli.chat import Chat
from bot.cli.client import DEFAULT_URL, ApiError, Client, find_token
from bot.domain.audit import to_cells
from bot.domain.errors import ConfigError
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


# --- serving ----------------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc
    from bot.telemetry import setup_logging

    setup_logging(settings)
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
    archived: Annotated[
        bool, typer.Option("--archived", help="Threads retention moved to the archive.")
    ] = False,
    limit: int = 20,
    offset: int = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List threads, newest first (archived: the most recently archived first)."""
    with _api(url, token) as api:
        if archived:
            page = api.archived(offset=offset, limit=limit)
        else:
            page = api.threads(status=status, agent=agent, offset=offset, limit=limit)
    if as_json:
        return _json(page)
    kind = "archived threads" if archived else "threads"
    table = Table(title=f"{len(page['items'])} of {page['total']} {kind}")
    for name in ("thread", "agent", "status", "events", "updated"):
        table.add_column(name, no_wrap=True)
    for t in page["items"]:
        when = display.ago(t["updated_at"])
        table.add_row(t["id"], t["agent"], display.status(t["status"]), str(t["version"]), when)
    Console().print(table)


@app.command()
def show(
    thread_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show a thread: its status, open requests and every event (archived ones too)."""
    with _api(url, token) as api:
        try:
            thread = api.thread(thread_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            thread = _archived_or(api, thread_id, exc)
    if as_json:
        return _json(thread)
    out = Console()
    shown = display.status(thread["status"])
    out.print(f"[bold]{thread['id']}[/]  agent {thread['agent']}  {shown}")
    if "archived_at" in thread:
        out.print(f"[dim]archived {display.ago(thread['archived_at'])}[/]")
    for event in thread["events"]:
        at = time.strftime("%H:%M:%S", time.localtime(event["at"]))
        out.print(f"[dim]{at}[/] {display.event_line(event)}")
    for req in thread["open_requests"]:
        out.print(f"[bold yellow]open[/] {req['id']}: {escape(display.what(req))}")


@app.command("cancel", help="End a thread; its open requests are closed.")
@app.command("resume", help="Resume a paused or failed thread where it stopped.")
@app.command("pause", help="Stop the agent taking steps; decisions are still recorded.")
def control(
    ctx: typer.Context,
    thread_id: str,
    *,
    reason: Annotated[str | None, typer.Option(help="Why; recorded.")] = None,
    me: Me = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Pause, resume or cancel a thread: the command's name says which."""
    with _api(url, token) as api:
        thread = api.control(thread_id, str(ctx.info_name), by=_me(me), reason=reason)
    if as_json:
        return _json(thread)
    Console(highlight=False).print(f"{thread['id']}: {display.status(thread['status'])}")


@app.command()
def requests(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List open approvals and questions, oldest first."""
    with _api(url, token) as api:
        page = api.requests()
    if as_json:
        return _json(page)
    # Two columns, so that what is asked keeps most of an 80-column terminal: the kind,
    # the expiry and the requester go under the request's id, which is never wrapped.
    table = Table(title=f"{page['total']} open requests")
    table.add_column("request", no_wrap=True)
    table.add_column("what")
    for r in page["items"]:
        about = [f"{r['kind']} · {_expiry(r['expires_at'])}"]
        if who := (r.get("requester") or {}).get("id"):
            about.append(f"asked by {who}")
        details = escape("\n".join(about))
        table.add_row(f"{r['id']}\n[dim]{details}[/dim]", escape(display.what(r)))
    Console().print(table)


def _expiry(at: float | None) -> str:
    if not at:
        return "never expires"
    when = display.ago(at)
    return f"expires {when}" if when.startswith("in ") else f"expired {when}"


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
    _decide(request_id, "approve", reason, me=me, url=url, token=token, as_json=as_json)


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
    _decide(request_id, "reject", reason, me=me, url=url, token=token, as_json=as_json)


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
        _decided(api.answer(request_id, text, by=_decider(api, me)), as_json)


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
    me = _me(user, "--user")
    out.print(f"Talking to [bold]{agent}[/] as {me}. Ctrl-D leaves.")
    with _api(url, token) as api:
        Chat(api, out, agent, me=me, approver=approver or me, poll=poll).run()


audit = typer.Typer(help="Check that thread logs are as recorded; export decisions.")
app.add_typer(audit, name="audit")

Format = Literal["jsonl", "csv"]
AUDIT_COLUMNS = (
    "at", "thread", "kind", "outcome", "request", "by", "by_id", "channel", "reason",
    "args_hash", "event", "hash",
)  # fmt: skip


@audit.command("verify")
def audit_verify(
    thread_id: Annotated[
        str | None, typer.Argument(help="One thread; default: every thread.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Check each thread's hash chain; exit 1 if any event was edited, removed or moved."""
    with _api(url, token) as api:
        if thread_id is not None:
            checked = [api.verify(thread_id)]
        else:
            checked = [api.verify(t) for t in _every_thread(api)]
    if as_json:
        _json(checked)
    else:
        out = Console(highlight=False)
        for chain in checked:
            tid = chain["thread"]
            where = ", archived" if chain.get("archived") else ""
            if chain["intact"]:
                out.print(f"{tid}: intact ({chain['events']} events{where})")
            for b in chain["breaks"]:
                out.print(f"[bold red]{tid}[/]: event {b['index']} ({b['event_id']}): {b['why']}")
    if any(not chain["intact"] for chain in checked):
        raise typer.Exit(1)


@audit.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="ISO 8601 time, e.g. 2026-11-01.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time; default: now.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write every decision, answer and expiry in the window, with its event's chain hash."""
    with _api(url, token) as api:
        rows = api.audit(since=since, until=until)  # a page at a time, written as it comes
        if fmt == "jsonl":
            for row in rows:
                typer.echo(json.dumps(row, separators=(",", ":")))
            return
        out = csv.DictWriter(sys.stdout, fieldnames=AUDIT_COLUMNS)  # CRLF: a bare CR is quoted
        out.writeheader()
        out.writerows(to_cells(r) for r in rows)


def _archived_or(api: Client, thread_id: str, missing: ApiError) -> dict[str, Any]:
    """The archived thread, or the first "no thread" error when it is not archived either."""
    try:
        return api.archived_thread(thread_id)
    except ApiError as exc:
        if exc.status == 404:
            raise missing from None
        raise


def _every_thread(api: Client) -> Iterator[str]:
    offset = 0
    while True:
        page = api.threads(offset=offset, limit=200)
        yield from (t["id"] for t in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return


tokens = typer.Typer(help="Scoped API tokens: for agents, for approvers, for admins.")
app.add_typer(tokens, name="tokens")
TokenScope = Literal["agent", "approver", "admin"]


@tokens.command("create")
def tokens_create(
    name: str,
    *,
    scope: Annotated[TokenScope, typer.Option(help="What the token may do.")],
    identity: Annotated[
        str | None,
        typer.Option("--as", show_default=False, help="An approver's identity: who it decides as."),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Make a token and print it, this once: Greenlight keeps only its SHA-256."""
    with _api(url, token) as api:
        made = api.create_token(name, scope, identity=identity)
    if as_json:
        return _json(made)
    who = f" as {made['identity']}" if made.get("identity") else ""
    typer.echo(f"token {made['name']} (scope {made['scope']}{who}); shown once, keep it now:")
    typer.echo(made["token"])
    return None


@tokens.command("list")
def tokens_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List tokens: name, scope, identity, created, last used; never the tokens."""
    with _api(url, token) as api:
        found = api.tokens()
    if as_json:
        return _json(found)
    table = Table(title=f"{len(found['items'])} tokens")
    for column in ("name", "scope", "as", "created", "last used"):
        table.add_column(column, no_wrap=True)
    for t in found["items"]:
        used = display.ago(t["last_used_at"]) if t["last_used_at"] else "never"
        table.add_row(
            escape(t["name"]),
            t["scope"],
            escape(t["identity"] or ""),
            display.ago(t["created_at"]),
            used,
        )
    Console().print(table)
    return None


@tokens.command("revoke")
def tokens_revoke(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Revoke a token: from now on it is refused (401)."""
    with _api(url, token) as api:
        api.revoke_token(name)
    typer.echo(f"token {name} revoked")


@app.command()
def mcp(
    url: Url = DEFAULT_URL,
    token: Token = None,
    wait: Annotated[
        float,
        typer.Option(
            min=1,
            max=600,
            help="Seconds a tool waits for people before answering that it is still pending.",
        ),
    ] = 50.0,
) -> None:
    """Serve the MCP tools over stdio, for MCP clients (Claude Code, Cursor, ...).

    They ask the server at --url with --token (an agent token: `greenlight tokens create`).
    """
    from bot.web.mcp import serve_stdio

    found = token or find_token()
    if not found:
        raise typer.BadParameter("give --token or set API_TOKEN (an agent token)")
    serve_stdio(url, found, wait)


@app.command("mcp-gateway")
def mcp_gateway(
    *,
    upstream: Annotated[
        str,
        typer.Option(
            help="The MCP server to guard: a command run over stdio ('npx -y some-server "
            "/data'), or a streamable-HTTP URL.",
        ),
    ],
    policy: Annotated[
        Path,
        typer.Option(
            help="The TOML file of gates: which calls wait for approval, and who approves."
        ),
    ],
    log: Annotated[
        Path,
        typer.Option(help="The call log: one JSON line per call forwarded or refused."),
    ] = Path("greenlight-gateway.jsonl"),
    agent: Annotated[
        str,
        typer.Option(help="The agent name its requests are listed under on the server."),
    ] = "mcp-gateway",
    url: Url = DEFAULT_URL,
    token: Token = None,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a gated call waits for people before answering that it is still "
            "pending (the same call again keeps waiting); 0 waits until it is decided.",
        ),
    ] = 50.0,
) -> None:
    """Serve an MCP server's tools over stdio, asking approvers before gated calls.

    Tools are served unchanged; the calls --policy gates wait for Greenlight's approvers.

    It asks the server at --url with --token (an agent token: `greenlight tokens create`).
    """
    import anyio

    from greenlight import AsyncGreenlight
    from greenlight.errors import ConfigError as ClientConfigError
    from greenlight.gateway import CallLog, load, serve

    found = token or find_token()
    if not found:
        raise typer.BadParameter("give --token or set API_TOKEN (an agent token)")
    try:
        gates = load(policy)
        calls = CallLog(log)
    except ClientConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", agent):
        raise typer.BadParameter("letters, digits, _ . - (64 at most)", param_hint="--agent")
    client = AsyncGreenlight(url, found, agent=agent)
    try:
        anyio.run(serve, upstream, gates, client, calls, wait or None)
    except ClientConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def main() -> None:
    app()


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _api(url: str, token: str | None) -> Iterator[Client]:
    try:
        with Client(url, token or find_token()) as api:
            yield api
    except ApiError as exc:
        _fail(exc)


def _fail(exc: ApiError) -> None:
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


def _me(given: str | None, option: str = "--as") -> str:
    """Who is acting: the option's value, else the login name; never a guess."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # KeyError before Python 3.13: a uid with no passwd entry
        hint = f"pass {option} NAME or set GREENLIGHT_USER"
        Console(stderr=True).print(f"[bold red]error:[/] cannot tell who you are: {hint}")
        raise typer.Exit(2) from None


def _decider(api: Client, given: str | None) -> str:
    """Who decides: ``--as``; else an approver token's identity; else the login name."""
    if given:
        return given
    who = api.whoami()
    if who["scope"] == "approver" and who.get("identity"):
        return str(who["identity"])
    return _me(None)


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _decide(
    request_id: str,
    decision: str,
    reason: str | None,
    *,
    me: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    with _api(url, token) as api:
        by = _decider(api, me)
        _decided(api.decide(request_id, decision, by=by, reason=reason), as_json)


def _decided(request: dict[str, Any], as_json: bool) -> None:
    if as_json:
        return _json(request)
    out = Console(highlight=False)
    if request["status"] == "open" and request["approvals"]:  # N of M: more are needed
        who = ", ".join(a["id"] for a in request["approvals"])
        votes = f"{len(request['approvals'])} of {request['min_approvals']} approvals"
        return out.print(f"{request['id']}: {votes} ({who}), still open")
    who = ", ".join(a["id"] for a in request["closed_by"] or request["approvals"])
    by = f" by {who}" if who else ""
    out.print(f"{request['id']}: {display.status(request['status'])}{by}")
