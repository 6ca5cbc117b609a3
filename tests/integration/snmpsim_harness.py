"""snmpsim harness: generates 48-port switch walks and serves them from a real snmpsim process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api
from rackwarden.drivers.snmp.snmprec import (
    COUNTER32,
    COUNTER64,
    GAUGE32,
    INTEGER,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    TIMETICKS,
    Record,
    format_snmprec,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snmprec"

_IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
_C32 = 2**32
_C64 = 2**64

# snmpsim drops root for nobody and then cannot read this interpreter's standard library when
# it lives under a 0700 home (pyenv in /root here): every module it imports lazily after the
# drop fails. These are the ones it needs after the drop; they are imported before it.
_BOOT = """
import sys, dbm, dbm.dumb, encodings.latin_1, encodings.ascii, encodings.utf_8, encodings.idna
from snmpsim.commands.responder import main
sys.argv[0] = "snmpsim-command-responder"
sys.exit(main())
"""


@dataclass(frozen=True)
class SimPort:
    """One interface of a simulated switch: what its IF-MIB rows will say."""

    name: str
    if_index: int
    in_octets: int  # the Counter64 value; ifInOctets is this modulo 2**32
    out_octets: int
    admin: int = 1
    oper: int = 1
    speed_mbps: int = 1000
    discontinuity_ticks: int = 0
    if_type: int = 6  # ethernetCsmacd
    alias: str = ""

    def advanced(self, in_bytes: int, out_bytes: int) -> SimPort:
        return replace(
            self,
            in_octets=(self.in_octets + in_bytes) % _C64,
            out_octets=(self.out_octets + out_bytes) % _C64,
        )


def cisco_48_ports(
    *,
    seed: int = 0,
    name_format: str = "GigabitEthernet1/0/{n}",
    first_if_index: int = 10101,
    speed_mbps: int = 1000,
    counter_scale: int = 1_000_003,
) -> list[SimPort]:
    """48 access ports as a Catalyst 2960-X numbers them (Gi1/0/n at ifIndex 10100+n).

    Counters are distinct per port and seed so a mix-up between ports or switches shows.
    Ports 45-48 are admin-up but not connected (oper down), as on a real access switch.
    """
    ports = []
    for n in range(1, 49):
        base = (n * 7919 + seed * 104_729) * counter_scale
        ports.append(
            SimPort(
                name=name_format.format(n=n),
                if_index=first_if_index + n - 1,
                in_octets=base * 31 + n,
                out_octets=base * 97 + 2 * n,
                oper=2 if n > 44 else 1,
                speed_mbps=speed_mbps,
                alias=f"srv-{seed:03d}-{n:02d}" if n <= 44 else "",
            )
        )
    return ports


def _mac(if_index: int) -> bytes:
    return bytes([0x00, 0x1B, 0x54]) + if_index.to_bytes(3, "big")


def switch_records(
    ports: Sequence[SimPort],
    *,
    sys_uptime_ticks: int,
    sys_name: str = "access-sw1",
    hc: bool = True,
    discontinuity: bool = True,
    infrastructure: bool = True,
) -> list[Record]:
    """A Cisco-like walk: system group, full ifTable and ifXTable, a few non-port interfaces.

    hc=False models an older agent with ifXTable but no ifHC* columns; discontinuity=False one
    without ifCounterDiscontinuityTime (many switches lack it).
    """
    all_ports = list(ports)
    if infrastructure:
        # Vlan1 and Null0 exist on every Catalyst; they must not disturb the access ports.
        used = {p.if_index for p in all_ports}
        vlan_index = 1 if 1 not in used else max(used) + 1
        null_index = 14501 if 14501 not in used else max(used) + 2
        all_ports += [
            SimPort("Vl1", vlan_index, 123_456_789, 98_765_432, if_type=53, speed_mbps=1000),
            SimPort("Nu0", null_index, 0, 0, if_type=1, speed_mbps=10_000, oper=1),
        ]
    recs: list[Record] = [
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), OCTET_STRING,
         b"Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E8"),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 9, 1, 1208)),
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), TIMETICKS, sys_uptime_ticks),
        ((1, 3, 6, 1, 2, 1, 1, 4, 0), OCTET_STRING, b"noc@example.net"),
        ((1, 3, 6, 1, 2, 1, 1, 5, 0), OCTET_STRING, sys_name.encode()),
        ((1, 3, 6, 1, 2, 1, 1, 6, 0), OCTET_STRING, b"DC1 row 3 rack 12"),
        ((1, 3, 6, 1, 2, 1, 1, 7, 0), INTEGER, 6),
        ((1, 3, 6, 1, 2, 1, 2, 1, 0), INTEGER, len(all_ports)),
        ((1, 3, 6, 1, 2, 1, 31, 1, 5, 0), TIMETICKS, max(0, sys_uptime_ticks - 4200)),
    ]
    for p in all_ports:
        i = p.if_index
        in32, out32 = p.in_octets % _C32, p.out_octets % _C32
        in_pkts, out_pkts = p.in_octets // 700, p.out_octets // 900
        recs += [
            ((*_IF, 1, i), INTEGER, i),
            ((*_IF, 2, i), OCTET_STRING, p.name.encode()),
            ((*_IF, 3, i), INTEGER, p.if_type),
            ((*_IF, 4, i), INTEGER, 1500),
            ((*_IF, 5, i), GAUGE32, min(p.speed_mbps * 1_000_000, _C32 - 1)),
            ((*_IF, 6, i), OCTET_STRING, _mac(i)),
            ((*_IF, 7, i), INTEGER, p.admin),
            ((*_IF, 8, i), INTEGER, p.oper),
            ((*_IF, 9, i), TIMETICKS, max(0, sys_uptime_ticks - 3000)),
            ((*_IF, 10, i), COUNTER32, in32),
            ((*_IF, 11, i), COUNTER32, in_pkts % _C32),
            ((*_IF, 13, i), COUNTER32, 0),
            ((*_IF, 14, i), COUNTER32, i % 3),
            ((*_IF, 15, i), COUNTER32, 0),
            ((*_IF, 16, i), COUNTER32, out32),
            ((*_IF, 17, i), COUNTER32, out_pkts % _C32),
            ((*_IF, 19, i), COUNTER32, 0),
            ((*_IF, 20, i), COUNTER32, 0),
            ((*_IFX, 1, i), OCTET_STRING, p.name.encode()),
            ((*_IFX, 2, i), COUNTER32, (in_pkts // 50) % _C32),
            ((*_IFX, 3, i), COUNTER32, (in_pkts // 80) % _C32),
            ((*_IFX, 4, i), COUNTER32, (out_pkts // 50) % _C32),
            ((*_IFX, 5, i), COUNTER32, (out_pkts // 80) % _C32),
            ((*_IFX, 14, i), INTEGER, 1),
            ((*_IFX, 15, i), GAUGE32, p.speed_mbps),
            ((*_IFX, 16, i), INTEGER, 2),
            ((*_IFX, 17, i), INTEGER, 1 if p.if_type == 6 else 2),
            ((*_IFX, 18, i), OCTET_STRING, p.alias.encode()),
        ]
        if hc:
            recs += [
                ((*_IFX, 6, i), COUNTER64, p.in_octets),
                ((*_IFX, 7, i), COUNTER64, in_pkts),
                ((*_IFX, 8, i), COUNTER64, in_pkts // 50),
                ((*_IFX, 9, i), COUNTER64, in_pkts // 80),
                ((*_IFX, 10, i), COUNTER64, p.out_octets),
                ((*_IFX, 11, i), COUNTER64, out_pkts),
                ((*_IFX, 12, i), COUNTER64, out_pkts // 50),
                ((*_IFX, 13, i), COUNTER64, out_pkts // 80),
            ]
        if discontinuity:
            recs.append(((*_IFX, 19, i), TIMETICKS, p.discontinuity_ticks))
    # ifStackStatus rows follow ifXTable on a real agent, so the last column's walk overshoots
    # into them rather than hitting endOfMibView.
    for p in all_ports:
        recs.append(((1, 3, 6, 1, 2, 1, 31, 1, 2, 1, 3, 0, p.if_index), INTEGER, 1))
    return recs


def write_switch_snmprec(
    path: Path,
    ports: Sequence[SimPort],
    *,
    sys_uptime_ticks: int,
    sys_name: str = "access-sw1",
    hc: bool = True,
    discontinuity: bool = True,
) -> None:
    """Write one switch's walk to `path` (see switch_records)."""
    records = switch_records(
        ports, sys_uptime_ticks=sys_uptime_ticks, sys_name=sys_name, hc=hc,
        discontinuity=discontinuity,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_snmprec(records), encoding="latin-1")


def write_48_port_snmprec(
    data_dir: Path,
    count: int = 1,
    *,
    prefix: str = "sw",
    seed: int = 0,
    sys_uptime_ticks: int = 360_000_000,
    hc: bool = True,
) -> list[str]:
    """Write `count` simulated 48-port switches as <prefix><n>.snmprec; return their communities.

    Each switch gets its own seed (seed + n), so its counters differ from every other switch's.
    """
    communities = []
    for n in range(count):
        community = f"{prefix}{n:04d}"
        write_switch_snmprec(
            data_dir / f"{community}.snmprec",
            cisco_48_ports(seed=seed + n),
            sys_uptime_ticks=sys_uptime_ticks + n * 997,
            sys_name=f"access-{community}",
            hc=hc,
        )
        communities.append(community)
    return communities


def write_scenario_fixtures(data_dir: Path) -> None:
    """(Re)write the recorded edge cases in tests/fixtures/snmprec; the tests assert their values.

    Each case is one switch recorded at successive times, one community per recording.
    """
    day = 8_640_000  # TimeTicks in a day

    # (a) Counter64 reset: the switch rebooted between t1 and t2.
    t1 = cisco_48_ports(seed=1)
    t1[4] = replace(t1[4], in_octets=9_876_543_210_000, out_octets=1_234_567_890_123)
    write_switch_snmprec(data_dir / "c64reset-t1.snmprec", t1, sys_uptime_ticks=40 * day)
    t2 = [replace(p, in_octets=p.in_octets % 5_000_000, out_octets=p.out_octets % 7_000_000)
          for p in t1]
    t2[4] = replace(t2[4], in_octets=1_234_567, out_octets=7_654_321)
    write_switch_snmprec(data_dir / "c64reset-t2.snmprec", t2, sys_uptime_ticks=6_000)

    # (b) Counter32 wrap on a 100 Mb/s switch whose agent has no ifHC* columns.
    t1 = cisco_48_ports(seed=2, name_format="FastEthernet0/{n}", first_if_index=1,
                        speed_mbps=100, counter_scale=1)
    t1[6] = replace(t1[6], in_octets=4_294_967_000, out_octets=4_294_000_000)
    t1 = [replace(p, in_octets=p.in_octets % _C32, out_octets=p.out_octets % _C32) for p in t1]
    write_switch_snmprec(data_dir / "c32wrap-t1.snmprec", t1, sys_uptime_ticks=10 * day,
                         hc=False, discontinuity=False)
    # 60 s later: port 7 took 1_496 in and 1_000_000 out, both across 2**32.
    t2 = [p.advanced(60 * 1_000_000, 60 * 2_000_000) for p in t1]
    t2[6] = replace(t2[6], in_octets=1_200, out_octets=32_704)
    t2 = [replace(p, in_octets=p.in_octets % _C32, out_octets=p.out_octets % _C32) for p in t2]
    write_switch_snmprec(data_dir / "c32wrap-t2.snmprec", t2, sys_uptime_ticks=10 * day + 6_000,
                         hc=False, discontinuity=False)

    # (c) sysUpTime wraps after 497.1 days; the counters carry on as usual.
    t1 = cisco_48_ports(seed=3)
    write_switch_snmprec(data_dir / "uptimewrap-t1.snmprec", t1, sys_uptime_ticks=_C32 - 7_296)
    t2 = [p.advanced(100 * 3_000_000, 100 * 9_000_000) for p in t1]
    write_switch_snmprec(data_dir / "uptimewrap-t2.snmprec", t2, sys_uptime_ticks=2_704)

    # (d) ifIndex renumbering after a reboot (new supervisor/stack member): Gi1/0/n moves from
    # ifIndex 10100+n to 49-n+1000, so the same ifName is on another ifIndex.
    t1 = cisco_48_ports(seed=4)
    write_switch_snmprec(data_dir / "reindex-t1.snmprec", t1, sys_uptime_ticks=90 * day)
    t2 = [replace(p, if_index=1000 + 49 - n, in_octets=n * 1_000, out_octets=n * 3_000)
          for n, p in enumerate(t1, 1)]
    write_switch_snmprec(data_dir / "reindex-t2.snmprec", t2, sys_uptime_ticks=12_000)

    # (e) `clear counters Gi1/0/7`: its counters drop and its ifCounterDiscontinuityTime moves;
    # sysUpTime and every other port carry on.
    t1 = cisco_48_ports(seed=5)
    write_switch_snmprec(data_dir / "discont-t1.snmprec", t1, sys_uptime_ticks=20 * day)
    t2 = [p.advanced(60 * 1_000_000, 60 * 4_000_000) for p in t1]
    t2[6] = replace(t2[6], in_octets=5_000, out_octets=17_000,
                    discontinuity_ticks=20 * day + 3_000)
    write_switch_snmprec(data_dir / "discont-t2.snmprec", t2, sys_uptime_ticks=20 * day + 6_000)

    # (f) Gi1/0/13 is gone from the second walk (line card pulled, interface deleted).
    t1 = cisco_48_ports(seed=6)
    write_switch_snmprec(data_dir / "portgone-t1.snmprec", t1, sys_uptime_ticks=30 * day)
    t2 = [p.advanced(60 * 1_000_000, 60 * 1_000_000)
          for p in t1 if p.name != "GigabitEthernet1/0/13"]
    write_switch_snmprec(data_dir / "portgone-t2.snmprec", t2, sys_uptime_ticks=30 * day + 6_000)

    # A buggy agent that answers a walk with noSuchInstance for Gi1/0/9's ifHCInOctets and
    # ifOperStatus (seen on some stacks while a member reloads).
    t1 = cisco_48_ports(seed=7)
    text = format_snmprec(switch_records(t1, sys_uptime_ticks=5 * day))
    for col in ((*_IFX, 6), (*_IF, 8)):
        oid = ".".join(map(str, (*col, t1[8].if_index)))
        line = next(ln for ln in text.splitlines() if ln.startswith(oid + "|"))
        text = text.replace(line + "\n", f"{oid}|129|\n")
    (data_dir / "nosuchinst-t1.snmprec").write_text(text, encoding="latin-1")

    # net-snmp keeps a deleted interface's row when a new one takes its name (seen on this
    # lab's own snmpd): one ifName on two ifIndexes.
    t1 = cisco_48_ports(seed=8)
    t1.append(replace(t1[2], if_index=10300, in_octets=77, out_octets=88, oper=2))
    write_switch_snmprec(data_dir / "dupname-t1.snmprec", t1, sys_uptime_ticks=3 * day)


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def snmp_get_probe(host: str, port: int, community: str, timeout_s: float = 0.2) -> bool:
    """True if a v2c GET of sysUpTime.0 gets any reply (the agent is up and has this community)."""
    mod = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = mod.GetRequestPDU()
    mod.apiPDU.set_defaults(pdu)
    mod.apiPDU.set_varbinds(pdu, [((1, 3, 6, 1, 2, 1, 1, 3, 0), mod.Null(""))])
    msg = mod.Message()
    mod.apiMessage.set_defaults(msg)
    mod.apiMessage.set_community(msg, community)
    mod.apiMessage.set_pdu(msg, pdu)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(encoder.encode(msg), (host, port))
        try:
            reply, _ = s.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return False
    decoded, _ = decoder.decode(reply, asn1Spec=mod.Message())
    return bool(decoded)


class SnmpsimAgent:
    """A snmpsim-command-responder on 127.0.0.1:<random port> serving copies of .snmprec files.

    Runs as nobody:nogroup (snmpsim refuses root), from a world-readable temp copy of the data,
    and is stopped by its PID. Each file's stem is the community that selects it.
    """

    def __init__(self, sources: Iterable[Path], *, host: str = "127.0.0.1") -> None:
        self.sources = [Path(s) for s in sources]
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._log: Path | None = None

    @property
    def communities(self) -> list[str]:
        return [s.stem for s in self.sources]

    def start(self, ready_timeout_s: float = 20.0) -> SnmpsimAgent:
        if not self.sources:
            raise ValueError("SnmpsimAgent needs at least one .snmprec file")
        self._tmp = Path(tempfile.mkdtemp(prefix="rw-snmpsim-"))
        data, cache, mods = self._tmp / "data", self._tmp / "cache", self._tmp / "variation"
        for d in (data, cache, mods):
            d.mkdir()
        for src in self.sources:
            shutil.copyfile(src, data / src.name)
            os.chmod(data / src.name, 0o644)
        os.chmod(self._tmp, 0o755)
        os.chmod(data, 0o755)
        os.chmod(mods, 0o755)
        if os.geteuid() == 0:
            shutil.chown(cache, "nobody", "nogroup")  # snmpsim writes its indexes as nobody
        self._log = self._tmp / "snmpsim.log"
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_udp_port(self.host)
            args = [
                sys.executable, "-c", _BOOT,
                f"--data-dir={data}",
                f"--cache-dir={cache}",
                f"--variation-modules-dir={mods}",  # none: the redis/sql modules only complain
                f"--agent-udpv4-endpoint={self.host}:{self.port}",
                "--log-level=error",
            ]
            if os.geteuid() == 0:
                args += ["--process-user=nobody", "--process-group=nogroup"]
            with open(self._log, "ab") as log:
                self.proc = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self._tmp, start_new_session=True,
                )
            deadline = time.monotonic() + ready_timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                if snmp_get_probe(self.host, self.port, self.communities[0]):
                    return self
                time.sleep(0.1)
            last_error = self._log.read_text(errors="replace")[-2000:]
            self._kill()
        self.stop()
        raise RuntimeError(f"snmpsim did not come up on {self.host}; log tail:\n{last_error}")

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> SnmpsimAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # python -m tests.integration.snmpsim_harness  → rewrites the scenario fixtures
    write_scenario_fixtures(FIXTURES)
    print(f"wrote {len(list(FIXTURES.glob('*.snmprec')))} recordings to {FIXTURES}")
