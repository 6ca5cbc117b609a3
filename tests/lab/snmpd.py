"""Real net-snmp snmpd inside the lab switch namespace, serving IF-MIB with fresh counters."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import Lab, LabError, pid_alive

# Numeric OIDs: Debian ships no IETF MIB files (snmp-mibs-downloader is non-free), and the
# agent under test uses numeric OIDs anyway.
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_TYPE = "1.3.6.1.2.1.2.2.1.3"
IF_SPEED = "1.3.6.1.2.1.2.2.1.5"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8"
IF_IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"
IF_OUT_OCTETS = "1.3.6.1.2.1.2.2.1.16"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"
IF_HIGH_SPEED = "1.3.6.1.2.1.31.1.1.1.15"
IF_COUNTER_DISCONTINUITY_TIME = "1.3.6.1.2.1.31.1.1.1.19"
# NET-SNMP-AGENT-MIB::nsCacheTimeout, indexed (IMPLIED) by the cached table's root OID.
NS_CACHE_TIMEOUT = "1.3.6.1.4.1.8072.1.5.3.1.2"
# ifTable and ifXTable share one cache in net-snmp 5.9, registered under ifTable's OID.
IF_TABLE = "1.3.6.1.2.1.2.2"
IANA_IFTYPE_ETHERNET = 6
DEFAULT_IFTABLE_CACHE_S = 3  # net-snmp 5.9 IFTABLE_CACHE_TIMEOUT, seen in nsCacheTable

SNMP_PORT = 161


class SnmpdError(LabError):
    """snmpd did not start or did not answer; the message carries snmpd's log."""


@dataclass
class SnmpAgent:
    """A running lab snmpd and everything a client needs to reach it."""

    pid: int
    host: str
    port: int
    community: str
    v3_user: str
    v3_auth_key: str
    v3_priv_key: str
    workdir: Path
    fresh_counters: bool
    v3_auth_protocol: str = "SHA"
    v3_priv_protocol: str = "AES"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"udp:{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "snmpd.log"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "snmpd.conf"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no snmpd log)"

    def cli_env(self) -> dict[str, str]:
        return client_env(self.workdir)

    def v2c_args(self) -> list[str]:
        """net-snmp CLI arguments (before the OIDs) for a v2c request."""
        return ["-v2c", "-c", self.community, self.address]

    def v3_args(self) -> list[str]:
        """net-snmp CLI arguments (before the OIDs) for a v3 authPriv request."""
        return ["-v3", "-l", "authPriv", "-u", self.v3_user,
                "-a", self.v3_auth_protocol, "-A", self.v3_auth_key,
                "-x", self.v3_priv_protocol, "-X", self.v3_priv_key, self.address]

    def get(self, oids: Sequence[str], version: str = "2c", timeout_s: float = 1.0) -> list[str]:
        """snmpget the OIDs (numeric) and return the bare values in order."""
        args = self.v2c_args() if version == "2c" else self.v3_args()
        return snmp_cli_get(self.workdir, args, oids, timeout_s)

    def get_int(self, oid: str, version: str = "2c") -> int:
        return int(self.get([oid], version)[0])

    def stop(self) -> None:
        """End snmpd by its PID; safe to call twice."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        elif pid_alive(self.pid):
            os.kill(self.pid, 15)


def client_env(workdir: Path) -> dict[str, str]:
    """Environment that keeps net-snmp CLI tools off /etc/snmp and /var/lib/snmp."""
    client = workdir / "client"
    client.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # SNMPCONFPATH stops /etc/snmp/snmp.conf being read; SNMP_PERSISTENT_DIR keeps the
    # tools from creating /var/lib/snmp/cert_indexes; empty MIBS/MIBDIRS silence the
    # missing-MIB warnings that would otherwise bury real errors.
    env.update(SNMPCONFPATH=str(client), SNMP_PERSISTENT_DIR=str(client),
               MIBS="", MIBDIRS=str(client))
    return env


def snmp_cli_get(
    workdir: Path, args: Sequence[str], oids: Sequence[str], timeout_s: float = 1.0,
    ns_argv: Sequence[str] = (),
) -> list[str]:
    """Run net-snmp `snmpget -Oqv` and return the values; raise SnmpdError on any failure."""
    # -Ot: TimeTicks as a plain number, like every other value here.
    argv = [*ns_argv, "snmpget", "-On", "-Oqvt", "-t", str(timeout_s), "-r", "1", *args, *oids]
    proc = subprocess.run(argv, capture_output=True, text=True, env=client_env(workdir),
                          timeout=timeout_s * 3 + 5, check=False)
    values = proc.stdout.splitlines()
    if proc.returncode != 0 or len(values) != len(oids) or any(
        v.startswith(("No Such", "No more")) for v in values
    ):
        raise SnmpdError(f"snmpget {' '.join(oids)} failed (rc={proc.returncode}): "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return [v.strip().strip('"') for v in values]


def _render_conf(
    lab: Lab, community: str, admin_community: str, v3_user: str, auth: str, priv: str,
    port_speed_mbps: int | None, uplink_speed_mbps: int | None,
) -> str:
    lines = [
        "# RackWarden lab switch agent; generated by tests/lab/snmpd.py",
        f"sysName {lab.switch_ns}",
        f"sysLocation rackwarden lab {lab.lab_id}",
        "sysContact noc@lab.invalid",
        f"rocommunity {community} default",
        # Read-write only from loopback inside the switch namespace and only for the cache
        # control table: the lab needs it once, to make the interface counters live.
        f"rwcommunity {admin_community} 127.0.0.1 .1.3.6.1.4.1.8072.1.5",
        f"createUser {v3_user} SHA {auth} AES {priv}",
        f"rouser {v3_user} priv",
        "dontLogTCPWrappersConnects yes",
        # A re-created interface reusing a name must replace the old row, not sit beside it
        # with a second ifIndex (seen live with the lab's churning veths).
        "interface_replace_old yes",
        # Keep rows of deleted ports for a short while only, as a real switch re-indexes fast.
        "interface_fadeout 5",
    ]
    # veth always reports 10 Gb/s and ethtool cannot change it; snmpd's `interface` override
    # makes ifSpeed/ifHighSpeed tell the contracted port speed like a real access switch.
    if port_speed_mbps:
        for i in range(1, lab.n_servers + 1):
            lines.append(f"interface {lab.port_name(i)} {IANA_IFTYPE_ETHERNET} "
                         f"{port_speed_mbps * 1_000_000}")
    if uplink_speed_mbps:
        lines.append(f"interface {lab.uplink_port} {IANA_IFTYPE_ETHERNET} "
                     f"{uplink_speed_mbps * 1_000_000}")
    return "\n".join(lines) + "\n"


def start_snmpd(
    lab: Lab,
    *,
    community: str | None = None,
    v3_user: str = "rwnoc",
    v3_auth_key: str | None = None,
    v3_priv_key: str | None = None,
    port: int = SNMP_PORT,
    port_speed_mbps: int | None = 100,
    uplink_speed_mbps: int | None = 1000,
    fresh_counters: bool = True,
    timeout_s: float = 10.0,
) -> SnmpAgent:
    """Start snmpd in the lab's switch namespace and return once it answers (and is fresh)."""
    workdir = lab.workdir / f"snmpd-{port}"
    (workdir / "persist").mkdir(parents=True, exist_ok=False)
    community = community or "ro-" + secrets.token_hex(8)
    admin_community = "adm-" + secrets.token_hex(8)
    auth = v3_auth_key or "auth-" + secrets.token_hex(8)
    priv = v3_priv_key or "priv-" + secrets.token_hex(8)
    if min(len(auth), len(priv)) < 8:
        raise ValueError("SNMPv3 passphrases need at least 8 characters")
    conf = workdir / "snmpd.conf"
    conf.write_text(_render_conf(lab, community, admin_community, v3_user, auth, priv,
                                 port_speed_mbps, uplink_speed_mbps))
    env = dict(os.environ)
    env.update(SNMP_PERSISTENT_DIR=str(workdir / "persist"), SNMPCONFPATH=str(workdir),
               MIBS="", MIBDIRS=str(workdir / "persist"))
    log = workdir / "snmpd.log"
    # -C: no system config files; -Lf: log to a file rather than a pipe nobody drains, which
    # would eventually block snmpd; -f: stay in the foreground so the PID we hold is snmpd.
    proc = lab.spawn(
        lab.switch_ns,
        ["snmpd", "-f", "-C", "-c", str(conf), "-Lf", str(log), "-p", str(workdir / "snmpd.pid"),
         f"udp:{lab.mgmt_addr}:{port},udp:127.0.0.1:{port}"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    agent = SnmpAgent(pid=proc.pid, host=lab.mgmt_addr, port=port, community=community,
                      v3_user=v3_user, v3_auth_key=auth, v3_priv_key=priv, workdir=workdir,
                      fresh_counters=fresh_counters, _proc=proc)
    try:
        _wait_answering(agent, proc, timeout_s)
        if fresh_counters:
            _make_counters_fresh(lab, agent, admin_community, port)
        if port_speed_mbps:
            _wait_speed(lab, agent, port_speed_mbps, timeout_s)
    except BaseException:
        agent.stop()
        raise
    return agent


def _wait_answering(agent: SnmpAgent, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SnmpdError(f"snmpd exited with {proc.returncode} before answering.\n"
                             f"--- snmpd log ---\n{agent.log_text()}")
        try:
            snmp_cli_get(agent.workdir, agent.v2c_args(), [SYS_UPTIME], timeout_s=0.3)
            return
        except SnmpdError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise SnmpdError(f"snmpd at {agent.address} did not answer sysUpTime.0 within "
                     f"{timeout_s:.0f} s (last: {last}).\n--- snmpd log ---\n{agent.log_text()}")


def _make_counters_fresh(lab: Lab, agent: SnmpAgent, admin_community: str, port: int) -> None:
    """Set the ifTable/ifXTable cache timeout to 0 so every request re-reads the kernel.

    net-snmp 5.9 caches the interface table for 3 s (IFTABLE_CACHE_TIMEOUT) and reloads it on
    a 3 s timer, so a counter read can be up to 3 s old; short-interval rates then swing by
    the cache phase. nsCacheTimeout is writable in NET-SNMP-AGENT-MIB; 0 makes the cache
    always expired (the handler reloads once per PDU), and the auto-reload alarm at period 0
    is dropped rather than spinning (snmpd stays at 0% CPU idle, measured).
    """
    oid = f"{NS_CACHE_TIMEOUT}.{IF_TABLE}"
    argv = ["ip", "netns", "exec", lab.switch_ns, "snmpset", "-On", "-Oqv", "-t", "1", "-r", "1",
            "-v2c", "-c", admin_community, f"udp:127.0.0.1:{port}", oid, "i", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=agent.cli_env(),
                          timeout=10, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != "0":
        raise SnmpdError(f"could not set nsCacheTimeout for ifTable: "
                         f"{proc.stderr.strip() or proc.stdout.strip()}\n"
                         f"--- snmpd log ---\n{agent.log_text()}")


def _wait_speed(lab: Lab, agent: SnmpAgent, mbps: int, timeout_s: float) -> None:
    # snmpd preloads the interface table before it reads its config, so the speed override
    # shows only after the first reload; waiting here hides that from every test.
    idx = lab.if_index(lab.port_name(1))
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        seen = agent.get([f"{IF_HIGH_SPEED}.{idx}"])[0]
        if seen == str(mbps):
            return
        time.sleep(0.1)
    raise SnmpdError(f"ifHighSpeed of {lab.port_name(1)} stayed {seen}, expected {mbps}.\n"
                     f"--- snmpd log ---\n{agent.log_text()}")
