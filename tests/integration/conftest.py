"""Fixtures of the console's browser tests (tests/integration/console_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.console_browser import Screenshots, chromium, screenshot_dir


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(browser: Any, request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(browser, screenshot_dir(request.node.name))
