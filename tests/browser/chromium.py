"""Debian's Chromium, launched headless by Playwright for the browser tests and
``bench.inbox``. Nothing is ever downloaded: ``.ci/run`` installs the package."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: without these Chromium keeps trying to reach Google.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Chromium with a fresh profile (Playwright's own temporary one, under a fresh home)."""
    profile = Path(tempfile.mkdtemp(prefix="greenlight-chromium-"))
    try:
        async with async_playwright() as pw:
            launched = await pw.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=ARGS,
                env={"HOME": str(profile), "XDG_CONFIG_HOME": str(profile)},
            )
            try:
                yield launched
            finally:
                await launched.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
