"""Issue 13 in the lab, in a real browser: Debian's chromium (selenium + chromium-driver) against the
real `rackwarden run` with its console on, real snmpd, the real sshd + IOS CLI emulator, real traffic.

srv-1 sends over its cap and is shut for overage over SSH; srv-2 is suspended by an operator with
the CLI (an unknown outage until classified). An operator logs in, sees srv-1 shut in the fleet,
opens its page, classifies srv-2's outage on the ledger page; cust-1's login cannot open srv-2
and asks for a re-check of srv-1, after which the lab port forwards again and SNMP reads it up.
A screenshot of each page is written (tests/integration/console_browser.py says where),
and the re-check's answer reaches a real SMTP server (aiosmtpd) as the page shows it.
"""

from __future__ import annotations

import http.client
import re
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiosmtpd.controller import Controller
from rackwarden.agent.actions import ActionStore

from tests.integration.console_browser import Screenshots, click, login
from tests.integration.test_enforcement_lab import OVERAGE_RULE, cli, forwarding, wait_for
from tests.lab.agentrun import free_port, lab_rig, start_agent, start_switch_cli, value, write_lab_config
from tests.lab.netlab import Lab
from tests.lab.snmpd import IF_ADMIN_STATUS, start_snmpd

pytestmark = pytest.mark.lab
PW = "lab console password"
LAB_ID = 34


def _hash() -> str:
    return bcrypt.hashpw(PW.encode(), bcrypt.gensalt(4)).decode()


class Inbox:
    """A real SMTP server's mailbox (aiosmtpd): what the agent's SmtpNotifier delivered."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def _get(port: int, path: str, session: str) -> tuple[int, str]:
    """The same request the browser would make with its session cookie: for the status code."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Cookie": f"rw_session={session}"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def test_the_console_in_a_real_browser_against_the_lab_agent(tmp_path: Path, browser: Any,
                                                             screenshots: Screenshots) -> None:
    from selenium.webdriver.common.by import By

    console, customers = tmp_path / "console-web.yml", tmp_path / "customers-web.yml"
    console.write_text(f"basic_auth_users:\n  noc: '{_hash()}'\n")
    customers.write_text(f"customers:\n  cust-1:\n    basic_auth_users:\n      alice: '{_hash()}'\n")
    inbox = Inbox()
    smtp_port = free_port()
    with lab_rig() as rig:
        smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        rig.add(smtp)
        lab = rig.lab(Lab(LAB_ID, 2, replace_stale=True))
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port, api_port = free_port(), free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=2, window_s=6, metrics_port=port, api_port=api_port, mode="enforce",
                               cli=sw_cli, rules=OVERAGE_RULE, safety="{max_shuts_per_switch: 10}",
                               smtp_port=smtp_port)
        text = cfg.read_text()
        assert f"  api_port: {api_port}\n" in text
        cfg.write_text(text.replace(f"  api_port: {api_port}\n", f"  api_port: {api_port}\n"
                                    f"  console_web_config: {console}\n  customers_web_config: {customers}\n"))
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        url = f"http://127.0.0.1:{api_port}"
        p1_index = lab.if_index("p1")

        # srv-1 over its cap until the shut; srv-2 suspended by an operator meanwhile.
        heavy = lab.start_traffic(1, 15_000_000, 40)
        r = cli(cfg, "suspend", "srv-2", "--reason", "operator", "--note", "abuse complaint 8812")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for("the shut of srv-1", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                    action="shut", reason="overage", result="applied",
                                                    mode="enforce"), 40, agent)
        heavy.stop()
        assert lab.link_admin_up("p1") is False and lab.link_admin_up("p2") is False

        # The operator: fleet, the shut server's page, the ledger.
        login(browser, f"{url}/login?lang=en", "noc", PW)
        assert browser.current_url.endswith("/fleet")
        rows = {r.find_element(By.TAG_NAME, "a").text: r.find_element(By.CLASS_NAME, "state").text
                for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")}
        assert rows == {"srv-1": "shut", "srv-2": "shut"}
        screenshots("fleet")
        click(browser, By.LINK_TEXT, "srv-1")
        assert browser.find_element(By.ID, "state").text == "shut"
        chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
        # A minute of lab traffic fills one or two 5-minute buckets: a dot or a line, both class "out".
        assert chart.size["width"] == 720 and chart.find_elements(By.CSS_SELECTOR, ".out")
        arithmetic = browser.find_element(By.ID, "arithmetic").text
        assert "R14" in arithmetic, arithmetic
        assert browser.find_element(By.ID, "credit").text.startswith("¥")
        assert "drops the top" in browser.find_element(By.ID, "p95-method").text
        assert browser.find_element(By.ID, "p95-projected").text.startswith("too early")
        screenshots("server")
        browser.get(f"{url}/ledger?lang=en")
        assert browser.find_element(By.ID, "verify").text == "verifies"
        # srv-2's open outage (the suspension) is the newest of its unknown ones: the one to classify.
        forms = browser.find_elements(By.XPATH, "//tr[td/a[text()='srv-2']]//form[contains(@class, 'reclassify')]")
        form = max(forms, key=lambda f: int(f.find_element(By.NAME, "seq").get_attribute("value")))
        seq = form.find_element(By.NAME, "seq").get_attribute("value")
        form.find_element(By.CSS_SELECTOR, "select[name=class] option[value=customer]").click()
        form.find_element(By.NAME, "reason").send_keys("customer asked for the cut, ticket 8812")
        screenshots("ledger-before")
        click(browser, By.XPATH, f"//form[contains(@class, 'reclassify')][.//input[@name='seq' and "
                                 f"@value='{seq}']]//button[@type='submit']")
        assert f"#{seq} (srv-2) → customer" in browser.find_element(By.CLASS_NAME, "flash-ok").text
        assert not browser.find_elements(
            By.XPATH, f"//form[contains(@class, 'reclassify')]//input[@name='seq' and @value='{seq}']")
        classified = browser.find_element(By.XPATH, f"//tr[td[1][text()='{seq}']]").text
        assert "customer" in classified and "(noc: customer asked for the cut, ticket 8812)" in classified
        screenshots("ledger-after")
        click(browser, By.ID, "logout")
        assert "/login" in browser.current_url

        # The customer: its server only, by URL guessing too; then "Fixed — please re-check".
        login(browser, f"{url}/customer/login?lang=en", "alice", PW)
        assert browser.current_url.endswith("/customer")
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody a")] == ["srv-1"]
        screenshots("customer-home")
        browser.get(f"{url}/customer/server/srv-2")
        assert "not found" in browser.page_source
        session = browser.get_cookie("rw_session")["value"]
        other, nothing = _get(api_port, "/customer/server/srv-2", session), _get(api_port, "/customer/server/srv-9",
                                                                               session)
        assert other[0] == nothing[0] == 404 and other[1] == nothing[1]
        assert _get(api_port, "/server/srv-1", session)[0] == 404  # no operator page for a customer
        browser.get(f"{url}/customer/server/srv-1")
        screenshots("customer-server-before")
        click(browser, By.ID, "recheck")
        answer = browser.find_element(By.CLASS_NAME, "flash-ok").text
        assert "Re-check passed (overage): the port is restored" in answer, answer
        assert browser.find_element(By.ID, "state").text == "ok"
        screenshots("customer-server-after")

        # The effect on the lab: the port is up on the bridge, SNMP reads it up, traffic gets through.
        assert lab.link_admin_up("p1") is True
        wait_for("SNMP admin up", lambda: snmp.get_int(f"{IF_ADMIN_STATUS}.{p1_index}") == 1, 10, agent)
        time.sleep(0.5)
        assert forwarding(lab, 1)
        assert lab.link_admin_up("p2") is False  # the operator's suspension stays
        store = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        store.start()
        audit = store.audit_rows("srv-1")
        store.close()
        assert any(a["decision"] == "restore" and a["actor"] == "customer:alice" and
                   a["result"].startswith("APPLIED") for a in audit), audit
        # The same answer by e-mail, through the agent's SMTP notifier to a real SMTP server.
        wait_for("the re-check e-mail", lambda: any(m["X-RackWarden-Stage"] == "recheck_restored"
                                                    for m in inbox.messages), 10, agent)
        [mail] = [m for m in inbox.messages if m["X-RackWarden-Stage"] == "recheck_restored"]
        assert mail["To"] == "noc-1@cust-1.example" and "e-mailed to noc-1@cust-1.example" in answer
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "检查通过" in text and "The re-check passed" in text and "the port is restored" in text
        figures = re.search(r"Last measured: out ([\d.]+) Mbit/s, in ([\d.]+) Mbit/s, cap ([\d.]+) Mbit/s", answer)
        assert figures, answer
        for name, shown in zip(("rate_out", "rate_in", "cap"), figures.groups(), strict=True):
            assert f"{name}: {shown} Mbit/s" in text, (name, shown, text)
        transcript = (tmp_path / "cli" / "cli.log").read_text()
        assert "no shutdown" in transcript  # the restore really went to the switch over SSH
    assert screenshots.taken == [f"console-{n}.png" for n in (
        "fleet", "server", "ledger-before", "ledger-after", "customer-home", "customer-server-before",
        "customer-server-after")]
