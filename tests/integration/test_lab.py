"""The lab itself: bridge forwarding, real snmpd counters against real traffic, port shutdown."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.lab.netlab import Lab, cleanup_stale, lab_prefix, pid_alive
from tests.lab.snmpd import (
    IF_ADMIN_STATUS,
    IF_COUNTER_DISCONTINUITY_TIME,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_NAME,
    IF_OPER_STATUS,
    IF_SPEED,
    SnmpAgent,
    SnmpdError,
    snmp_cli_get,
    start_snmpd,
)

pytestmark = pytest.mark.lab

LAB_ID = 7  # own tests use 1..9; other engineers' labs use 50+
STOP_LAB_ID = 8
RATE_TOLERANCE = 0.05


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    cleanup_stale(LAB_ID)
    lab = Lab(LAB_ID, 2).start()
    yield lab
    pids = lab.started_pids
    lab.stop()
    assert not [ns for ns in _namespaces() if ns.startswith(lab_prefix(LAB_ID))]
    assert not [pid for pid in pids if pid_alive(pid)]


@pytest.fixture(scope="module")
def agent(lab: Lab) -> Iterator[SnmpAgent]:
    agent = start_snmpd(lab)
    yield agent
    agent.stop()


def _timed_get(agent: SnmpAgent, oids: list[str], version: str) -> tuple[float, list[int]]:
    """Counter values and the midpoint of the request, which is when the agent read them."""
    t0 = time.monotonic()
    values = agent.get(oids, version)
    t1 = time.monotonic()
    return (t0 + t1) / 2, [int(v) for v in values]


def test_bridge_forwards_servers_to_upstream(lab: Lab) -> None:
    before = {i: lab.port_counters(lab.port_name(i)).rx_bytes for i in (1, 2)}
    runs = {i: lab.start_traffic(i, 2_000_000, 0.5, frame_bytes=500) for i in (1, 2)}
    results = {i: run.wait(timeout=10) for i, run in runs.items()}
    time.sleep(0.2)  # the sink flushes its counts every 50 ms
    for i in (1, 2):
        sent = results[i]["frames_sent"]
        assert sent > 200
        assert results[i]["send_errors"] == 0
        assert lab.sink_received(lab.server_ip(i)) == sent
        # The frames crossed the switch port: its rx counter grew by at least their L2 bytes.
        grown = lab.port_counters(lab.port_name(i)).rx_bytes - before[i]
        assert results[i]["l2_bytes_sent"] <= grown < results[i]["l2_bytes_sent"] + 1000


def test_snmpd_serves_if_mib_v2c_and_v3(lab: Lab, agent: SnmpAgent) -> None:
    idx = lab.if_index(lab.port_name(1))
    oids = [f"{o}.{idx}" for o in (IF_NAME, IF_HIGH_SPEED, IF_SPEED, IF_ADMIN_STATUS,
                                   IF_OPER_STATUS, IF_COUNTER_DISCONTINUITY_TIME,
                                   IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS)]
    for version in ("2c", "3"):
        name, high, speed, admin, oper, disc, hc_in, hc_out = agent.get(oids, version)
        assert name == "p1"
        assert (int(high), int(speed)) == (100, 100_000_000)
        assert (int(admin), int(oper)) == (1, 1)
        assert int(disc) >= 0
        assert int(hc_in) > 0 and int(hc_out) > 0  # the forwarding test already used p1
    # The uplink keeps its own speed, and server 2's port has its own row.
    up = lab.if_index(lab.uplink_port)
    assert agent.get([f"{IF_HIGH_SPEED}.{up}"]) == ["1000"]
    assert agent.get([f"{IF_NAME}.{lab.if_index('p2')}"]) == ["p2"]
    # Wrong secrets must not get answers, or the v3 check above proves nothing.
    with pytest.raises(SnmpdError):
        snmp_cli_get(agent.workdir, ["-v2c", "-c", "wrong", agent.address],
                     [f"{IF_NAME}.{idx}"], timeout_s=0.3)
    bad_v3 = agent.v3_args()
    bad_v3[bad_v3.index("-X") + 1] = "not-the-priv-key"
    with pytest.raises(SnmpdError):
        snmp_cli_get(agent.workdir, bad_v3, [f"{IF_NAME}.{idx}"], timeout_s=0.3)


def _freshness_misses(lab: Lab, agent: SnmpAgent, samples: int, gap_s: float) -> list[int]:
    """Bytes by which each SNMP read fell outside the kernel counter read just around it."""
    idx = lab.if_index("p1")
    misses = []
    for _ in range(samples):
        before = lab.port_counters("p1").rx_bytes
        snmp = agent.get_int(f"{IF_HC_IN_OCTETS}.{idx}")
        after = lab.port_counters("p1").rx_bytes
        misses.append(0 if before <= snmp <= after else before - snmp)
        time.sleep(gap_s)
    return misses


def test_counters_are_fresh_and_default_snmpd_is_not(lab: Lab, agent: SnmpAgent) -> None:
    run = lab.start_traffic(1, 8_000_000, 15.0)
    time.sleep(0.3)
    # With the ifTable cache at 0 s every read must land between two kernel reads.
    assert _freshness_misses(lab, agent, samples=12, gap_s=0.1) == [0] * 12
    # Control: stock snmpd (3 s interface cache) in the same switch must show stale reads,
    # proving the bracket above can fail and that the fix is what makes it pass.
    stock = start_snmpd(lab, port=1161, fresh_counters=False, port_speed_mbps=None,
                        uplink_speed_mbps=None)
    try:
        misses = _freshness_misses(lab, stock, samples=16, gap_s=0.2)
    finally:
        stock.stop()
    run.stop()
    stale = [m for m in misses if m > 0]
    assert len(stale) >= 8, misses
    assert max(stale) * 8 / 8_000_000 > 1.0  # over a second of traffic missing


def test_snmp_rates_match_sender_within_5_percent(lab: Lab, agent: SnmpAgent) -> None:
    ports = [lab.port_name(i) for i in (1, 2)]
    idx = [lab.if_index(p) for p in ports]
    oids = [f"{IF_HC_IN_OCTETS}.{idx[0]}", f"{IF_HC_IN_OCTETS}.{idx[1]}"]
    before = [lab.port_counters(p).rx_bytes for p in ports]
    runs = [lab.start_traffic(1, 15_000_000, 12.0), lab.start_traffic(2, 5_000_000, 12.0)]
    time.sleep(1.0)  # past interpreter start-up, inside steady pacing

    def snapshot(version: str) -> tuple[tuple[float, list[int]], list[int]]:
        # The port's own kernel counters, read right after SNMP's: what really crossed the port
        # in the same window. A loaded machine paces the sender unevenly, so its whole-run
        # average is not the rate of any 9 s window.
        got = _timed_get(agent, oids, version)
        return got, [lab.port_counters(p).rx_bytes for p in ports]

    first = {v: snapshot(v) for v in ("2c", "3")}
    time.sleep(9.0)
    second = {v: snapshot(v) for v in ("2c", "3")}
    results = [run.wait(timeout=20) for run in runs]
    time.sleep(0.2)
    for version in ("2c", "3"):
        ((t1, c1), k1), ((t2, c2), k2) = first[version], second[version]
        for k in (0, 1):
            rate = (c2[k] - c1[k]) * 8 / (t2 - t1)
            sent = (k2[k] - k1[k]) * 8 / (t2 - t1)
            assert rate == pytest.approx(sent, rel=RATE_TOLERANCE), (
                f"v{version} server {k + 1}: SNMP {rate:.0f} b/s vs port {sent:.0f}")
            assert sent > [10_000_000, 3_000_000][k]  # the traffic really ran in that window
    # Every byte the senders sent crossed the port, and nothing else did (42 B for ARP).
    for k, p in enumerate(ports):
        grown = lab.port_counters(p).rx_bytes - before[k]
        assert results[k]["l2_bytes_sent"] <= grown < results[k]["l2_bytes_sent"] + 1000


def test_port_shutdown_is_seen_by_snmp_and_stops_traffic(lab: Lab, agent: SnmpAgent) -> None:
    idx = lab.if_index("p1")
    runs = [lab.start_traffic(i, 2_000_000, 6.0, frame_bytes=500) for i in (1, 2)]
    try:
        time.sleep(0.5)
        s1, s2 = lab.server_ip(1), lab.server_ip(2)
        assert lab.sink_received(s1) > 0
        lab.set_link("p1", up=False)
        t_down = time.monotonic()
        while agent.get_int(f"{IF_ADMIN_STATUS}.{idx}") != 2:
            # net-snmp's default interface cache would hold the old value for 3 s.
            assert time.monotonic() - t_down < 2.5, "ifAdminStatus not down(2) within 2.5 s"
            time.sleep(0.02)
        assert not lab.link_admin_up("p1")
        assert agent.get_int(f"{IF_OPER_STATUS}.{idx}") == 2
        time.sleep(0.3)  # frames already past the port may still land
        got1, got2 = lab.sink_received(s1), lab.sink_received(s2)
        rx1 = lab.port_counters("p1").rx_bytes
        time.sleep(1.0)
        assert lab.sink_received(s1) == got1, "server 1 still reaches upstream"
        assert lab.port_counters("p1").rx_bytes == rx1
        assert lab.sink_received(s2) > got2 + 200, "server 2 must be unaffected"

        lab.set_link("p1", up=True)
        t_up = time.monotonic()
        while agent.get_int(f"{IF_ADMIN_STATUS}.{idx}") != 1:
            # net-snmp's default interface cache would hold the old value for 3 s.
            assert time.monotonic() - t_up < 2.5, "ifAdminStatus not up(1) within 2.5 s"
            time.sleep(0.02)
        deadline = time.monotonic() + 10.0
        while lab.sink_received(s1) == got1:
            assert time.monotonic() < deadline, "server 1 traffic did not resume after no shut"
            time.sleep(0.05)
    finally:
        lab.set_link("p1", up=True)
        for run in runs:
            run.stop()


def test_lab_stop_leaves_no_namespace_and_no_process() -> None:
    cleanup_stale(STOP_LAB_ID)
    lab = Lab(STOP_LAB_ID, 1).start()
    agent = start_snmpd(lab)
    run = lab.start_traffic(1, 1_000_000, 30.0)
    ours = [ns for ns in _namespaces() if ns.startswith(lab_prefix(STOP_LAB_ID))]
    assert sorted(ours) == sorted(lab.namespaces) and len(ours) == 3
    pids = lab.started_pids
    assert agent.pid in pids and run.pid in pids and len(pids) == 3  # sink, snmpd, sender
    assert all(pid_alive(pid) for pid in pids)

    lab.stop()
    lab.stop()  # idempotent

    assert not [ns for ns in _namespaces() if ns.startswith(lab_prefix(STOP_LAB_ID))]
    assert not [pid for pid in pids if pid_alive(pid)]
    assert subprocess.run(["ip", "link", "show", lab.mgmt_if_root],
                          capture_output=True).returncode != 0
