"""Issue 13: the operator console and the customer page on the whole agent (tests/sim's SimAgent:
agent/wiring.Runtime on a simulated switch with a fake clock), through aiohttp's test client.

srv-1 (cust-1) sends 15 Mbit/s on a 10 Mbit/s contract and is shut for overage at 15m; srv-2
(cust-2) is suspended by an operator at 10m (an unknown outage); srv-3 (cust-1) is quiet.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from rackwarden.agent.web import ConsoleParts, build_app
from rackwarden.agent.web.auth import (
    LOGIN_MAX_FAILURES,
    LOGIN_WINDOW_S,
    CustomersConfigError,
    load_customers_config,
    parse_customers_config,
)
from rackwarden.agent.web.i18n import yuan

from tests.sim.runner import Scenario, SimAgent

TOKEN = "tok-" + "A1b2C3d4E5f6G7h8I9j0" * 2
PW = "correct horse"
HASH = bcrypt.hashpw(PW.encode(), bcrypt.gensalt(4)).decode()
START = datetime(2026, 11, 16, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
MIN_MS = 60_000

CONFIG = """version: 1
agent: {state_dir: "${state_dir}", mode: enforce, timezone: Asia/Shanghai}
notify:
  smtp: {host: mail.sim.invalid, from: noc@idc.example}
enforcement:
  rules:
    overage: {grace_s: 600, term_s: 1800, restrict: {overage: shut}}
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
  - {id: srv-3, customer: cust-1, switch: sw1, port: Gi0/3, ips: [198.51.100.13], template: rental,
     monthly_fee_fen: 80000, contacts: [noc@cust-1.example]}
"""

CUSTOMERS = f"""customers:
  cust-1:
    basic_auth_users: {{alice: '{HASH}'}}
  cust-2:
    basic_auth_users: {{bob: '{HASH}'}}
"""


class World:
    def __init__(self, agent: SimAgent, client: TestClient[Any, Any]):
        self.agent, self.client = agent, client

    @property
    def enforcer(self) -> Any:
        return self.agent.rt.enforcer

    def phase(self, server: str, reason: str) -> str:
        r = self.enforcer.rungs.get((server, reason))
        return "idle" if r is None else str(r.phase)

    async def page(self, path: str) -> tuple[int, str]:
        r = await self.client.get(path, allow_redirects=False)
        return r.status, await r.text()

    async def login(self, user: str, password: str = PW, customer: bool = False) -> int:
        path = "/customer/login" if customer else "/login"
        _, text = await self.page(path)
        r = await self.client.post(path, data={"csrf": csrf(text), "user": user, "password": password},
                                   allow_redirects=False)
        return r.status

    async def csrf_of(self, path: str) -> str:
        status, text = await self.page(path)
        assert status == 200, (path, status)
        return csrf(text)


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


# An evening's curve for the history before the overage (Mbit/s out, hour by hour), all under the cap.
HISTORY_MBPS = (2.0, 3.5, 5.0, 6.5, 8.0, 7.0, 5.5, 4.0)


async def start_world(directory: Path, history_h: int = 0) -> SimAgent:
    """The agent of these tests at 20m: srv-1 shut for overage, srv-2 suspended by an operator
    (tests/integration/test_console_browser.py drives the same world in a browser). With
    `history_h`, that many hours of traffic under the cap come first (the clock starts earlier,
    so the overage happens at the same time of day): charts worth a screenshot."""
    sc = Scenario("web", directory / "web.yaml", "", START - timedelta(hours=history_h), CONFIG, {}, [])
    agent = SimAgent(sc, directory)
    t0 = history_h * 60 * MIN_MS
    try:
        await agent.rt.start_core()
        for h in range(history_h):
            rate = HISTORY_MBPS[h % len(HISTORY_MBPS)]
            agent.do_traffic([{"server": "srv-1", "out_mbps": rate, "in_mbps": rate / 4},
                              {"server": "srv-2", "out_mbps": rate / 2, "in_mbps": 1},
                              {"server": "srv-3", "out_mbps": 1 + rate / 4, "in_mbps": 0.5}])
            await agent.run_until((h + 1) * 60 * MIN_MS)
        agent.do_traffic([{"server": "srv-1", "out_mbps": 15, "in_mbps": 2},
                          {"server": "srv-2", "out_mbps": 3, "in_mbps": 3},
                          {"server": "srv-3", "out_mbps": 2, "in_mbps": 1}])
        await agent.run_until(t0 + 10 * MIN_MS)
        await agent.rt.enforcer.suspend("srv-2", "operator", "abuse complaint 8812", "operator:li")
        await agent.run_until(t0 + 20 * MIN_MS)
    except BaseException:
        await agent.close()
        raise
    return agent


def console_parts(agent: SimAgent, customers: bool = True) -> ConsoleParts:
    return ConsoleParts(agent.rt.enforcer, agent.rt.ledger, agent.rt.daemon.usage, {"noc": HASH.encode()},
                        parse_customers_config(CUSTOMERS) if customers else None)


def run(tmp_path: Path, body: Callable[[World], Awaitable[None]], *, customers: bool = True,
        parts_hook: Callable[[ConsoleParts], ConsoleParts] | None = None) -> None:
    async def main() -> None:
        agent = await start_world(tmp_path)
        try:
            parts = console_parts(agent, customers)
            if parts_hook is not None:
                parts = parts_hook(parts)
            async with TestClient(TestServer(build_app(agent.rt.enforcer, TOKEN, parts))) as client:
                await body(World(agent, client))
        finally:
            await agent.close()

    asyncio.run(main())


# --- operators ------------------------------------------------------------------------------------

def test_the_fleet_needs_an_operator_login_and_shows_every_server(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        status, _ = await w.page("/fleet")
        assert status == 303  # to the login page
        assert await w.login("noc", "wrong") == 401
        assert await w.login("nobody") == 401
        assert await w.login("noc") == 303
        status, html = await w.page("/fleet")
        assert status == 200 and "服务器总览" in html  # zh-CN by default
        rows = dict(re.findall(r'<a href="/server/(srv-\d)">.*?<span class="state">(\w+)</span>', html, re.S))
        assert rows == {"srv-1": "shut", "srv-2": "shut", "srv-3": "ok"}
        # The ladder, its term in the contract's timezone (shut 02:15 UTC = 10:15 +08:00, term 30 min).
        assert "overage: shut" in html and "2026-11-16 10:45:00" in html
        assert html.count("<svg") == 3  # a sparkline per server, drawn on the server
        _, shut = await w.page("/fleet?state=shut&lang=en")
        assert "Fleet" in shut and "/server/srv-3" not in shut and "/server/srv-1" in shut
        _, one = await w.page("/fleet?customer=cust-2")
        assert re.findall(r'href="/server/(srv-\d)"', one) == ["srv-2"]
        _, none = await w.page("/fleet?switch=sw9")
        assert "/server/" not in none

    run(tmp_path, body)


def test_the_server_page_shows_the_rate_actions_and_the_credit_arithmetic(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("noc")
        status, html = await w.page("/server/srv-1?lang=en")
        assert status == 200
        svg = re.search(r'<svg[^>]*class="chart" width="720".*?</svg>', html, re.S)
        assert svg and 'class="out"' in svg[0] and 'class="cap"' in svg[0]
        assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert re.search(r'id="p95">15\.00 Mbit/s', html)  # the usage buckets' 95th percentile so far
        assert "<td>shut</td><td>overage</td><td>enforce</td><td>APPLIED</td>" in html
        assert "noticed → shut" in html  # the audit record of the shut
        assert 'id="credit">¥0.00' in html and "R14" in html  # the engine's reason text
        status, _ = await w.page("/server/srv-9")
        assert status == 404

    run(tmp_path, body)


def test_every_operator_form_needs_the_csrf_token_and_is_audited_with_the_operator(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("noc")
        r = await w.client.post("/server/srv-3/suspend", data={"reason": "operator", "note": "x"},
                                allow_redirects=False)
        assert r.status == 403
        r = await w.client.post("/server/srv-3/suspend", data={"reason": "operator", "note": "x", "csrf": "guess"},
                                allow_redirects=False)
        assert r.status == 403
        assert w.phase("srv-3", "operator") == "idle"
        token = await w.csrf_of("/server/srv-3")
        r = await w.client.post("/server/srv-3/suspend", data={"reason": "operator", "note": "ticket 1",
                                                               "csrf": token}, allow_redirects=False)
        assert r.status == 303
        assert w.phase("srv-3", "operator") == "shut"
        assert w.agent.world.switch("sw1").port("Gi0/3").admin == "down"
        audit = w.enforcer.store.audit_rows("srv-3")
        assert any(a["decision"] == "shut" and a["actor"] == "operator:noc" for a in audit)

    run(tmp_path, body)


def test_an_unknown_outage_is_classified_from_the_ledger_page_as_the_cli_does(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("noc")
        status, html = await w.page("/ledger")
        assert status == 200 and 'id="verify">完好' in html
        [seq] = re.findall(r'name="seq" value="(\d+)"', html)  # srv-2's operator suspension, unknown
        r = await w.client.post("/ledger/reclassify", data={"csrf": csrf(html), "seq": seq, "class": "customer",
                                                            "cause": "customer_request", "reason": "asked by phone"},
                                allow_redirects=False)
        assert r.status == 303
        view = w.agent.rt.ledger.outage(int(seq))
        assert (view.server, view.outage_class, view.cause) == ("srv-2", "customer", "customer_request")
        [change] = view.reclassifications
        assert (change.by, change.reason) == ("noc", "asked by phone")
        assert w.agent.rt.ledger.verify().ok
        _, after = await w.page("/ledger")
        assert 'id="no-unknown"' in after and "seq " in after  # the flash names the new entry
        # A reclassification without a reason is refused by the store, shown, and writes nothing.
        head = w.agent.rt.ledger.head()
        await w.client.post("/ledger/reclassify", data={"csrf": csrf(after), "seq": seq, "class": "provider",
                                                        "reason": " "})
        assert w.agent.rt.ledger.head() == head

    run(tmp_path, body)


def test_a_maintenance_window_is_declared_from_the_ledger_page_in_contract_time(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("noc")
        token = await w.csrf_of("/ledger")
        form = {"csrf": token, "kind": "planned", "start": "2026-11-20T02:00", "end": "2026-11-20T04:00",
                "notified_at": "2026-11-16T10:10", "servers": "srv-1, srv-3", "reason": "line card swap"}
        r = await w.client.post("/ledger/maintenance", data=form, allow_redirects=False)
        assert r.status == 303
        [v] = w.agent.rt.ledger.maintenance_windows()
        # Entered in Asia/Shanghai (the form says so), stored as instants.
        assert v.window.start == datetime(2026, 11, 19, 18, 0, tzinfo=UTC)
        assert v.window.notified_at == datetime(2026, 11, 16, 2, 10, tzinfo=UTC)
        assert (v.window.servers, v.by, v.reason) == (("srv-1", "srv-3"), "noc", "line card swap")
        _, html = await w.page("/ledger")
        assert "2026-11-20 02:00:00" in html and "line card swap" in html
        # A server that is not in the inventory, or an end before the start: refused, nothing written.
        head = w.agent.rt.ledger.head()
        for bad in ({"servers": "srv-9"}, {"end": "2026-11-20T01:00"}, {"start": "soon"}):
            await w.client.post("/ledger/maintenance", data=form | {"csrf": csrf(html)} | bad)
            assert w.agent.rt.ledger.head() == head, bad

    run(tmp_path, body)


def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        for _ in range(LOGIN_MAX_FAILURES):
            assert await w.login("noc", "guess") == 401
        # Locked: even the right password is refused until the window has passed.
        assert await w.login("noc") == 429
        assert await w.login("alice", customer=True) == 429  # the same address, another door
        w.agent.clock.advance(LOGIN_WINDOW_S + 1)
        assert await w.login("noc") == 303

    run(tmp_path, body)


# --- customers ------------------------------------------------------------------------------------

def test_a_customer_sees_and_acts_on_only_its_own_servers(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        assert await w.login("alice", customer=True) == 303
        status, home = await w.page("/customer")
        assert status == 200
        assert sorted(set(re.findall(r'/customer/server/(srv-\d)', home))) == ["srv-1", "srv-3"]
        assert "srv-2" not in home and "cust-2" not in home
        # URL guessing: another customer's server answers exactly as a server that does not exist.
        other = await w.client.get("/customer/server/srv-2")
        nothing = await w.client.get("/customer/server/srv-999")
        assert other.status == nothing.status == 404
        assert await other.text() == await nothing.text()
        token = csrf(home)
        r = await w.client.post("/customer/server/srv-2/recheck", data={"csrf": token}, allow_redirects=False)
        assert r.status == 404
        assert w.phase("srv-2", "operator") == "shut"
        # Operator pages and the API are closed to a customer session.
        for path in ("/fleet", "/server/srv-2", "/ledger"):
            status, _ = await w.page(path)
            assert status == 404, path
        r = await w.client.post("/server/srv-2/restore", data={"csrf": token}, allow_redirects=False)
        assert r.status == 404 and w.phase("srv-2", "operator") == "shut"
        r = await w.client.get("/v1/status")
        assert r.status == 401

    run(tmp_path, body)


def test_fixed_please_recheck_is_a_restore_request_through_the_ladder(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("alice", customer=True)
        status, html = await w.page("/customer/server/srv-1?lang=en")
        assert status == 200 and 'id="recheck"' in html
        assert "R1" in html  # the restriction's rule and evidence summary
        r = await w.client.post("/customer/server/srv-1/recheck", data={"csrf": csrf(html)}, allow_redirects=False)
        assert r.status == 303
        assert w.phase("srv-1", "overage") == "restored"
        assert w.agent.world.switch("sw1").port("Gi0/1").admin == "up"
        assert [a.action for a in w.enforcer.store.actions("srv-1")] == ["shut", "restore"]
        audit = w.enforcer.store.audit_rows("srv-1")
        assert any(a["decision"] == "restore" and a["actor"] == "customer:alice" for a in audit)
        _, after = await w.page("/customer/server/srv-1")
        assert "Re-check passed (overage)" in after  # the answer, on the page and by e-mail (test_web_recheck)

    run(tmp_path, body)


def test_a_customer_cannot_lift_an_operator_suspension_of_its_own_server(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.enforcer.suspend("srv-3", "nonpayment", "invoice 42", "billing")
        await w.login("alice", customer=True)
        html = (await w.page("/customer/server/srv-3"))[1]
        await w.client.post("/customer/server/srv-3/recheck", data={"csrf": csrf(html)})
        assert w.phase("srv-3", "nonpayment") == "shut"
        assert [a.action for a in w.enforcer.store.actions("srv-3")] == ["shut"]

    run(tmp_path, body)


def test_without_customer_logins_nobody_gets_in_at_the_customer_door(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        assert await w.login("alice", customer=True) == 401
        assert await w.login("noc", customer=True) == 401  # an operator is not a customer
        status, _ = await w.page("/customer")
        assert status == 303

    run(tmp_path, body, customers=False)


# --- the customers file and the formats ---------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ("customers:\n  cust-1:\n    basic_auth_users: {alice: plain}\n", 3, "not a bcrypt hash"),
    ("customers:\n  cust-1:\n    users: {}\n", 3, "unknown key"),
    (f"customers:\n  cust-1:\n    basic_auth_users: {{a: '{HASH}'}}\n  cust-2:\n    basic_auth_users:\n"
     f"      a: '{HASH}'\n", 6, "already given to customer cust-1"),
    ("customers: [1]\n", 1, "expected a mapping"),
    ("customers:\n  cust-9:\n    basic_auth_users: {}\n", 2, "no server of the inventory"),
    ("customers: {\n", 2, "not valid YAML"),
])
def test_a_bad_customers_file_is_named_by_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "customers.yml"
    path.write_text(text)
    with pytest.raises(CustomersConfigError) as e:
        load_customers_config(path, frozenset({"cust-1", "cust-2"}))
    assert str(e.value).startswith(f"{path}:{line}: ") and words in str(e.value)


def test_customer_hashes_stay_out_of_repr() -> None:
    logins = parse_customers_config(CUSTOMERS)
    assert logins.customer_of("alice") == "cust-1" and logins.customer_of("bob") == "cust-2"
    assert HASH not in repr(logins)


def test_yuan_from_integer_fen() -> None:
    assert [yuan(f) for f in (0, 5, 120000, 123456789, -250)] == [
        "¥0.00", "¥0.05", "¥1,200.00", "¥1,234,567.89", "-¥2.50"]


def test_the_example_web_files_load_against_the_example_inventory() -> None:
    import yaml
    from rackwarden.agent.web import operator_users
    from rackwarden.agent.webauth import load_web_config

    root = Path(__file__).resolve().parents[2] / "config"
    inventory = yaml.safe_load((root / "example.yaml").read_text())  # its credentials need systemd
    customers = load_customers_config(root / "example-web-customers.yaml",
                                      frozenset(s["customer"] for s in inventory["servers"]))
    assert customers.customer_of("ops@acme-trading.example") == "acme-trading"
    assert list(operator_users(load_web_config(root / "example-web-console.yaml"))) == ["noc"]


def test_both_web_files_name_an_unreadable_file_by_line(tmp_path: Path) -> None:
    from rackwarden.agent.webauth import WebConfigError, load_web_config

    missing = tmp_path / "absent.yml"
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"basic_auth_users:\n  \xff\xfe: x\n")
    for load, error in ((load_web_config, WebConfigError), (load_customers_config, CustomersConfigError)):
        with pytest.raises(error) as e:
            load(missing)
        assert str(e.value).startswith(f"{missing}:1: cannot read: "), e.value
        with pytest.raises(error) as e:
            load(binary)
        assert str(e.value).startswith(f"{binary}:"), e.value
