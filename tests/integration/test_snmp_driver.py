"""SnmpPoller against real agents: net-snmp snmpd on loopback, snmpsim serving recorded walks."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rackwarden.drivers.snmp import SnmpPoller, SnmpTarget, parse_if_walk
from rackwarden.drivers.snmp.snmprec import read_snmprec
from rackwarden.policies.facts import PortPoll

from tests.integration.snmpsim_harness import (
    FIXTURES,
    SnmpsimAgent,
    free_udp_port,
    snmp_get_probe,
)

pytestmark = pytest.mark.lab

T = TypeVar("T")
LO = Path("/sys/class/net/lo")
# net-snmp's own cache of ifTable (nsCacheTimeout.ifTable); 0 makes every request read
# /proc/net/dev, so a reply can be bracketed by two reads of the kernel's counters.
IFTABLE_CACHE_TIMEOUT_OID = "1.3.6.1.4.1.8072.1.5.3.1.2.1.3.6.1.2.1.2.2"


def wall() -> datetime:
    return datetime.now(UTC)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


async def with_poller(body: Callable[[SnmpPoller], Awaitable[T]], **kwargs: Any) -> T:
    async with SnmpPoller(wall=wall, mono=time.monotonic, **kwargs) as poller:
        return await body(poller)


def poll_once(target: SnmpTarget, **kwargs: Any) -> PortPoll:
    return run(lambda: with_poller(lambda p: p.poll(target), **kwargs))


def lo_bytes() -> tuple[int, int]:
    return (
        int((LO / "statistics" / "rx_bytes").read_text()),
        int((LO / "statistics" / "tx_bytes").read_text()),
    )


def push_over_lo(total: int, chunk: int = 60_000) -> int:
    """Send `total` payload bytes through lo as UDP datagrams and receive them again."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        while sent < total:
            tx.sendto(b"\x5a" * chunk, rx.getsockname())
            sent += len(rx.recv(65536))
    return sent


def assert_clean_for(poll: PortPoll, if_index: int) -> None:
    """The poll succeeded for this port. Other interfaces of this shared host may come and go
    mid-walk (other labs create veths), which may make the poll partial, but never about it."""
    assert poll.error in (None, "partial"), (poll.error, poll.error_detail)
    if poll.error == "partial":
        about = rf"\.{if_index}\b(?!\.)|ifIndex [\d, ]*\b{if_index}\b"
        assert re.search(about, poll.error_detail) is None, poll.error_detail


# --- net-snmp snmpd on 127.0.0.1 ------------------------------------------------------------


@dataclass
class Snmpd:
    port: int
    community: str
    user: str
    auth_key: str
    priv_key: str
    proc: subprocess.Popen[bytes]

    def v2c(self, **kw: Any) -> SnmpTarget:
        return SnmpTarget("lab-snmpd", "127.0.0.1", self.port, community=self.community, **kw)

    def v3(self, **kw: Any) -> SnmpTarget:
        args: dict[str, Any] = {
            "user": self.user, "auth_protocol": "sha", "auth_key": self.auth_key,
            "priv_protocol": "aes", "priv_key": self.priv_key,
        }
        args.update(kw)
        return SnmpTarget("lab-snmpd-v3", "127.0.0.1", self.port, version="3", **args)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def snmpd() -> Iterator[Snmpd]:
    snmpd_bin = shutil.which("snmpd") or "/usr/sbin/snmpd"
    tmp = Path(tempfile.mkdtemp(prefix="rw-snmpd-"))
    persist, mibs = tmp / "persist", tmp / "mibs"
    persist.mkdir()
    mibs.mkdir()
    community, rw = f"ro-{secrets.token_hex(6)}", f"rw-{secrets.token_hex(6)}"
    user, auth_key, priv_key = "rwmon", secrets.token_hex(10), secrets.token_hex(10)
    conf = tmp / "snmpd.conf"
    conf.write_text(
        f"rocommunity {community} 127.0.0.1\n"
        # Write access only to net-snmp's cache table, to switch its ifTable cache off.
        "view cachectl included .1.3.6.1.4.1.8072.1.5\n"
        f"rwcommunity {rw} 127.0.0.1 -V cachectl\n"
        f'createUser {user} SHA "{auth_key}" AES "{priv_key}"\n'
        f"rouser {user} priv\n"
        # Without this net-snmp keeps a deleted interface's row next to its namesake.
        "interface_replace_old yes\n"
        "dontLogTCPWrappersConnects yes\n"
    )
    # Everything net-snmp would read or write by default (/etc/snmp, /var/lib/snmp, MIB dirs)
    # is pointed into the temp dir.
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "SNMP_PERSISTENT_DIR": str(persist),
        "SNMPCONFPATH": str(persist),
        "MIBDIRS": str(mibs),
        "MIBS": "",
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):
            port = free_udp_port()
            proc = subprocess.Popen(
                [snmpd_bin, "-f", "-C", "-c", str(conf), "-I", "-smux",
                 "-Lf", str(tmp / "snmpd.log"), f"udp:127.0.0.1:{port}"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                if snmp_get_probe("127.0.0.1", port, community):
                    break
                time.sleep(0.05)
            if proc.poll() is None and snmp_get_probe("127.0.0.1", port, community):
                break
            _stop(proc)
        else:
            log = (tmp / "snmpd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"snmpd did not come up:\n{log}")
        subprocess.run(
            ["snmpset", "-v2c", "-c", rw, f"127.0.0.1:{port}", IFTABLE_CACHE_TIMEOUT_OID, "i", "0"],
            env=env, check=True, capture_output=True, timeout=10,
        )
        yield Snmpd(port, community, user, auth_key, priv_key, proc)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_v2c_poll_reads_lo_counters_equal_to_the_kernel(snmpd: Snmpd) -> None:
    target = snmpd.v2c(timeout_s=1.0, retries=1)

    async def body(poller: SnmpPoller) -> tuple[Any, ...]:
        m0, w0 = time.monotonic(), wall()
        k0 = lo_bytes()
        first = await poller.poll(target)
        k1 = lo_bytes()
        pushed = push_over_lo(5_000_000)
        k2 = lo_bytes()
        second = await poller.poll(target)
        k3 = lo_bytes()
        return m0, w0, k0, first, k1, pushed, k2, second, k3, time.monotonic(), wall()

    m0, w0, k0, first, k1, pushed, k2, second, k3, m1, w1 = run(lambda: with_poller(body))
    lo_index = int((LO / "ifindex").read_text())
    for poll in (first, second):
        assert_clean_for(poll, lo_index)
        lo = poll.ports["lo"]
        assert (lo.if_index, lo.counter_bits, lo.oper, lo.admin) == (lo_index, 64, "up", "up")
        assert isinstance(lo.high_speed_mbps, int) and isinstance(lo.discontinuity_ticks, int)
        assert poll.engine_boots is None  # v2c
        assert poll.sys_uptime_ticks is not None and poll.sys_uptime_ticks > 0
        assert m0 < poll.now < m1 and w0 < poll.at < w1 and poll.at.tzinfo is UTC
        assert 0 < poll.duration_s <= m1 - m0
    a, b = first.ports["lo"], second.ports["lo"]
    # Every reading lies between the kernel's counters just before and just after the poll.
    assert k0[0] <= (a.in_octets or -1) <= k1[0] and k0[1] <= (a.out_octets or -1) <= k1[1]
    assert k2[0] <= (b.in_octets or -1) <= k3[0] and k2[1] <= (b.out_octets or -1) <= k3[1]
    assert b.in_octets is not None and a.in_octets is not None
    assert b.in_octets - a.in_octets >= pushed >= 5_000_000
    assert second.sys_uptime_ticks is not None and first.sys_uptime_ticks is not None
    assert second.sys_uptime_ticks >= first.sys_uptime_ticks


def test_v3_auth_priv_poll_reads_lo_and_engine_boots(snmpd: Snmpd) -> None:
    k0 = lo_bytes()
    poll = poll_once(snmpd.v3(timeout_s=1.0, retries=1))
    k1 = lo_bytes()
    lo_index = int((LO / "ifindex").read_text())
    assert_clean_for(poll, lo_index)
    lo = poll.ports["lo"]
    assert lo.counter_bits == 64
    assert k0[0] <= (lo.in_octets or -1) <= k1[0] and k0[1] <= (lo.out_octets or -1) <= k1[1]
    assert isinstance(poll.engine_boots, int) and poll.engine_boots >= 1


def test_wrong_community_is_a_quick_timeout(snmpd: Snmpd) -> None:
    t0 = time.monotonic()
    poll = poll_once(
        SnmpTarget("lab", "127.0.0.1", snmpd.port, community="not-it", timeout_s=0.3, retries=0)
    )
    elapsed = time.monotonic() - t0
    assert (poll.error, dict(poll.ports), poll.sys_uptime_ticks) == ("timeout", {}, None)
    # The configured 0.3 s, not pysnmp's default of 1 s x 5 retries; the upper bounds leave room
    # for a loaded CI machine (durations are figures for bench/, not pass marks).
    assert 0.25 <= poll.duration_s < 5.0
    assert elapsed < 10.0  # including the poller's start


def test_wrong_v3_credentials(snmpd: Snmpd) -> None:
    """What pysnmp 7 reports against net-snmp, and that the right keys work again afterwards."""
    quick = {"timeout_s": 0.4, "retries": 0}

    async def body(poller: SnmpPoller) -> dict[str, PortPoll]:
        out = {}
        out["auth_key"] = await poller.poll(snmpd.v3(auth_key="wrong-auth-key-1", **quick))
        out["auth_proto"] = await poller.poll(snmpd.v3(auth_protocol="sha256", **quick))
        out["user"] = await poller.poll(snmpd.v3(user="nobody-here", **quick))
        out["priv_key"] = await poller.poll(snmpd.v3(priv_key="wrong-priv-key-1", **quick))
        out["no_priv"] = await poller.poll(snmpd.v3(priv_key=None, **quick))
        out["right"] = await poller.poll(snmpd.v3(timeout_s=1.0, retries=1))
        return out

    polls = run(lambda: with_poller(body))
    # A wrong auth key or protocol: net-snmp answers with a usmStatsWrongDigests report.
    assert polls["auth_key"].error == "auth" and "digest" in polls["auth_key"].error_detail
    assert polls["auth_proto"].error == "auth"
    assert polls["user"].error == "auth" and "user" in polls["user"].error_detail.lower()
    # A wrong privacy key: net-snmp cannot decrypt the PDU and drops it silently.
    assert polls["priv_key"].error == "timeout"
    # authNoPriv for a user that must use privacy: an authorizationError PDU.
    assert polls["no_priv"].error == "auth"
    assert "authorizationError" in polls["no_priv"].error_detail
    for name in ("auth_key", "auth_proto", "user", "priv_key", "no_priv"):
        assert polls[name].ports == {} and polls[name].sys_uptime_ticks is None, name
    assert "lo" in polls["right"].ports and polls["right"].error in (None, "partial")


def test_same_v3_user_with_different_keys_polled_concurrently(snmpd: Snmpd) -> None:
    """Two switches, one user name, different keys (one of them wrong here): pysnmp keeps one key
    set per user name, so without the poller's gate the right-key polls fail at random."""
    good = [snmpd.v3(timeout_s=1.5, retries=1) for _ in range(8)]
    bad = [snmpd.v3(auth_key="not-the-auth-key", timeout_s=1.5, retries=1) for _ in range(8)]
    interleaved = [t for pair in zip(good, bad, strict=True) for t in pair]
    polls = run(lambda: with_poller(lambda p: p.poll_many(interleaved)))
    lo_index = int((LO / "ifindex").read_text())
    for poll in polls[0::2]:
        assert_clean_for(poll, lo_index)
        assert "lo" in poll.ports
    assert [p.error for p in polls[1::2]] == ["auth"] * 8


def test_dead_port_is_a_timeout() -> None:
    port = free_udp_port()  # nothing listens there any more
    poll = poll_once(SnmpTarget("dead", "127.0.0.1", port, community="x", timeout_s=0.3, retries=1))
    assert (poll.error, dict(poll.ports)) == ("timeout", {})
    assert 0.55 <= poll.duration_s < 5.0  # two tries of 0.3 s, not pysnmp's default 6 s


def test_twenty_concurrent_polls_all_succeed(snmpd: Snmpd) -> None:
    targets = [
        snmpd.v2c(timeout_s=2.0, retries=1) if i % 2 else snmpd.v3(timeout_s=2.0, retries=1)
        for i in range(20)
    ]

    async def body(poller: SnmpPoller) -> tuple[list[PortPoll], int | None, int | None]:
        polls = await poller.poll_many(targets)
        return polls, poller.socket_drops(), poller.rcvbuf_bytes

    polls, drops, rcvbuf = run(lambda: with_poller(body))
    lo_index = int((LO / "ifindex").read_text())
    assert len(polls) == 20
    for poll in polls:
        assert_clean_for(poll, lo_index)
        assert poll.ports["lo"].counter_bits == 64
    assert [p.engine_boots is not None for p in polls] == [i % 2 == 0 for i in range(20)]
    assert drops == 0
    assert rcvbuf is not None and rcvbuf >= 2 * 1024 * 1024


class BlackHole:
    """A UDP socket on 127.0.0.1 that notes when each datagram arrives and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.05)  # so the thread notices close() promptly
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65535)
            except TimeoutError:
                continue
            self.arrivals.append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_max_concurrency_bounds_requests_on_the_wire() -> None:
    """Seen from the agent's side: with a limit of 2, the third request only arrives after one
    of the first two has timed out; with no effective limit, all six arrive at once."""
    timeout = 0.5

    def arrivals(limit: int) -> list[float]:
        hole = BlackHole()
        targets = [
            SnmpTarget(f"mute{i}", "127.0.0.1", hole.port, community="x", timeout_s=timeout,
                       retries=0)
            for i in range(6)
        ]
        try:
            polls = run(lambda: with_poller(lambda p: p.poll_many(targets), max_concurrency=limit))
            assert {p.error for p in polls} == {"timeout"}
            time.sleep(0.05)
            return sorted(hole.arrivals)
        finally:
            hole.close()

    bounded = arrivals(2)
    assert len(bounded) == 6
    assert bounded[2] - bounded[0] >= 0.9 * timeout
    assert bounded[4] - bounded[0] >= 1.8 * timeout
    unbounded = arrivals(32)
    assert len(unbounded) == 6
    assert unbounded[5] - unbounded[0] < 0.9 * timeout


def test_close_waits_for_polls_in_flight_then_refuses() -> None:
    port = free_udp_port()
    target = SnmpTarget("dead", "127.0.0.1", port, community="x", timeout_s=0.4, retries=0)

    async def main() -> PortPoll:
        poller = SnmpPoller(wall=wall, mono=time.monotonic)
        await poller.start()
        task = asyncio.create_task(poller.poll(target))
        await asyncio.sleep(0.05)
        await poller.close()
        assert task.done()  # close() returned only after the poll had its answer
        with pytest.raises(RuntimeError):
            await poller.poll(target)
        return task.result()

    assert run(main).error == "timeout"


# --- snmpsim: recorded 48-port switches -----------------------------------------------------

RECORDINGS = sorted(FIXTURES.glob("*.snmprec"))


@pytest.fixture(scope="module")
def sim() -> Iterator[SnmpsimAgent]:
    with SnmpsimAgent(RECORDINGS) as agent:
        yield agent


def poll_communities(sim: SnmpsimAgent, communities: list[str], **kw: Any) -> dict[str, PortPoll]:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("retries", 1)
    targets = [SnmpTarget(c, sim.host, sim.port, community=c, **kw) for c in communities]
    polls = run(lambda: with_poller(lambda p: p.poll_many(targets)))
    return {t.name: p for t, p in zip(targets, polls, strict=True)}


@pytest.fixture(scope="module")
def recorded(sim: SnmpsimAgent) -> dict[str, PortPoll]:
    return poll_communities(sim, sim.communities)


def test_every_recording_arrives_exactly_as_recorded(recorded: dict[str, PortPoll]) -> None:
    assert set(recorded) == {p.stem for p in RECORDINGS}
    for path in RECORDINGS:
        poll, want = recorded[path.stem], parse_if_walk(read_snmprec(path))
        assert poll.switch == path.stem
        assert dict(poll.ports) == dict(want.ports), path.stem
        assert poll.sys_uptime_ticks == want.sys_uptime_ticks
        assert poll.error == ("partial" if want.problems else None), path.stem
        assert poll.error_detail == want.detail()


def test_a_counter64_reset_on_reboot(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["c64reset-t1"], recorded["c64reset-t2"]
    gi5_1, gi5_2 = t1.ports["GigabitEthernet1/0/5"], t2.ports["GigabitEthernet1/0/5"]
    assert (gi5_1.in_octets, gi5_1.out_octets) == (9_876_543_210_000, 1_234_567_890_123)
    assert (gi5_2.in_octets, gi5_2.out_octets) == (1_234_567, 7_654_321)
    assert gi5_1.counter_bits == gi5_2.counter_bits == 64
    assert (t1.sys_uptime_ticks, t2.sys_uptime_ticks) == (345_600_000, 6_000)
    access = [f"GigabitEthernet1/0/{n}" for n in range(1, 49)]
    assert all((t2.ports[n].in_octets or 0) < (t1.ports[n].in_octets or 0) for n in access)
    assert t1.error is None and t2.error is None


def test_b_counter32_wrap_without_hc_columns(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["c32wrap-t1"], recorded["c32wrap-t2"]
    assert {p.counter_bits for p in (*t1.ports.values(), *t2.ports.values())} == {32}
    fa7_1, fa7_2 = t1.ports["FastEthernet0/7"], t2.ports["FastEthernet0/7"]
    assert (fa7_1.if_index, fa7_1.in_octets, fa7_1.out_octets) == (7, 4_294_967_000, 4_294_000_000)
    assert (fa7_2.if_index, fa7_2.in_octets, fa7_2.out_octets) == (7, 1_200, 32_704)
    assert fa7_1.high_speed_mbps == 100 and fa7_1.discontinuity_ticks is None
    assert t1.error is None and t2.error is None  # no ifHC*/discontinuity column: not partial
    fa1_1, fa1_2 = t1.ports["FastEthernet0/1"], t2.ports["FastEthernet0/1"]
    assert (fa1_2.in_octets or 0) - (fa1_1.in_octets or 0) == 60_000_000


def test_c_sys_uptime_wrap_with_counters_continuing(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["uptimewrap-t1"], recorded["uptimewrap-t2"]
    assert (t1.sys_uptime_ticks, t2.sys_uptime_ticks) == (4_294_960_000, 2_704)
    for name, p1 in t1.ports.items():
        if not name.startswith("GigabitEthernet"):
            continue
        p2 = t2.ports[name]
        assert p2.if_index == p1.if_index and p2.counter_bits == 64
        assert (p2.in_octets or 0) - (p1.in_octets or 0) == 300_000_000
        assert (p2.out_octets or 0) - (p1.out_octets or 0) == 900_000_000


def test_d_ifindex_renumbered_after_reboot(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["reindex-t1"], recorded["reindex-t2"]
    assert set(t1.ports) == set(t2.ports)
    for n in range(1, 49):
        name = f"GigabitEthernet1/0/{n}"
        assert (t1.ports[name].if_index, t2.ports[name].if_index) == (10100 + n, 1049 - n)
        assert t2.ports[name].in_octets == n * 1_000
    assert t2.sys_uptime_ticks == 12_000


def test_e_counter_discontinuity_time_moves(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["discont-t1"], recorded["discont-t2"]
    gi7_1, gi7_2 = t1.ports["GigabitEthernet1/0/7"], t2.ports["GigabitEthernet1/0/7"]
    assert (gi7_1.discontinuity_ticks, gi7_2.discontinuity_ticks) == (0, 172_803_000)
    assert (gi7_2.in_octets, gi7_2.out_octets) == (5_000, 17_000)
    assert t2.sys_uptime_ticks == 172_806_000 and t1.sys_uptime_ticks == 172_800_000
    gi8_1, gi8_2 = t1.ports["GigabitEthernet1/0/8"], t2.ports["GigabitEthernet1/0/8"]
    assert gi8_2.discontinuity_ticks == 0
    assert (gi8_2.in_octets or 0) - (gi8_1.in_octets or 0) == 60_000_000


def test_f_port_missing_from_second_walk(recorded: dict[str, PortPoll]) -> None:
    t1, t2 = recorded["portgone-t1"], recorded["portgone-t2"]
    assert "GigabitEthernet1/0/13" in t1.ports and "GigabitEthernet1/0/13" not in t2.ports
    assert set(t1.ports) - set(t2.ports) == {"GigabitEthernet1/0/13"}
    assert t2.error is None  # the agent answered everything it has


def test_g_unknown_community_times_out(sim: SnmpsimAgent) -> None:
    poll = poll_communities(sim, ["no-such-recording"], timeout_s=0.5, retries=0)[
        "no-such-recording"
    ]
    assert (poll.error, dict(poll.ports), poll.sys_uptime_ticks) == ("timeout", {}, None)
    assert 0.45 <= poll.duration_s < 5.0  # the configured 0.5 s, not pysnmp's default 6 s


def test_no_such_instance_in_a_walk_is_partial_never_zero(recorded: dict[str, PortPoll]) -> None:
    poll = recorded["nosuchinst-t1"]
    gi9 = poll.ports["GigabitEthernet1/0/9"]
    assert (gi9.in_octets, gi9.counter_bits, gi9.oper) == (None, 64, "unknown")
    assert gi9.out_octets is not None and gi9.out_octets > 0
    assert poll.error == "partial"
    assert poll.error_detail == (
        "ifHCInOctets.10109 is noSuchInstance; ifOperStatus.10109 is noSuchInstance"
    )
    assert len(poll.ports) == 50


def test_duplicate_ifname_is_partial(recorded: dict[str, PortPoll]) -> None:
    poll = recorded["dupname-t1"]
    assert poll.error == "partial" and "GigabitEthernet1/0/3" not in poll.ports
    assert "10103, 10300" in poll.error_detail


def test_walk_result_does_not_depend_on_max_repetitions(
    sim: SnmpsimAgent, recorded: dict[str, PortPoll]
) -> None:
    # The default asks for more than snmpsim's 64 varbinds per reply, so its replies end
    # mid-row; 3 repetitions of 7 columns fit, so every reply ends on a row boundary.
    names = ["c32wrap-t2", "nosuchinst-t1"]
    polls = poll_communities(sim, names, max_repetitions=3)
    for name in names:
        assert dict(polls[name].ports) == dict(recorded[name].ports), name
        assert polls[name].error_detail == recorded[name].error_detail


def test_reply_time_comes_from_the_injected_clocks(sim: SnmpsimAgent) -> None:
    fixed = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    ticks = iter(range(1_000, 1_000_000))

    async def body(poller: SnmpPoller) -> PortPoll:
        return await poller.poll(SnmpTarget("x", sim.host, sim.port, community="c64reset-t1"))

    poll = run(lambda: with_poller_clocks(body, lambda: fixed, lambda: float(next(ticks))))
    assert poll.at == fixed
    # Each call of the fake monotonic clock advances it by one: the reply's time and the
    # duration are read from it, not from time.monotonic().
    assert 1_000 < poll.now < 1_100 and poll.now == int(poll.now)
    assert poll.duration_s >= 1 and poll.duration_s == int(poll.duration_s)


async def with_poller_clocks(
    body: Callable[[SnmpPoller], Awaitable[T]],
    wall_fn: Callable[[], datetime],
    mono_fn: Callable[[], float],
) -> T:
    async with SnmpPoller(wall=wall_fn, mono=mono_fn) as poller:
        return await body(poller)
