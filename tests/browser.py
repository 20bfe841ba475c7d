"""Headless Chromium for the report tests: the system's browser, driven by Playwright.

Never downloads a browser. Without /usr/bin/chromium (or $EVALHARNESS_CHROMIUM) the browser
tests skip when pytest is run by hand, but fail under `make test` (which sets
EVALHARNESS_REQUIRE_BROWSER) and under CI (the `CI` variable): a skipped page test would be an
untested claim.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("EVALHARNESS_CHROMIUM", "/usr/bin/chromium"))
#: Where screenshots go: $EVALHARNESS_ARTIFACTS, or test-artifacts/ at the repository root.
ARTIFACTS = Path(
    os.environ.get("EVALHARNESS_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
#: Quiet, offline, sandbox-free flags (the sandbox needs privileges containers lack).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> Path:
    """The browser binary, or a skip (a failure under CI) naming what is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("CI") or os.environ.get("EVALHARNESS_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests need Chromium: {problem}")
        pytest.skip(f"browser tests need Chromium: {problem}")
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a playwright Browser), closed afterwards."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageErrors:
    """Console errors and uncaught exceptions a page produced."""

    console: list[str] = field(default_factory=list)
    uncaught: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return self.console + self.uncaught


def open_page(
    browser: Any, path: Path, *, width: int = 1280, height: int = 900
) -> tuple[Any, PageErrors]:
    """A new page showing the local file `path`, with its errors collected as they happen.

    Any request that is not for a file:// URL is aborted and recorded: a report must work
    without a network.
    """
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = PageErrors()
    page.on("console", lambda msg: errors.console.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.uncaught.append(str(exc)))

    def guard(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            errors.console.append(f"network request blocked: {route.request.url}")
            route.abort()

    page.route("**/*", guard)
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG test artifact under ARTIFACTS (CI keeps that folder) and say where it went."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path
