"""Imports point down the layers (docs/architecture.md): checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import of Greenlight (by prefix), besides itself.
ALLOWED = {
    "bot/domain": ("bot.domain",),
    "bot/storage": ("bot.domain", "bot.storage"),
    "bot/engine": ("bot.domain", "bot.storage", "bot.engine"),
    "bot/models": ("bot.domain", "bot.models"),
    "channels": ("bot.domain", "bot.engine.ports", "bot.settings", "bot.web", "channels"),
    "agents": ("bot.domain", "bot.models.offline", "agents"),
    # The client talks HTTP only: nothing of the server.
    "greenlight": ("greenlight",),
}
# Third-party modules a layer must never reach for: Redis belongs to storage.
FORBIDDEN = {
    "bot/domain": ("redis", "fastapi", "starlette", "slack_sdk", "slack_bolt", "anthropic"),
    "bot/engine": ("redis", "slack_sdk", "slack_bolt", "anthropic"),
    "channels": ("redis",),
    "agents": ("redis", "fastapi"),
    # Nor of any agent framework it is used inside.
    "greenlight": (
        *("redis", "fastapi", "starlette", "uvicorn", "slack_sdk", "slack_bolt", "anthropic"),
        *("langgraph", "langchain_core", "agents", "pydantic_ai", "openai"),
    ),
}


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(
                [node.module] if node.module != "bot" else [f"bot.{a.name}" for a in node.names]
            )
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_layer_imports_only_what_lies_below_it(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources(package)
        for name in imports_of(path)
        if name.startswith(("bot", "channels", "agents", "greenlight"))
        and not name.startswith(ALLOWED[package])
        and not (package == "bot/engine" and name == "bot.engine")
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_reaches_for_no_client_it_must_not_hold(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources(package)
        for name in imports_of(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not wrong, wrong
