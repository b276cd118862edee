"""Who is who: actors from users.info, mentions for approvers, one look-up per burst."""

from __future__ import annotations

import asyncio

import pytest

from channels.slack.channel import to_client
from channels.slack.people import People, UnknownUserError, to_group_id, to_user_id
from tests.standins.slack_api import SlackAPI, SlackUser


async def test_a_burst_of_clicks_by_one_person_looks_them_up_once() -> None:
    async with SlackAPI(users=[SlackUser("U0BOB0001", "bob", "Bob@Example.com")]) as api:
        people = People(to_client(api.bot_token, api.url, patient=False))
        actors = await asyncio.gather(*(people.actor("U0BOB0001") for _ in range(20)))
        assert {a.email for a in actors} == {"bob@example.com"}
        assert len(api.calls_to("users.info")) == 1
        assert await people.mention("bob@example.com") == "<@U0BOB0001>"
        assert await people.mention("nobody@example.com") == "nobody@example.com"
        assert await people.mention("slack:S0OPS0001") == "<!subteam^S0OPS0001>"
        unknown = await people.actor("U0GHOST01", strict=False)  # users.info fails: id only
        assert (unknown.id, unknown.email) == ("U0GHOST01", None)
        with pytest.raises(UnknownUserError):  # to decide, Slack must say who it is
            await people.actor("U0GHOST01")
    assert to_user_id("slack:U0BOB0001") == "U0BOB0001" and to_user_id("bob") is None
    assert to_group_id("subteam:S0OPS0001") == "S0OPS0001" and to_group_id("U0BOB0001") is None
