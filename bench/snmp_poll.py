"""Ports polled per CPU-second: RackWarden's poller (fast v2c path: drivers/snmp/ber.py and
fastv2c.py), the same poller through pysnmp (what every v2c poll used before), and net-snmp's
snmpbulkwalk, in the same run.

Each simulated switch is a network namespace with 48 interfaces (bridge devices: this kernel has
no dummy driver) and a real
net-snmp snmpd.
Figures are per core: ports answered divided by the CPU seconds the client spent (this
process for the poller; the snmpbulkwalk children for the baseline), so snmpd's own CPU on
the other core does not count for either side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.drivers.snmp.poller import SnmpPoller, SnmpTarget  # noqa: E402

PORTS = 48
BASE = 210  # 198.18.210+k.0/30: clear of the lab's 198.18.0-200 range


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Switch:
    def __init__(self, k: int, workdir: Path):
        self.k, self.ns = k, f"rwbench{k}"
        self.root_if, self.addr = f"rwb{k}m", f"198.18.{BASE + k}.2"
        self.community = "bench-" + secrets.token_hex(6)
        self.dir = workdir / self.ns
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "mgmt", "netns", self.ns)
        sh("ip", "addr", "add", f"198.18.{BASE + self.k}.1/30", "dev", self.root_if)
        sh("ip", "link", "set", self.root_if, "up")
        batch = [f"link add gi{i} type bridge" for i in range(1, PORTS + 1)]
        batch += [f"link set gi{i} up" for i in range(1, PORTS + 1)]
        batch += [f"addr add {self.addr}/30 dev mgmt", "link set mgmt up", "link set lo up"]
        subprocess.run(["ip", "-n", self.ns, "-batch", "-"], input="\n".join(batch).encode(),
                       check=True, capture_output=True)
        self.dir.mkdir(parents=True)
        conf = self.dir / "snmpd.conf"
        conf.write_text(f"rocommunity {self.community} 198.18.{BASE + self.k}.0/30\n")
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(self.dir), SNMPCONFPATH=str(self.dir), MIBS="")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "snmpd", "-f", "-C", "-c", str(conf), "-Lf",
             str(self.dir / "log"), f"udp:{self.addr}:161"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.root_if], capture_output=True)


def walk_args(sw: Switch, oid: str) -> list[str]:
    return ["snmpbulkwalk", "-v2c", "-c", sw.community, "-Cr50", "-On", "-Oq", "-t", "2",
            "-r", "1", sw.addr, oid]


def wait_ready(switches: list[Switch]) -> None:
    env = dict(os.environ, MIBS="")
    for sw in switches:
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(["snmpget", "-v2c", "-c", sw.community, "-t", "0.5", "-r", "0",
                                sw.addr, "1.3.6.1.2.1.1.3.0"], capture_output=True, env=env)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"snmpd in {sw.ns} did not answer")
            time.sleep(0.2)


async def bench_poller(switches: list[Switch], seconds: float, *, fast: bool) -> dict[str, float]:
    poller = SnmpPoller(wall=lambda: datetime.now(UTC), mono=time.monotonic, fast_v2c=fast)
    await poller.start()
    targets = [SnmpTarget(name=sw.ns, host=sw.addr, community=sw.community) for sw in switches]
    await poller.poll_many(targets)  # warm-up: engine and transports exist before timing
    ports = polls = errors = 0
    requests0 = poller.fast_path_stats().get("requests", 0)
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        for p in await poller.poll_many(targets):
            polls += 1
            if p.error and p.error != "partial":
                errors += 1
            ports += sum(1 for pc in p.ports.values() if pc.if_name.startswith("gi"))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    fallbacks = sum(poller.fast_path_fallbacks().values())
    requests = poller.fast_path_stats().get("requests", 0) - requests0
    await poller.close()
    return {"ports": ports, "polls": polls, "errors": errors, "cpu_s": cpu, "wall_s": wall,
            "fallbacks": fallbacks, "requests": requests}


def bench_snmpbulkwalk(switches: list[Switch], seconds: float) -> dict[str, float]:
    # ifTable and ifXTable hold every column the poller reads; a script would walk both.
    env = dict(os.environ, MIBS="")
    ports = polls = errors = 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        procs = [(sw, subprocess.Popen(walk_args(sw, oid), stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, env=env))
                 for sw in switches for oid in ("1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1")]
        answered: dict[str, set[str]] = {}
        for sw, p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                errors += 1
                continue
            names = answered.setdefault(sw.ns, set())
            for line in out.decode().splitlines():
                if line.startswith(".1.3.6.1.2.1.31.1.1.1.1.") and ' "gi' in line:
                    names.add(line)
        polls += len(switches)
        ports += sum(len(v) for v in answered.values())
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"ports": ports, "polls": polls, "errors": errors, "cpu_s": cpu,
            "wall_s": time.monotonic() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--switches", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    if shutil.which("snmpd") is None or os.geteuid() != 0:
        print("needs root and net-snmp (make deps)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rw-bench-snmp-"))
    switches = [Switch(k, work) for k in range(args.switches)]
    try:
        for sw in switches:
            sw.start()
        wait_ready(switches)
        # pysnmp first: the fast path's sizing then starts cold, as after a daemon start.
        slow = asyncio.run(bench_poller(switches, args.seconds, fast=False))
        ours = asyncio.run(bench_poller(switches, args.seconds, fast=True))
        base = bench_snmpbulkwalk(switches, args.seconds)
    except RuntimeError:
        for sw in switches:
            log = sw.dir / "log"
            print(f"{sw.ns}: {log.read_text() if log.exists() else 'no log'}", file=sys.stderr)
        raise
    finally:
        for sw in switches:
            sw.stop()
        shutil.rmtree(work, ignore_errors=True)
    per_core = lambda r: r["ports"] / r["cpu_s"] if r["cpu_s"] else 0.0  # noqa: E731
    fig = {
        "switches": args.switches,
        "ports_per_switch": PORTS,
        "poller_ports_per_cpu_s": round(per_core(ours)),
        "poller_ports_per_wall_s": round(ours["ports"] / ours["wall_s"]),
        "poller_polls": ours["polls"],
        "poller_errors": ours["errors"],
        "poller_ms_cpu_per_switch_poll": round(1000 * ours["cpu_s"] / max(1, ours["polls"]), 2),
        "poller_fast_path_fallbacks": ours["fallbacks"],
        # GETBULK requests per poll: 1 when the agent fits the sized reply in one message
        # (net-snmp caps a GETBULK reply at 100 varbinds by default: maxGetbulkResponses).
        "poller_getbulk_per_poll": round(ours["requests"] / max(1, ours["polls"]), 2),
        "pysnmp_poller_ports_per_cpu_s": round(per_core(slow)),
        "pysnmp_poller_ports_per_wall_s": round(slow["ports"] / slow["wall_s"]),
        "pysnmp_poller_polls": slow["polls"],
        "pysnmp_poller_errors": slow["errors"],
        "pysnmp_poller_ms_cpu_per_switch_poll": round(
            1000 * slow["cpu_s"] / max(1, slow["polls"]), 2),
        "snmpbulkwalk_ports_per_cpu_s": round(per_core(base)),
        "snmpbulkwalk_ports_per_wall_s": round(base["ports"] / base["wall_s"]),
        "snmpbulkwalk_polls": base["polls"],
        "snmpbulkwalk_errors": base["errors"],
        "ratio_poller_vs_snmpbulkwalk_per_cpu": round(per_core(ours) / per_core(base), 2) if per_core(base) else None,
        "ratio_pysnmp_poller_vs_snmpbulkwalk_per_cpu":
            round(per_core(slow) / per_core(base), 2) if per_core(base) else None,
        "ratio_poller_vs_pysnmp_poller_per_cpu": round(per_core(ours) / per_core(slow), 2) if per_core(slow) else None,
    }
    print(f"{args.switches} switches x {PORTS} ports, {args.seconds:g} s each side")
    print(f"  rackwarden poller, fast v2c path: {fig['poller_ports_per_cpu_s']} ports/CPU-s, "
          f"{fig['poller_ports_per_wall_s']} ports/s wall, {fig['poller_ms_cpu_per_switch_poll']} ms CPU/poll, "
          f"{fig['poller_getbulk_per_poll']} GETBULKs/poll, {fig['poller_fast_path_fallbacks']} fallbacks")
    print(f"  rackwarden poller through pysnmp: {fig['pysnmp_poller_ports_per_cpu_s']} ports/CPU-s, "
          f"{fig['pysnmp_poller_ports_per_wall_s']} ports/s wall, "
          f"{fig['pysnmp_poller_ms_cpu_per_switch_poll']} ms CPU/poll "
          f"(fast path {fig['ratio_poller_vs_pysnmp_poller_per_cpu']}x)")
    print(f"  snmpbulkwalk     : {fig['snmpbulkwalk_ports_per_cpu_s']} ports/CPU-s, "
          f"{fig['snmpbulkwalk_ports_per_wall_s']} ports/s wall (ifTable + ifXTable walks); "
          f"fast path {fig['ratio_poller_vs_snmpbulkwalk_per_cpu']}x per CPU")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
