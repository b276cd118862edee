"""Browser tests: Debian's Chromium driven by Playwright, headless, against a whole
Greenlight on loopback. Without /usr/bin/chromium they are skipped, loudly; nothing is
ever downloaded (``.ci/run`` installs Debian's chromium when it is missing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.browser.chromium import CHROMIUM, chromium

SCREENSHOTS = Path(__file__).parents[2] / ".screenshots"
MISSING = (
    f"BROWSER TESTS SKIPPED: {CHROMIUM} is missing. Install Debian's chromium"
    " (apt-get install -y chromium) to run them; .ci/run does."
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=MISSING)
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if CHROMIUM.exists() else f"!!! {MISSING}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CHROMIUM.exists():
        terminalreporter.write_sep("!", MISSING, red=True, bold=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1200, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def screenshot(page: Page, name: str) -> Path:
    """Save the page as ``.screenshots/<name>.png`` (an ignored folder)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
