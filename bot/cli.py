"""The ``greenlight`` command: run the bot, and talk to it from a terminal."""

from __future__ import annotations

import asyncio
import logging

import typer

from bot.errors import ConfigError
from bot.settings import Settings

app = typer.Typer(
    help="Greenlight: human-in-the-loop approvals for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
)


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
    from bot.serve import serve

    try:
        asyncio.run(serve(_settings(), web=web, worker=worker))
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


def main() -> None:
    app()
