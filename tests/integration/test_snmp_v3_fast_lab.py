"""The fast SNMPv3 path against a real net-snmp snmpd with an authPriv user.

The agent runs in a network namespace this test creates, with 48 port-less bridges (no
carrier, so no traffic: their counters hold still between two polls) behind a veth. Its
snmpd.conf makes the v3 user with `createUser`. It keeps its persistent state (engine ID,
boots) in the test's temp dir, so a restart is the same engine one boot later, as a switch
reboot is. Everything is removed by PID and name at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.drivers.snmp import SnmpPoller, SnmpTarget
from rackwarden.policies.facts import PortPoll

pytestmark = pytest.mark.lab

NS, ROOT_IF = "rwv3fast", "rwv3fm"
NET = "198.18.230"  # clear of the lab's 198.18.0-200 and bench/snmp_poll.py's 210+
ADDR = f"{NET}.2"
PORTS = 48


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@dataclass
class Agent:
    workdir: Path
    user: str
    auth_key: str
    priv_key: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "SNMP_PERSISTENT_DIR": str(self.workdir / "persist"),
            # The config dir and the persistent dir: no -C, so snmpd reads back the engine ID
            # and boots it saved at its last stop (and nothing from /etc/snmp).
            "SNMPCONFPATH": f"{self.workdir / 'conf'}:{self.workdir / 'persist'}",
            "MIBDIRS": str(self.workdir / "mibs"),
            "MIBS": "",
        }
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, shutil.which("snmpd") or "/usr/sbin/snmpd", "-f",
             "-I", "-smux", "-Lf", str(self.workdir / "snmpd.log"), f"udp:{ADDR}:161"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            r = subprocess.run(
                ["snmpget", "-v3", "-l", "authPriv", "-u", self.user, "-a", "SHA", "-A",
                 self.auth_key, "-x", "AES", "-X", self.priv_key, "-t", "0.5", "-r", "0",
                 ADDR, "1.3.6.1.6.3.10.2.1.2.0"],
                capture_output=True, env=dict(os.environ, MIBS=""))
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"snmpd did not answer:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)  # snmpd saves engine ID and boots on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def log(self) -> str:
        path = self.workdir / "snmpd.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "no log"

    def target(self, **kw: Any) -> SnmpTarget:
        t = SnmpTarget("lab-v3", ADDR, 161, version="3", user=self.user, auth_protocol="sha",
                       auth_key=self.auth_key, priv_protocol="aes", priv_key=self.priv_key,
                       timeout_s=2.0, retries=1)
        return replace(t, **kw)


def _wait_quiet(timeout_s: float = 15.0) -> None:
    """A bridge sends a couple of multicast frames just after it comes up: wait until the
    namespace's counters stop moving, so two polls can be compared exactly."""
    def counters() -> str:
        out = subprocess.run(["ip", "-n", NS, "-s", "-j", "link", "show"], check=True,
                             capture_output=True).stdout
        return "\n".join(f"{i['ifname']} {i['stats64']}" for i in json.loads(out)
                         if i["ifname"] != "mgmt")

    deadline = time.monotonic() + timeout_s
    last = counters()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = counters()
        if now == last:
            return
        last = now
    raise RuntimeError("the namespace's bridges kept sending")


def _cleanup_net() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", ROOT_IF], capture_output=True)


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    if os.geteuid() != 0 or shutil.which("snmpd") is None:
        pytest.fail("needs root and net-snmp (make deps)")
    tmp = Path(tempfile.mkdtemp(prefix="rw-v3fast-"))
    for d in ("conf", "persist", "mibs"):
        (tmp / d).mkdir()
    a = Agent(tmp, "rwfast", "a-" + secrets.token_hex(8), "p-" + secrets.token_hex(8))
    (tmp / "conf" / "snmpd.conf").write_text(
        f'createUser {a.user} SHA "{a.auth_key}" AES "{a.priv_key}"\n'
        f"rouser {a.user} priv\n"
        "interface_replace_old yes\n"
    )
    _cleanup_net()
    try:
        sh("ip", "netns", "add", NS)
        # No IPv6 in the namespace: a fresh bridge sends router solicitations and MLD reports
        # for a few seconds, and its counters must hold still between two polls.
        sh("ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1",
           "net.ipv6.conf.all.disable_ipv6=1")
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "mgmt", "netns", NS)
        sh("ip", "addr", "add", f"{NET}.1/30", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        batch = [f"link add gi{i} type bridge" for i in range(1, PORTS + 1)]
        batch += [f"link set gi{i} up" for i in range(1, PORTS + 1)]
        batch += [f"addr add {ADDR}/30 dev mgmt", "link set mgmt up", "link set lo up"]
        subprocess.run(["ip", "-n", NS, "-batch", "-"], input="\n".join(batch).encode(),
                       check=True, capture_output=True)
        _wait_quiet()
        a.start()
        yield a
    finally:
        a.stop()
        _cleanup_net()
        shutil.rmtree(tmp, ignore_errors=True)


def wall() -> datetime:
    return datetime.now(UTC)


def quiet_ports(poll: PortPoll) -> dict[str, object]:
    """The ports whose counters hold still: the carrier-less bridges (no IPv6, so they send
    nothing) and lo; mgmt carries the SNMP traffic itself."""
    return {name: pc for name, pc in poll.ports.items() if name != "mgmt"}


def test_fast_v3_poll_reads_what_pysnmp_reads(agent: Agent) -> None:
    async def body() -> tuple[PortPoll, PortPoll, dict[str, int], dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as fast:
            got = await fast.poll(agent.target())
            stats, fallbacks = fast.fast_v3_path_stats(), fast.fast_path_fallbacks()
        async with SnmpPoller(wall=wall, mono=time.monotonic, fast_v3=False) as slow:
            return got, await slow.poll(agent.target()), stats, fallbacks

    fast, slow, stats, fallbacks = asyncio.run(body())
    assert fast.error is None and slow.error is None, (fast.error_detail, slow.error_detail)
    assert fallbacks == {} and stats["discoveries"] == 1 and stats["requests"] >= 2
    assert len([n for n in fast.ports if n.startswith("gi")]) == PORTS
    assert quiet_ports(fast) == quiet_ports(slow)
    assert set(fast.ports) == set(slow.ports)
    assert fast.ports["mgmt"].if_index == slow.ports["mgmt"].if_index
    assert fast.engine_boots == slow.engine_boots and isinstance(fast.engine_boots, int)
    assert fast.sys_uptime_ticks is not None and slow.sys_uptime_ticks is not None
    assert fast.sys_uptime_ticks <= slow.sys_uptime_ticks


def test_wrong_keys_are_auth_errors_on_the_fast_path(agent: Agent) -> None:
    quick = {"timeout_s": 0.5, "retries": 0}

    async def body() -> tuple[dict[str, PortPoll], dict[str, int], dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            out = {
                "auth_key": await poller.poll(agent.target(auth_key="not-the-auth-key", **quick)),
                "user": await poller.poll(agent.target(user="nobody-here", **quick)),
                "right": await poller.poll(agent.target()),
            }
            return out, poller.fast_v3_path_stats(), poller.fast_path_fallbacks()

    polls, stats, fallbacks = asyncio.run(body())
    assert polls["auth_key"].error == "auth" and "digest" in polls["auth_key"].error_detail
    assert polls["user"].error == "auth" and "user" in polls["user"].error_detail.lower()
    for name in ("auth_key", "user"):
        assert polls[name].ports == {} and polls[name].sys_uptime_ticks is None
    assert polls["right"].error is None and len(polls["right"].ports) >= PORTS
    assert fallbacks == {} and stats["requests"] > 0


def test_the_poller_resyncs_after_an_snmpd_restart(agent: Agent) -> None:
    async def body() -> tuple[PortPoll, PortPoll, dict[str, int], dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            before = await poller.poll(agent.target())
            agent.stop()
            agent.start()
            after = await poller.poll(agent.target())
            return before, after, poller.fast_v3_path_stats(), poller.fast_path_fallbacks()

    before, after, stats, fallbacks = asyncio.run(body())
    assert before.error is None and after.error is None, (before.error_detail, after.error_detail)
    assert isinstance(before.engine_boots, int) and after.engine_boots == before.engine_boots + 1
    # Same engine one boot later: its notInTimeWindow Report resynchronised the poller, which
    # retried once; no second discovery, no fallback to pysnmp.
    assert stats["resyncs"] == 1 and stats["discoveries"] == 1 and fallbacks == {}
    assert quiet_ports(after) == quiet_ports(before)
