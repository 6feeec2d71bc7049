"""Fixtures for the console's tests in a real browser: Debian's headless Chromium driven by
Playwright, a page that fails the test on any script error or CSP violation, and screenshots
written to tests/artifacts/console/."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from tests.conftest import IN_CI

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path(os.environ.get("WARDEN_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
TIMEOUT_MS = 15_000


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run the console's browser tests; `make test` installs Chromium)")
    pytest.skip(f"SKIPPING CONSOLE BROWSER TESTS — {reason}; run `make browser` or `make test`")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the session (starting one costs about a second); each test gets its own
    context, so no cookies, storage or pages are shared. Tests using it run in the session's
    event loop: mark their module ``pytest.mark.asyncio(loop_scope="session")``."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("Playwright is not installed (it is in the dev extras: `make install`)")
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # Chromium's own sandbox needs user namespaces that containers and root often lack.
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            await launched.close()


class PageProblems:
    """Script errors and Content-Security-Policy violations seen by a page."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
            self.errors.append(f"console: {text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = await context.new_page()
    problems = PageProblems()
    opened.on("console", problems.on_console)
    opened.on("pageerror", problems.on_page_error)
    try:
        yield opened
    finally:
        await context.close()
    assert not problems.errors, problems.errors


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{re.sub(r'[^a-z0-9_-]', '_', name.lower())}.png"
    await page.screenshot(path=str(target), full_page=True)
    return target


async def sign_in(page: Page, url: str, key: str) -> None:
    await page.goto(url + "/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("navigation", name="Main").wait_for()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ARTIFACTS.is_dir():
        shots = sorted(ARTIFACTS.glob("*.png"))
        if shots:
            terminalreporter.write_line(f"console screenshots: {ARTIFACTS} ({len(shots)} files)")
