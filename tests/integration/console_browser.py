"""What the console's browser tests share (tests/integration/test_console_browser*.py): Debian's
chromium driven by chromium-driver through selenium, clicks that wait for the next page, the
login, and a screenshot of each page written as a test artifact.

Screenshots go to $RW_SCREENSHOT_DIR when it is set (scripts/console_screenshots.py uses that for
docs/screenshots/), otherwise to tests/artifacts/console/<test>/console-<page>.png, replaced at
each run; tests/artifacts/ carries its own `.gitignore` (`*`), so git never sees them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT_ENV = "RW_SCREENSHOT_DIR"


def chromium(profile: Path, page_load_timeout_s: float = 30.0) -> Any:
    """A headless chromium that can reach nothing but 127.0.0.1."""
    assert CHROMIUM and DRIVER, "needs Debian's chromium and chromium-driver (make deps installs them)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={profile}",
                # Nothing may be fetched from outside: a page that tried would show up as broken.
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(page_load_timeout_s)
    return driver


def click(browser: Any, by: str, value: str) -> None:
    """Click the element at (by, value) and wait for the next page: a form's POST and redirect
    are done when the old page is gone. The element is found when the page is complete and
    found again if the click meets a node that is gone: the previous navigation's redirect may
    still be replacing the document ("does not belong to the document", or stale)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for attempt in range(5):
        _wait_complete(browser)
        old = browser.find_element(By.TAG_NAME, "html")
        try:
            browser.find_element(by, value).click()
        except WebDriverException as e:
            if not _gone(e) or attempt == 4:
                raise
            time.sleep(0.2)
            continue
        WebDriverWait(browser, 20).until(lambda _, old=old: _detached(old))
        return


def _gone(e: Exception) -> bool:
    """Whether a WebDriver error says the element's document was replaced: selenium's stale
    element, or chromium's "does not belong to the document" (which selenium's staleness_of
    does not take for staleness, and raises)."""
    from selenium.common.exceptions import StaleElementReferenceException

    return isinstance(e, StaleElementReferenceException) or "does not belong to the document" in str(e)


def _detached(element: Any) -> bool:
    """staleness_of, taking both spellings of a replaced document (see _gone)."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
    except WebDriverException as e:
        if _gone(e):
            return True
        raise
    return False


def _wait_complete(browser: Any) -> None:
    for _ in range(100):
        if browser.execute_script("return document.readyState") == "complete":
            return
        time.sleep(0.05)


def login(browser: Any, url: str, user: str, password: str) -> None:
    """Log in through the form. A logout's redirect may still be replacing the document when the
    login page is asked for; an element of the old document is then gone ("does not belong to
    the document"): load the page again and retry, the login itself is what the tests check."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for attempt in range(5):
        try:
            browser.get(url)
            _wait_complete(browser)
            browser.find_element(By.ID, "user").send_keys(user)
            browser.find_element(By.ID, "password").send_keys(password)
            click(browser, By.ID, "login")
            return
        except WebDriverException:
            if attempt == 4:
                raise
            time.sleep(0.5)


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def screenshot_dir(test_name: str) -> Path:
    env = os.environ.get(SCREENSHOT_ENV)
    if env:
        return Path(env)
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # test output, never a file to commit
    return ARTIFACTS / "console" / test_name


class Screenshots:
    """Writes console-<page>.png of what the browser shows; `taken` lists them in order."""

    def __init__(self, browser: Any, directory: Path) -> None:
        self.browser, self.directory = browser, directory
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("console-*.png"):  # a page this run does not reach shows no stale picture
            old.unlink()
        self.taken: list[str] = []

    def __call__(self, page: str) -> Path:
        path = self.directory / f"console-{page}.png"
        assert self.browser.save_screenshot(str(path)), path
        self.taken.append(path.name)
        return path
