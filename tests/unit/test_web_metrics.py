"""/metrics on the daemon's event loop (agent/web/metrics.py): a scrape or a password check never
stalls the loop that polls the switches and enforces, and never takes the workers the switch
sessions use.

A slow collector (or bcrypt) is made to block until a coroutine on the loop has ticked: had it
run on the loop's own thread, no tick could come, and that is recorded as a stall. The loop is
the daemon's: Runtime is built for real (its constructor does no I/O) and its own
start_metrics_server() serves the scrape. No timing figure decides anything.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rackwarden.agent import config as configmod
from rackwarden.agent import webauth
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.web.metrics import MetricsServer
from rackwarden.agent.wiring import Runtime

from tests.unit.test_reload import NOW
from tests.unit.test_webauth import HASH, PASSWORD, _basic, _get

CONFIG = """\
version: 1
agent: {{state_dir: "{state}", metrics_port: 0{extra}}}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
switches:
  sw1:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ports: ["Gi0/[1-2]"]
servers:
  - {{id: srv-a, customer: c1, switch: sw1, port: Gi0/1, ips: [192.0.2.11], template: rental, monthly_fee_fen: 80000}}
"""
WEDGED_S = 30  # a bound for a wedged test, never a pass mark


class Probe:
    """Counts the loop's ticks; a blocking call waits for two of them and records whether they came."""

    def __init__(self) -> None:
        self.loop_thread = 0
        self.ticks = 0
        self.calls: list[bool] = []  # per blocking call: the loop ticked while it blocked

    async def ticker(self) -> None:
        self.loop_thread = threading.get_ident()
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)

    def block_until_the_loop_ticks(self) -> None:
        if threading.get_ident() == self.loop_thread:
            self.calls.append(False)  # the loop is blocked in this very call: no tick can come
            return
        before = self.ticks
        deadline = time.monotonic() + WEDGED_S
        while self.ticks <= before + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        self.calls.append(self.ticks > before + 1)


class SlowCollector(Collector):
    """A collector that reads something slow, as the ledger's do."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def collect(self) -> Iterable[GaugeMetricFamily]:
        self.probe.block_until_the_loop_ticks()
        yield GaugeMetricFamily("rackwarden_test_slow_read", "A value behind a slow read.", value=7)


def _runtime(tmp_path: Path, extra: str = "") -> Runtime:
    path = tmp_path / "rw.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", extra=extra))
    return Runtime(configmod.load(path), path, clock=FakeClock(NOW))


def _run(rt: Runtime, probe: Probe, body: Callable[[int], Awaitable[None]]) -> None:
    """Start the runtime's /metrics on a loop with the probe ticking, run `body(port)`, stop."""
    async def main() -> None:
        ticker = asyncio.create_task(probe.ticker())
        port = await rt.start_metrics_server()
        try:
            await body(port)
        finally:
            ticker.cancel()
            assert rt._http is not None
            await rt._http.stop()
    asyncio.run(main())


async def _scrape(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{port}/metrics", headers=headers or {}) as r:
        return r.status, await r.text()


def test_a_scrape_reading_a_slow_collector_leaves_the_daemon_loop_running(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    probe = Probe()
    rt.metrics.registry.register(SlowCollector(probe))
    got: list[tuple[int, str]] = []

    async def body(port: int) -> None:
        got.append(await _scrape(port))

    _run(rt, probe, body)
    status, text = got[0]
    assert status == 200
    assert "rackwarden_test_slow_read 7.0" in text
    assert "rackwarden_ledger_errors_total" in text  # the daemon's own registry was served
    assert probe.calls == [True]


def test_a_wrong_password_is_refused_without_stalling_the_daemon_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    rt = _runtime(tmp_path, f', metrics_web_config: "{web}"')
    probe = Probe()
    real = bcrypt.checkpw

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        probe.block_until_the_loop_ticks()
        return real(password, hashed)

    monkeypatch.setattr(webauth.bcrypt, "checkpw", slow_checkpw)
    got: list[tuple[int, str]] = []

    async def body(port: int) -> None:
        got.append(await _scrape(port, _basic("prometheus", "wrong")))
        got.append(await _scrape(port, _basic("nobody", PASSWORD)))
        got.append(await _scrape(port, _basic("prometheus", PASSWORD)))

    _run(rt, probe, body)
    assert [s for s, _ in got] == [401, 401, 200]
    assert "rackwarden_ledger_errors_total" not in got[0][1] + got[1][1]
    assert "rackwarden_ledger_errors_total" in got[2][1]
    assert probe.calls == [True, True, True]  # every check paid its bcrypt, off the loop


async def _until(cond: Callable[[], bool]) -> bool:
    """Wait on the loop until cond() holds; False when the test is wedged."""
    deadline = time.monotonic() + WEDGED_S
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    return cond()


def test_a_hung_collector_does_not_take_the_default_executor() -> None:
    """The switch sessions run in the loop's default executor (asyncio.to_thread): scrapes stuck
    on a hung ledger read must leave it free for a port shutdown or restore."""
    release = threading.Event()
    inside = [0]
    lock = threading.Lock()
    timed_out: list[bool] = []  # per collect: it was never released, i.e. the test wedged

    class Hung(Collector):
        def collect(self) -> Iterable[GaugeMetricFamily]:
            with lock:
                inside[0] += 1
            timed_out.append(not release.wait(WEDGED_S))
            yield GaugeMetricFamily("rackwarden_test_hung", "Behind a hung read.", value=1)

    registry = CollectorRegistry()
    registry.register(Hung())
    results: list[Any] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        server = MetricsServer(registry, "127.0.0.1", 0)
        port = await server.start()
        scrapes = [asyncio.create_task(_scrape(port)) for _ in range(3)]
        results.append(await _until(lambda: inside[0] == 3))  # all three hang at once
        # A session's work still gets the executor's only worker while the scrapes hang.
        results.append(await asyncio.to_thread(lambda: not release.is_set()))
        release.set()
        results.extend(await asyncio.gather(*scrapes))
        await server.stop()

    asyncio.run(main())
    assert results[:2] == [True, True]
    assert [status for status, _ in results[2:]] == [200, 200, 200]
    assert timed_out == [False, False, False]


def test_remembered_credentials_skip_a_queue_of_failed_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed checks always pay bcrypt, two at a time; a scrape with already verified
    credentials does not wait behind a password-guessing flood."""
    wc = webauth.parse_web_config(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    release = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, most at once
    timed_out: list[bool] = []  # per held check: it was never released, i.e. the test wedged
    real = bcrypt.checkpw

    def held_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            timed_out.append(not release.wait(WEDGED_S))
            return real(password, hashed)
        finally:
            with lock:
                running[0] -= 1

    registry = CollectorRegistry()
    results: list[Any] = []

    async def main() -> None:
        server = MetricsServer(registry, "127.0.0.1", 0, wc)
        port = await server.start()
        # Verified once (not held), then remembered.
        assert (await _scrape(port, _basic("prometheus", PASSWORD)))[0] == 200
        monkeypatch.setattr(webauth.bcrypt, "checkpw", held_checkpw)
        guesses = [asyncio.create_task(_scrape(port, _basic("prometheus", f"guess{i}"))) for i in range(5)]
        results.append(await _until(lambda: running[0] == webauth.MAX_CONCURRENT_BCRYPT))
        results.append(await _scrape(port, _basic("prometheus", PASSWORD)))
        release.set()
        results.extend(await asyncio.gather(*guesses))
        await server.stop()

    asyncio.run(main())
    assert results[0] is True
    assert results[1][0] == 200  # answered while both bcrypt slots were taken
    assert [status for status, _ in results[2:]] == [401] * 5
    assert running[1] == webauth.MAX_CONCURRENT_BCRYPT
    assert timed_out == [False] * 5


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 on this host")
def test_ipv6_listen_addresses_bind_as_before() -> None:
    """'[::1]' serves on ::1; '::' also takes IPv4 scrapes, as http.server's socket did (asyncio's
    own create_server would have marked it IPv6-only)."""
    wc = webauth.parse_web_config(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    registry = CollectorRegistry()
    seen: list[int] = []

    async def main() -> None:
        loopback = MetricsServer(registry, "[::1]", 0, wc)
        port = await loopback.start()
        assert loopback.url == f"http://[::1]:{port}/metrics"
        auth = _basic("prometheus", PASSWORD)
        async with aiohttp.ClientSession() as s, s.get(f"http://[::1]:{port}/metrics", headers=auth) as r:
            seen.append(r.status)
        await loopback.stop()
        anywhere = MetricsServer(registry, "::", 0, wc)
        port = await anywhere.start()
        seen.append((await asyncio.to_thread(_get, port, _basic("prometheus", PASSWORD))).status)
        await anywhere.stop()

    asyncio.run(main())
    assert seen == [200, 200]


def test_other_methods_are_refused_and_the_server_names_only_itself() -> None:
    registry = CollectorRegistry()
    got: list[tuple[int, str]] = []

    async def main() -> None:
        server = MetricsServer(registry, "127.0.0.1", 0)
        port = await server.start()
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/metrics", data=b"x") as r:
                got.append((r.status, r.headers.get("Server", "")))
        # http.client sends the path as written (aiohttp's client would decode it): not /metrics.
        r = await asyncio.to_thread(_get, port, path="/%6Detrics")
        got.append((r.status, r.getheader("Server", "")))
        await server.stop()

    asyncio.run(main())
    assert got == [(501, "rackwarden"), (404, "rackwarden")]


def test_the_basic_auth_header_rules() -> None:
    def b64(s: bytes) -> str:
        return base64.b64encode(s).decode()

    assert webauth.basic_credentials("Basic " + b64(b"u:p:q")) == ("u", "p:q")
    assert webauth.basic_credentials("basic  " + b64(b"u:")) == ("u", "")
    assert webauth.basic_credentials("Basic " + b64(b"no-colon")) is None
    assert webauth.basic_credentials("Basic " + b64(b"\xff:x")) is None
    assert webauth.basic_credentials("Basic !!!") is None
    assert webauth.basic_credentials("Bearer " + b64(b"u:p")) is None
    assert webauth.basic_credentials("") is None
