"""The manifest asks for what the channel uses: each scope, event and the one request URL."""

from __future__ import annotations

import re
from pathlib import Path

import channels.slack
from channels.slack.channel import PATH
from channels.slack.listeners import COMMAND

MANIFEST = (Path(channels.slack.__file__).parent / "manifest.yml").read_text()


def listed(key: str) -> set[str]:
    """The items of the YAML list right under ``key:`` (comments dropped)."""
    found: set[str] = set()
    for line in MANIFEST.split(f"{key}:", 1)[1].splitlines()[1:]:
        item = re.match(r"^\s+- ([\w.:/]+)", line)
        if item is None:
            break
        found.add(item.group(1))
    return found


def test_scopes_events_command_and_urls() -> None:
    assert listed("bot") >= {
        "app_mentions:read",
        "channels:history",
        "im:history",
        "chat:write",
        "commands",
        "users:read",
        "users:read.email",
        "usergroups:read",
        "assistant:write",
    }
    assert listed("bot_events") >= {
        "app_mention",
        "message.channels",
        "message.im",
        "app_home_opened",
    }
    assert "home_tab_enabled: true" in MANIFEST
    assert f"command: {COMMAND}" in MANIFEST
    urls = set(re.findall(r"(?:url|request_url): (\S+)", MANIFEST))
    assert urls == {f"https://greenlight.example.com{PATH}"}
    assert "is_enabled: true" in MANIFEST and "socket_mode_enabled:" in MANIFEST
