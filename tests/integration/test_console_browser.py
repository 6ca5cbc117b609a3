"""Issue 13 in a real browser: Debian's chromium driven by chromium-driver through selenium.

The agent is tests/sim's whole agent (agent/wiring.Runtime on a simulated switch, fake clock)
with the web layer listening on a real TCP port; nothing in the pages comes from the internet.
An operator logs in, sees a server shut for overage in the fleet, opens its page, classifies an
unknown outage on the ledger page; a customer logs in and asks for a re-check of its shut
server, which the ladder restores. A screenshot of each page is written under pytest's tmp dir.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from rackwarden.agent.web import ConsoleParts, WebServer
from rackwarden.agent.web.auth import parse_customers_config

from tests.sim.runner import Scenario, SimAgent

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PW = "lab password"
HASH = bcrypt.hashpw(PW.encode(), bcrypt.gensalt(4)).decode()
TOKEN = "tok-" + "A1b2C3d4E5f6G7h8I9j0" * 2
MIN_MS = 60_000

CONFIG = """version: 1
agent: {state_dir: "${state_dir}", mode: enforce, timezone: Asia/Shanghai}
notify:
  smtp: {host: mail.sim.invalid, from: noc@idc.example}
enforcement:
  rules:
    overage: {grace_s: 600, term_s: 1800}
  safety: {max_shuts_per_switch: 10}
templates:
  rental: {cap_mbps: 10, window_s: 300, credit: rental}
switches:
  sw1:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {version: "2c", community: public}
    ssh: {username: rackwarden, password: sim}
    interval_s: 60
    ports: ["Gi0/[1-4]"]
servers:
  - {id: srv-1, customer: cust-1, switch: sw1, port: Gi0/1, ips: [198.51.100.11], template: rental,
     monthly_fee_fen: 80000, contacts: [noc@cust-1.example]}
  - {id: srv-2, customer: cust-2, switch: sw1, port: Gi0/2, ips: [198.51.100.12], template: rental,
     monthly_fee_fen: 80000, contacts: [ops@cust-2.example]}
"""


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
        sc = Scenario("browser", tmp_path / "browser.yaml", "", datetime(2026, 11, 16, 2, tzinfo=UTC), CONFIG, {}, [])
        a = SimAgent(sc, tmp_path / "agent")
        await a.rt.start_core()
        a.do_traffic([{"server": "srv-1", "out_mbps": 15, "in_mbps": 2},
                      {"server": "srv-2", "out_mbps": 3, "in_mbps": 3}])
        await a.run_until(10 * MIN_MS)
        await a.rt.enforcer.suspend("srv-2", "operator", "abuse complaint 8812", "operator:li")
        await a.run_until(20 * MIN_MS)  # srv-1 shut for overage at 15m
        customers = parse_customers_config(f"customers: {{cust-1: {{basic_auth_users: {{alice: '{HASH}'}}}}}}\n")
        parts = ConsoleParts(a.rt.enforcer, a.rt.ledger, a.rt.daemon.usage, {"noc": HASH.encode()}, customers)
        s = WebServer(a.rt.enforcer, listen="127.0.0.1", port=0, token=TOKEN, console=parts)
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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    assert CHROMIUM and DRIVER, "needs Debian's chromium and chromium-driver (make deps installs them)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                # Nothing may be fetched from outside: a page that tried would show up as broken.
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _click(browser: Any, element: Any) -> None:
    """Click and wait for the next page: a form's POST and redirect are done when the old page is gone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(old))


def _login(browser: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PW)
    _click(browser, browser.find_element(By.ID, "login"))


def test_operator_and_customer_in_a_real_browser(lab: Lab, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        assert browser.save_screenshot(str(shots / f"{name}.png"))

    # The operator: fleet, the shut server's page, the ledger.
    _login(browser, f"{lab.url}/login", "noc")
    assert browser.current_url.endswith("/fleet")
    rows = {r.find_element(By.TAG_NAME, "a").text: r.find_element(By.CLASS_NAME, "state").text
            for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert rows == {"srv-1": "shut", "srv-2": "shut"}
    shot("fleet")
    _click(browser, browser.find_element(By.LINK_TEXT, "srv-1"))
    assert browser.find_element(By.ID, "state").text == "shut"
    chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.size["width"] == 720 and chart.find_elements(By.CSS_SELECTOR, "polyline.out")
    assert "R14" in browser.find_element(By.ID, "arithmetic").text
    shot("server-srv-1")
    browser.get(f"{lab.url}/ledger?lang=en")
    assert browser.find_element(By.ID, "verify").text == "verifies"
    form = browser.find_element(By.CSS_SELECTOR, "form.reclassify")
    seq = int(form.find_element(By.NAME, "seq").get_attribute("value"))
    form.find_element(By.CSS_SELECTOR, "select[name=class] option[value=customer]").click()
    form.find_element(By.NAME, "reason").send_keys("customer asked for the cut, ticket 8812")
    shot("ledger-before")
    _click(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert browser.find_elements(By.ID, "no-unknown")
    assert "→ customer" in browser.find_element(By.CLASS_NAME, "flash-ok").text
    shot("ledger-after")
    view = lab.agent.rt.ledger.outage(seq)
    assert (view.server, view.outage_class, view.reclassifications[0].by) == ("srv-2", "customer", "noc")
    _click(browser, browser.find_element(By.ID, "logout"))
    assert browser.current_url.endswith("/login")

    # The customer: its servers only, then "Fixed — please re-check".
    _login(browser, f"{lab.url}/customer/login?lang=en", "alice")
    assert browser.current_url.endswith("/customer")
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody a")]
    assert links == ["srv-1"]
    shot("customer-home")
    browser.get(f"{lab.url}/customer/server/srv-2")
    assert "not found" in browser.page_source
    browser.get(f"{lab.url}/customer/server/srv-1")
    shot("customer-server-before")
    _click(browser, browser.find_element(By.ID, "recheck"))
    assert "Re-check requested: overage" in browser.find_element(By.CLASS_NAME, "flash-ok").text
    assert browser.find_element(By.ID, "state").text == "ok"
    shot("customer-server-after")
    assert lab.agent.world.switch("sw1").port("Gi0/1").admin == "up"
    audit = lab.on_loop(_audit(lab, "srv-1"))
    assert any(a["decision"] == "restore" and a["actor"] == "customer:alice" for a in audit)
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{n}.png" for n in ("fleet", "server-srv-1", "ledger-before", "ledger-after", "customer-home",
                             "customer-server-before", "customer-server-after"))


async def _audit(lab: Lab, server: str) -> list[dict[str, Any]]:
    return list(lab.agent.rt.enforcer.store.audit_rows(server))
