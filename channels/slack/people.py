"""Who is who in Slack: the app itself, actors for clicks and messages, mentions for approvers.

Policies name approvers as Slack user ids (``U123``, ``slack:U123``), user
group ids (``S123``, ``slack:S123``) or email addresses. A click becomes an
``Actor`` whose names cover all three: the user id, the email from
``users.info`` and the approver groups the user belongs to. Look-ups are
cached in the process for ``ttl`` seconds. On the web process a look-up has a
time budget: Slack wants its answer within 3 seconds, however slow ``users.info`` is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import GreenlightError
from bot.domain.events import Actor

log = logging.getLogger(__name__)

T = TypeVar("T")
_USER = re.compile(r"^(?:slack:)?([UW][A-Z0-9]{2,})$")
FAILED = (SlackApiError, aiohttp.ClientError, OSError, TimeoutError)
"""What a Web API call raises when it failed: refused, unreachable, too slow."""
_GROUP = re.compile(r"^(?:slack:|subteam:)?(S[A-Z0-9]{2,})$")


def to_user_id(identity: str) -> str | None:
    """``U123`` or ``slack:U123`` → ``U123``; anything else → None."""
    m = _USER.match(identity)
    return m.group(1) if m else None


def to_group_id(identity: str) -> str | None:
    """``S123``, ``slack:S123`` or ``subteam:S123`` → ``S123``; anything else → None."""
    m = _GROUP.match(identity)
    return m.group(1) if m else None


def escape(text: str) -> str:
    """Escape text for mrkdwn, so nothing in it can ping ``<!channel>`` or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Me:
    """The app in Slack, as ``auth.test`` tells it for the bot token."""

    team: str
    """The app's own workspace: where a thread not started in Slack asks."""
    user: str
    """The bot user's id: events by it are the app's own."""
    bot: str
    """The bot's id: bot messages carry it instead of a user."""
    name: str = ""

    @staticmethod
    def from_auth_test(answer: Any) -> Me:
        return Me(
            team=str(answer.get("team_id") or ""),
            user=str(answer.get("user_id") or ""),
            bot=str(answer.get("bot_id") or ""),
            name=str(answer.get("user") or ""),
        )


class UnknownUserError(GreenlightError):
    """Slack did not say who a user is (``users.info`` failed), so they cannot decide now."""

    code = "slack_user_unknown"


class _Cache(Generic[T]):
    """Values by key for ``ttl`` seconds; concurrent misses of one key share one load.

    A load runs in its own task, so a caller that gives up (its time budget ran
    out) leaves it running: its answer is cached for the next caller.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[float, T]] = {}
        self._loading: dict[str, asyncio.Task[T]] = {}

    async def get(
        self,
        key: str,
        load: Callable[[], Awaitable[tuple[T, bool]]],
        deadline: float | None = None,
    ) -> T:
        """The cached value, or ``load()``'s; a load that says ``False`` is not kept.

        ``deadline`` (event loop time): when to stop waiting for a load, with a
        ``TimeoutError``; a hit never waits, so it pays for no timer.
        """
        hit = self._items.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        task = self._loading.get(key)
        if task is None:  # a burst of clicks by one person makes one API call
            task = asyncio.get_running_loop().create_task(self._load(key, load))
            task.add_done_callback(_retrieved)
            self._loading[key] = task
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(task)

    async def _load(self, key: str, load: Callable[[], Awaitable[tuple[T, bool]]]) -> T:
        try:
            value, keep = await load()
        finally:
            del self._loading[key]
        if keep:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, value)
        return value


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a load's failure seen: whoever still waits re-raises it; nobody may be left."""
    if not task.cancelled():
        task.exception()


class People:
    """Resolves Slack users, emails and user groups, with a cache.

    Args:
        client: a Web API client with ``users:read``, ``users:read.email``
            and ``usergroups:read``.
        ttl: seconds a look-up is kept.
        budget: seconds ``actor`` may wait for Slack in all; None waits for the client.
    """

    def __init__(
        self, client: AsyncWebClient, *, ttl: float = 600.0, budget: float | None = None
    ) -> None:
        self.client = client
        self.budget = budget
        self._users: _Cache[dict[str, Any]] = _Cache(ttl)
        self._emails: _Cache[str | None] = _Cache(ttl)
        self._groups: _Cache[frozenset[str]] = _Cache(ttl)
        self._me: _Cache[Me] = _Cache(float("inf"))

    async def me(self, client: AsyncWebClient | None = None) -> Me:
        """Who the app is (``auth.test``, asked once and kept for the process's life).

        Args:
            client: ask with this client, not ``self.client`` (start-up waits out rate
                limits; an event may not).

        Raises:
            SlackApiError: Slack refused the token.
            aiohttp.ClientError, OSError, TimeoutError: Slack could not be reached;
                the next call asks again.
        """
        return await self._me.get("me", partial(self._auth_test, client or self.client))

    async def _auth_test(self, client: AsyncWebClient) -> tuple[Me, bool]:
        return Me.from_auth_test(await client.auth_test()), True

    async def actor(
        self, user_id: str, approvers: Sequence[str] = (), *, strict: bool = True
    ) -> Actor:
        """The actor for a Slack user, with the approver groups of ``approvers`` they are in.

        Raises:
            UnknownUserError: ``users.info`` failed or took longer than the budget, and
                ``strict``: without the email, a requester known by email could approve
                their own request. Not strict, the actor is then known by id only.
        """
        budget = self.budget
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        try:
            user, groups = await self._look_up(user_id, approvers, deadline)
        except TimeoutError:
            log.warning("slack: looking up %s took more than %ss", user_id, self.budget)
            user, groups = {}, []
        if strict and not user:
            raise UnknownUserError(
                "Slack did not tell me who you are just now, so nothing changed; try again."
            )
        profile = user.get("profile") or {}
        # No display name: anyone can set theirs to "api:dave" or an approver's email,
        # and Actor.names() would let it match a policy. Slack shows <@id> anyway.
        return Actor(
            channel="slack",
            id=user_id,
            email=str(profile["email"]).lower() if profile.get("email") else None,
            groups=tuple(groups),
        )

    async def _look_up(
        self, user_id: str, approvers: Sequence[str], deadline: float | None
    ) -> tuple[dict[str, Any], list[str]]:
        """The user's profile (empty when Slack failed) and which groups of ``approvers``."""
        user = await self._users.get(user_id, partial(self._user, user_id), deadline)
        groups = []
        for identity in approvers:
            if (group := to_group_id(identity)) is None:
                continue
            members = await self._groups.get(group, partial(self._members, group), deadline)
            if user_id in members:
                groups.append(group)
        return user, groups

    async def mention(self, identity: str) -> str:
        """How to show an approver in a message: ``<@U1>``, ``<!subteam^S1>``, or as written."""
        if user := to_user_id(identity):
            return f"<@{user}>"
        if group := to_group_id(identity):
            return f"<!subteam^{group}>"
        if "@" in identity:
            email = identity.removeprefix("email:")
            found = await self.user_of(email)
            return f"<@{found}>" if found else escape(email)
        return escape(identity)

    async def user_of(self, email: str) -> str | None:
        """The id of the Slack user with this address (``users.lookupByEmail``, cached);
        None when nobody has it or Slack failed."""
        return await self._emails.get(email.lower(), partial(self._by_email, email))

    async def user_ids(self, identities: Iterable[str]) -> set[str]:
        """The Slack users ``identities`` name: ids as they are, emails looked up, groups'
        members; identities of no Slack user name nobody."""
        found: set[str] = set()
        for identity in identities:
            if user := to_user_id(identity):
                found.add(user)
            elif group := to_group_id(identity):
                found |= await self._groups.get(group, partial(self._members, group))
            elif "@" in identity:
                by_email = await self.user_of(identity.removeprefix("email:"))
                found |= {by_email} if by_email else set()
        return found

    # Failed look-ups are not cached: the next click asks again.

    async def _user(self, user_id: str) -> tuple[dict[str, Any], bool]:
        try:
            answer = await self.client.users_info(user=user_id)
        except FAILED as exc:
            log.warning("slack: users.info %s failed: %r", user_id, exc)
            return {}, False
        user = answer.get("user")
        return (dict(user) if isinstance(user, dict) else {}), True

    async def _by_email(self, email: str) -> tuple[str | None, bool]:
        try:
            answer = await self.client.users_lookupByEmail(email=email)
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.info("slack: no user for %s: %s", email, error)
            return None, error == "users_not_found"
        except FAILED as exc:
            log.warning("slack: users.lookupByEmail failed: %r", exc)
            return None, False
        user = answer.get("user") or {}
        return (str(user["id"]) if user.get("id") else None), True

    async def _members(self, group: str) -> tuple[frozenset[str], bool]:
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
        except FAILED as exc:
            log.warning("slack: usergroups.users.list %s failed: %r", group, exc)
            return frozenset(), False
        return frozenset(str(u) for u in answer.get("users") or ()), True
