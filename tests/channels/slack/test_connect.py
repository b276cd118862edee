"""Slack Connect: people of another organisation's workspace, in a shared channel, decide nothing.

In a shared channel the payload's ``team.id`` stays the host's (the app's
installation) whoever clicks; the clicker's own workspace is ``user.team_id``,
and a message's is ``event.user_team``. The other workspace's user here has
Carol's email, so without the workspace check they would pass for Carol, an
approver named by email.
"""

from __future__ import annotations

from typing import Any

from channels.slack.payloads import to_click, to_message
from tests.channels.slack.slack import TEAM, sample

OTHER = "T0VENDOR01"


def from_other_team(payload: dict[str, Any]) -> dict[str, Any]:
    """A click or submission as Slack sends it when the other workspace's user acts."""
    payload["user"]["team_id"] = OTHER
    assert payload["team"]["id"] == TEAM  # the host's, as in a shared channel
    return payload


def test_the_actors_own_workspace_is_read_never_the_hosts() -> None:
    click = to_click(from_other_team(sample("block_actions")))
    assert (click.team, click.user_team) == (TEAM, OTHER)
    missing = sample("block_actions")
    del missing["user"]["team_id"]
    assert to_click(missing).user_team == ""  # unknown: matches no request

    connect = sample("message_in_thread")
    connect.update(team_id=OTHER, is_ext_shared_channel=True)
    connect["event"].update(team=TEAM, user_team=OTHER)
    message = to_message(connect, "U0BOT0001")
    assert message is not None and message.user_team == OTHER
    assert message.team == TEAM  # the installation's (authorizations): the conversation key
    same = to_message(sample("message_in_thread"), "U0BOT0001")
    assert same is not None and same.user_team == same.team == TEAM
