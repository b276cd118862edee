"""What a failed ``chat.postMessage`` means: try again later, or never here.

Slack answers most refusals with HTTP 200 and ``"ok": false`` plus an error
code (its documented codes for ``chat.postMessage`` and those every method may
answer). Only a few are worth retrying: rate limits, Slack's own trouble, a
workspace in migration. Every other code is an answer that retrying the same
post cannot change, for one of three reasons (``Refusal``).
"""

from __future__ import annotations

from enum import StrEnum

from slack_sdk.errors import SlackApiError

TRANSIENT = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "message_limit_exceeded",  # a free workspace's messages per period
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",  # a workspace moving into an Enterprise Grid organisation
        "org_login_required",
    }
)
"""Error codes that a later attempt may not get."""


class Refusal(StrEnum):
    """Why Slack will never take a post, and so who can do something about it."""

    CHANNEL = "channel"
    """The app may not post in this channel: the person can use another, or invite it."""
    APP = "app"
    """The app's own setup (its token, scopes, installation): whoever runs Greenlight."""
    MESSAGE = "message"
    """The message itself, or a code Greenlight does not know: a fault to look into."""


CHANNEL = frozenset(
    {
        "not_in_channel",
        "channel_not_found",  # also a private channel the app is not in
        "no_permission",
        "is_archived",
        "restricted_action",  # a workspace preference: who may post there
        "restricted_action_read_only_channel",  # an announcement channel
        "restricted_action_thread_only_channel",  # no top-level posts
        "access_denied",
        "ekm_access_denied",  # Enterprise Key Management: an admin suspended posting
    }
)
"""Error codes that say the app may not post in that channel."""

INVITE = frozenset({"not_in_channel", "channel_not_found", "no_permission"})
"""Of ``CHANNEL``, those an invitation cures."""

APP = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",  # an org-wide app not granted this workspace
        "two_factor_setup_required",
        "accesslimited",  # an IP allow-list
        "enterprise_is_restricted",
        "messages_tab_disabled",
        "deprecated_endpoint",
        "method_deprecated",
    }
)
"""Error codes that say the app itself cannot post: its token, scopes or installation."""


def to_refusal(exc: SlackApiError) -> Refusal | None:
    """Why Slack will never take this post; None when trying again may work.

    An answer with no error code (a proxy's HTML page, an empty body), a 429 or a
    5xx is worth trying again, as is a code in ``TRANSIENT``.
    """
    error = _code(exc)
    status = getattr(exc.response, "status_code", None) or getattr(exc.response, "status", 0)
    if not error or error in TRANSIENT or not isinstance(status, int):
        return None
    if status == 429 or status >= 500:
        return None
    if error in CHANNEL:
        return Refusal.CHANNEL
    if error in APP:
        return Refusal.APP
    return Refusal.MESSAGE


def error_of(exc: SlackApiError) -> str:
    """Slack's error code in ``exc``, or its type when the answer carried none."""
    return _code(exc) or type(exc).__name__


def _code(exc: SlackApiError) -> str:
    # An unreadable body leaves aiohttp's response in the error, which has no ``get``.
    read = getattr(exc.response, "get", None)
    return str((read("error") if callable(read) else None) or "")
