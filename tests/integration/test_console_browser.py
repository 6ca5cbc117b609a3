"""Issue 13 in a real browser: Debian's chromium driven by chromium-driver through selenium.

The agent is tests/sim's whole agent (agent/wiring.Runtime on a simulated switch, fake clock)
in the world of tests/unit/test_web_console.py, with the web layer listening on a real TCP
port; nothing in the pages comes from the internet. An operator logs in, sees a server shut for
overage in the fleet, opens its page, classifies an unknown outage on the ledger page; a
customer logs in and asks for a re-check of its shut server, which the ladder restores, and the
answer on the page is the one e-mailed to the customer. A screenshot of each page is written
(tests/integration/console_browser.py says where; scripts/console_screenshots.py copies the
fleet and server pages into docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.web import WebServer

from tests.integration.console_browser import Screenshots, click, login
from tests.sim.runner import SimAgent
from tests.unit.test_web_console import PW, TOKEN, console_parts, start_world


@dataclass
class Lab:
    agent: SimAgent
    loop: asyncio.AbstractEventLoop
    url: str

    def on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    agent: SimAgent | None = None
    server: WebServer | None = None

    async def up() -> tuple[SimAgent, WebServer]:
        a = await start_world(tmp_path / "agent", history_h=8)  # charts with a history to look at
        s = WebServer(a.rt.enforcer, listen="127.0.0.1", port=0, token=TOKEN, console=console_parts(a))
        await s.start()
        return a, s

    (tmp_path / "agent").mkdir()
    try:
        agent, server = asyncio.run_coroutine_threadsafe(up(), loop).result(timeout=60)
        yield Lab(agent, loop, server.url)
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        if agent is not None:
            asyncio.run_coroutine_threadsafe(agent.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def test_operator_and_customer_in_a_real_browser(lab: Lab, browser: Any, screenshots: Screenshots) -> None:
    from selenium.webdriver.common.by import By

    # The operator: fleet, the shut server's page, the ledger.
    login(browser, f"{lab.url}/login?lang=en", "noc", PW)
    assert browser.current_url.endswith("/fleet")
    rows = {r.find_element(By.TAG_NAME, "a").text: r.find_element(By.CLASS_NAME, "state").text
            for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert rows == {"srv-1": "shut", "srv-2": "shut", "srv-3": "ok"}
    screenshots("fleet")
    click(browser, By.LINK_TEXT, "srv-1")
    assert browser.find_element(By.ID, "state").text == "shut"
    chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.size["width"] == 720 and chart.find_elements(By.CSS_SELECTOR, "polyline.out")
    assert "R14" in browser.find_element(By.ID, "arithmetic").text
    screenshots("server")
    browser.get(f"{lab.url}/ledger?lang=en")
    assert browser.find_element(By.ID, "verify").text == "verifies"
    form = browser.find_element(By.CSS_SELECTOR, "form.reclassify")
    seq = int(form.find_element(By.NAME, "seq").get_attribute("value"))
    form.find_element(By.CSS_SELECTOR, "select[name=class] option[value=customer]").click()
    form.find_element(By.NAME, "reason").send_keys("customer asked for the cut, ticket 8812")
    screenshots("ledger-before")
    click(browser, By.CSS_SELECTOR, "form.reclassify button[type=submit]")
    assert browser.find_elements(By.ID, "no-unknown")
    assert "→ customer" in browser.find_element(By.CLASS_NAME, "flash-ok").text
    screenshots("ledger-after")
    view = lab.agent.rt.ledger.outage(seq)
    assert (view.server, view.outage_class, view.reclassifications[0].by) == ("srv-2", "customer", "noc")
    click(browser, By.ID, "logout")
    assert "/login" in browser.current_url

    # The customer: its servers only, then "Fixed — please re-check".
    login(browser, f"{lab.url}/customer/login?lang=en", "alice", PW)
    assert browser.current_url.endswith("/customer")
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody a")]
    assert links == ["srv-1", "srv-3"]
    screenshots("customer-home")
    browser.get(f"{lab.url}/customer/server/srv-2")
    assert "not found" in browser.page_source
    browser.get(f"{lab.url}/customer/server/srv-1")
    screenshots("customer-server-before")
    click(browser, By.ID, "recheck")
    answer = browser.find_element(By.CLASS_NAME, "flash-ok").text
    assert "Re-check passed (overage): the port is restored" in answer, answer
    assert browser.find_element(By.ID, "state").text == "ok"
    screenshots("customer-server-after")
    assert lab.agent.world.switch("sw1").port("Gi0/1").admin == "up"
    audit = lab.on_loop(_audit(lab, "srv-1"))
    assert any(a["decision"] == "restore" and a["actor"] == "customer:alice" for a in audit)
    # The same answer went to the customer's contact through the agent's notifier.
    [mail] = [m for m in lab.agent.mail.sent if m.notice.stage == "recheck_restored"]
    assert mail.notice.to == ("noc@cust-1.example",) and mail.delivery.delivered
    assert mail.notice.summary in answer and "e-mailed to noc@cust-1.example" in answer
    assert screenshots.taken == [f"console-{n}.png" for n in (
        "fleet", "server", "ledger-before", "ledger-after", "customer-home", "customer-server-before",
        "customer-server-after")]
    assert all((screenshots.directory / n).stat().st_size > 0 for n in screenshots.taken)


async def _audit(lab: Lab, server: str) -> list[dict[str, Any]]:
    return list(lab.agent.rt.enforcer.store.audit_rows(server))
