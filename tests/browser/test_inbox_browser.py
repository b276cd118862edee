"""The inbox in a real browser: a person signs in by the link emailed to them, works
through what waits for them, and sees decisions taken in Slack arrive without a reload."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from bot.storage.embedded import EmbeddedRedis
from tests.browser.conftest import screenshot
from tests.channels.email.provider import MailProvider
from tests.channels.slack.slack import Slack
from tests.harness import Harness, eventually
from tests.inbox import SCHEMA
from tests.inbox import approval as asked
from tests.signin import LINK, OPS, signin_settings
from tests.standins.slack_api import SlackAPI, SlackUser

pytestmark = pytest.mark.browser

BOB = "U0BOB0001"
FIN = "fin@example.test"
APPROVALS = "C0APPROV01"


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackAPI]:
    async with SlackAPI(users=[SlackUser(BOB, "bob", "bob@example.com")]) as stand_in:
        yield stand_in


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, slack_api: SlackAPI
) -> AsyncIterator[Harness]:
    settings = signin_settings(
        provider,
        slack_api,
        approver_groups={"deployers": [OPS, f"slack:{BOB}"], "finance": [FIN]},
    )
    async with Harness(redis_server.url, settings=settings) as h:
        yield h


async def sign_in(page: Page, h: Harness, provider: MailProvider, email: str) -> None:
    """Sign in as a person does: ask for a link on the page, open the one emailed, press
    its page's button."""
    before = len(provider.to(email))
    await page.goto(f"{h.url}/inbox")
    await expect(page).to_have_url(f"{h.url}/signin?next=%2Finbox")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_role("button", name="Email me a sign-in link").click()
    await expect(page.get_by_role("status")).to_contain_text("a link is on its way")

    async def link() -> str | None:
        sent = provider.to(email)
        found = LINK.search(sent[-1].text) if len(sent) > before else None
        return found.group(1) if found else None

    await page.goto(h.url + await eventually(link))
    await expect(page.get_by_text(f"as {email}.")).to_be_visible()
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page).to_have_url(f"{h.url}/inbox")
    await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()


async def open_request(page: Page, h: Harness, provider: MailProvider, rid: str) -> None:
    """Sign in as OPS, who may decide (or answer) every request these tests open, and go
    straight to ``rid``'s page: the start of every test of one request's page."""
    await sign_in(page, h, provider, OPS)
    await page.goto(f"{h.url}/inbox/requests/{rid}")


async def approval(h: Harness, **extra: Any) -> str:
    """An approval with a long argument: the page folds it."""
    long = {"service": "api", "replicas": 3, "note": "launch day " * 30}
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "note": {}}}
    return await asked(h, arguments=long, arguments_schema=schema, **extra)


async def status_of(h: Harness, rid: str) -> str:
    got: str = (await h.api.get(f"/approvals/{rid}")).json()["status"]
    return got


async def test_sign_in_by_link_then_approve_from_the_keyboard(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    risky = await approval(h, tool="drop-table", policy={"approvers": [OPS], "risky": True})
    rid = await approval(h)
    await sign_in(page, h, provider, OPS)
    await expect(page.locator(f'[data-request="{rid}"]')).to_be_visible()
    await screenshot(page, "inbox-waiting")
    await page.keyboard.press("?")
    await expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_be_hidden()

    await page.keyboard.press("j")
    await page.keyboard.press("j")  # the second: the soonest to expire first, then this one
    await page.keyboard.press("o")
    await expect(page).to_have_url(f"{h.url}/inbox/requests/{rid}")
    await expect(page.get_by_text("launch day launch day").first).to_be_visible()
    await screenshot(page, "inbox-request")
    await page.keyboard.press("a")
    await expect(page.get_by_role("status").filter(has_text="You approved")).to_be_visible()
    assert await status_of(h, rid) == "approved"

    await page.goto(f"{h.url}/inbox/requests/{risky}")
    await page.get_by_role("button", name="Approve…").click()
    await expect(page.get_by_role("alertdialog")).to_contain_text("is a risky tool")
    assert await status_of(h, risky) == "open"
    await page.get_by_role("button", name="Yes, approve").click()
    await expect(page.locator("#request-status")).to_contain_text("Approved")
    assert await status_of(h, risky) == "approved"


async def test_reject_with_a_reason_and_edit_after_a_field_error(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    rejected, edited = await approval(h), await approval(h)
    await sign_in(page, h, provider, OPS)

    await page.goto(f"{h.url}/inbox/requests/{rejected}")
    await page.keyboard.press("r")
    await page.keyboard.type("not during the freeze")
    await page.get_by_role("button", name="Reject").click()
    await expect(page.locator("#request-status")).to_contain_text("not during the freeze")
    got = (await h.api.get(f"/approvals/{rejected}")).json()
    assert (got["status"], got["reason"]) == ("rejected", "not during the freeze")

    await page.goto(f"{h.url}/inbox/requests/{edited}")
    await page.get_by_text("Edit the arguments, then approve").click()
    await page.get_by_label("replicas").fill("0")
    await page.get_by_role("button", name="Approve with these arguments").click()
    replicas = page.get_by_label("replicas")
    await expect(replicas).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#f-arg-replicas-error")).to_have_text(
        "0 is less than the minimum of 1"
    )
    await screenshot(page, "inbox-edit-error")
    assert await status_of(h, edited) == "open"
    await replicas.fill("6")
    await page.get_by_role("radio", name="eu").check()
    await page.get_by_role("button", name="Approve with these arguments").click()
    await expect(page.get_by_text("arguments you edited")).to_be_visible()
    got = (await h.api.get(f"/approvals/{edited}")).json()
    assert got["status"] == "approved" and got["edited"] is True
    assert (got["arguments"]["replicas"], got["arguments"]["region"]) == (6, "eu")
    await expect(page.locator(".diff, .was").first).to_be_visible()


async def test_a_typed_answer(h: Harness, provider: MailProvider, page: Page) -> None:
    schema = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "title": "Replicas"},
            "when": {"type": "string", "format": "date", "title": "When"},
            "canary": {"type": "boolean", "title": "Canary first"},
            "regions": {"type": "array", "items": {"enum": ["eu", "us"]}, "title": "Regions"},
        },
        "required": ["replicas", "when"],
    }
    body = {"question": "How should we roll out?", "answer_schema": schema, "answerers": [OPS]}
    rid = (await h.api.post("/questions", json=body)).json()["id"]
    await open_request(page, h, provider, rid)
    await page.get_by_label("Replicas").fill("4")
    await page.get_by_label("When").fill("2026-12-01")
    await page.get_by_label("Canary first").check()
    await page.get_by_label("us").check()
    await screenshot(page, "inbox-question")
    await page.get_by_role("button", name="Send the answer").click()
    await expect(page.get_by_role("status").filter(has_text="You answered")).to_be_visible()
    got = (await h.api.get(f"/questions/{rid}")).json()
    assert got["value"] == {"replicas": 4, "when": "2026-12-01", "canary": True, "regions": ["us"]}


async def test_a_decision_in_slack_appears_without_a_reload(
    h: Harness, provider: MailProvider, slack_api: SlackAPI, page: Page
) -> None:
    rid = await approval(h, slack_channel=APPROVALS)
    await h.drain()
    (card,) = [k for k, m in slack_api.messages.items() if k[0] == APPROVALS and m.get("blocks")]
    await open_request(page, h, provider, rid)
    await page.evaluate("window.notReloaded = true")
    await expect(page.locator("#request-status")).to_have_text("Open")
    await page.wait_for_function("document.readyState === 'complete'")
    await page.wait_for_timeout(300)  # the event stream connects after the page loads

    clicked = time.monotonic()
    r = await Slack(h.http, slack_api).click(card, "gl_approve", BOB)
    assert r.status_code == 200, r.text
    await expect(page.locator("#request-status")).to_contain_text("Approved", timeout=5000)
    delay = time.monotonic() - clicked
    await expect(page.locator("#live")).to_contain_text("approved by bob@example.com via slack")
    assert await page.evaluate("window.notReloaded") is True
    assert delay < 2.0, delay
    await screenshot(page, "inbox-live")


async def test_a_page_shown_after_a_refused_form_still_updates_live(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    # A form's answer (here: a rejection without a reason) is shown at the form's own
    # address, which answers POST only: the live re-read must read the request's page.
    rid = await approval(h)
    await open_request(page, h, provider, rid)
    await page.get_by_role("button", name="Reject").click()
    await expect(page.get_by_role("alert")).to_contain_text("Say why you reject it")
    await page.locator("#page[data-live-read]").wait_for(state="attached")
    await page.evaluate("window.notReloaded = true")
    body = {"decision": "approve", "by": f"slack:{BOB}"}
    decided = await h.api.post(f"/requests/{rid}/decision", json=body)
    assert decided.status_code == 200, decided.text
    await expect(page.locator("#request-status")).to_contain_text("Approved by")
    assert await page.evaluate("window.notReloaded") is True


async def test_a_vote_cast_elsewhere_keeps_what_is_being_typed_and_says_so(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    rid = await approval(h, policy={"approvers": ["group:deployers"], "min_approvals": 2})
    await open_request(page, h, provider, rid)
    await page.locator("#page[data-live-read]").wait_for(state="attached")  # stream is ready
    reason = page.locator('[data-key="reject"]')
    await reason.fill("not during the launch")  # focused, being typed in
    body = {"decision": "approve", "by": f"slack:{BOB}"}
    voted = await h.api.post(f"/requests/{rid}/decision", json=body)
    assert voted.status_code == 200 and voted.json()["status"] == "open", voted.text
    await expect(page.locator("#live")).to_contain_text(f"Request {rid} was approved by")
    await expect(reason).to_have_value("not during the launch")
    await expect(reason).to_be_focused()


async def test_a_new_request_appears_in_the_waiting_list_without_a_reload(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    await sign_in(page, h, provider, OPS)
    await expect(page.get_by_text("Nothing waits for you")).to_be_visible()
    await page.evaluate("window.notReloaded = true")
    await page.wait_for_timeout(300)  # the event stream connects after the page loads
    rid = await approval(h)
    await expect(page.locator(f'[data-request="{rid}"]')).to_be_visible(timeout=5000)
    assert await page.evaluate("window.notReloaded") is True


async def test_a_non_approver_sees_the_request_but_is_refused(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    rid = await approval(h)
    await sign_in(page, h, provider, FIN)
    await expect(page.get_by_text("Nothing waits for you")).to_be_visible()
    await page.get_by_label("All").check()
    await page.get_by_role("button", name="Filter").click()
    await page.locator(f'[data-request="{rid}"] a').click()
    await expect(page.locator("#refusal")).to_contain_text("You can't decide this request")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("alert")).to_contain_text("You can't decide this request")
    assert await status_of(h, rid) == "open"


async def test_a_post_without_the_csrf_token_is_refused(
    h: Harness, provider: MailProvider, page: Page
) -> None:
    rid = await approval(h)
    await open_request(page, h, provider, rid)
    # The page re-reads itself once its live stream is ready: tamper with it after that.
    await page.locator("#page[data-live-read]").wait_for(state="attached")
    await page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.remove())")
    async with page.expect_response(f"{h.url}/inbox/requests/{rid}/approve") as answer:
        await page.get_by_role("button", name="Approve").click()
    assert (await answer.value).status == 403
    assert await status_of(h, rid) == "open"


async def test_the_audit_export_matches_the_decisions_taken(
    h: Harness, provider: MailProvider, page: Page, tmp_path: Path
) -> None:
    approved, rejected = await approval(h), await approval(h, tool="restart")
    await sign_in(page, h, provider, OPS)
    await page.goto(f"{h.url}/inbox/requests/{approved}")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_text("You approved")).to_be_visible()
    await page.goto(f"{h.url}/inbox/requests/{rejected}")
    await page.get_by_label("Reason for rejecting").fill("wrong service")
    await page.get_by_role("button", name="Reject").click()
    await expect(page.get_by_text("You rejected")).to_be_visible()

    await page.goto(f"{h.url}/inbox/audit")
    await expect(page.locator("table.audit tbody tr")).to_have_count(2)
    await screenshot(page, "inbox-audit")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="CSV").click()
    path = tmp_path / "audit.csv"
    await (await download.value).save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["request"], r["outcome"], r["by_id"], r["reason"]) for r in rows] == [
        (rejected, "reject", f"web:{OPS}", "wrong service"),
        (approved, "approve", f"web:{OPS}", ""),
    ]
    decided = [(await h.api.get(f"/approvals/{rid}")).json() for rid in (rejected, approved)]
    assert [r["args_hash"] for r in rows] == [d["args_hash"] for d in decided]


async def test_usable_on_a_phone(
    h: Harness, provider: MailProvider, browser: Browser, tmp_path: Path
) -> None:
    rid = await approval(h)
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = await phone.new_page()
    try:
        await open_request(page, h, provider, rid)
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page scrolls sideways: {wide} px wide"
        approve = page.get_by_role("button", name="Approve", exact=True)
        box = await approve.bounding_box()
        assert box is not None and box["height"] >= 44  # a finger's target
        await screenshot(page, "inbox-phone")
        await approve.tap()
        await expect(page.get_by_text("You approved")).to_be_visible()
    finally:
        await phone.close()
