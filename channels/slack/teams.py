"""Slack Connect: only people of the workspace a request was asked in may decide or answer it.

In a Slack Connect channel people of several organisations see, and can press,
the same card. Who acted is compared by their own workspace, never by the
payload's top-level team: on a click or a modal submission ``team.id`` (and an
event's ``team_id``) names the workspace whose installation of the app received
it, which is the host's whoever clicked; the actor's own workspace is
``user.team_id`` on a click or submission and ``event.user_team`` on a message
(``payloads.to_click``, ``payloads.to_message``). An actor whose workspace
cannot be told is refused: an empty team matches no request.

A request's workspace is the one its thread started in, as recorded in the
thread's Slack origin (``Origin.metadata["team"]``, the app's installation that
heard it), or, for a thread started outside Slack, the app's own workspace,
where its cards are posted. An Enterprise Grid user of another workspace of the
same organisation is refused too: ``user.team_id`` names their own workspace.
"""

from __future__ import annotations

from typing import Any

from bot.domain.errors import ForbiddenError
from bot.domain.reducer import ThreadState


class OtherTeamError(ForbiddenError):
    """Someone from another Slack workspace (Slack Connect) tried to decide or answer."""

    code = "slack_other_team"


def to_team(thread: ThreadState, home: str) -> str:
    """The workspace ``thread``'s requests were asked in; ``home`` is the app's own."""
    origin = thread.origin
    if origin is not None and origin.channel == "slack" and origin.metadata.get("team"):
        return str(origin.metadata["team"])
    return home


def to_home(context: Any) -> str:
    """The app's own workspace, from Bolt's context: the one its bot token was issued in."""
    authorized = context.get("authorize_result")
    team = getattr(authorized, "team_id", None) or context.get("team_id")
    return str(team or "")


def why_other_team(actor_team: str, thread: ThreadState, home: str, *, doing: str) -> str | None:
    """Why someone of ``actor_team`` may not ``doing`` ("decide", "answer") here; None: they may."""
    team = to_team(thread, home)
    if actor_team and actor_team == team:
        return None
    yours = f"yours is {actor_team}" if actor_team else "Slack did not say which is yours"
    # Short: a modal shows at most 150 characters of it.
    return (
        f"Only people of the Slack workspace this was asked in ({team or 'unknown'}) "
        f"can {doing} it; {yours}. Nothing changed."
    )
