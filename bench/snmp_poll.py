"""Ports polled per CPU-second: RackWarden's poller (fast v2c path: drivers/snmp/ber.py and
fastv2c.py; fast v3 authPriv path, SHA/AES: usm.py and fastv3.py), the same fast path with
ber.py's varbind loop in Python instead of C (drivers/snmp/_bervb.c), the same poller through
pysnmp (what every poll used before), and net-snmp's snmpbulkwalk, v2c and v3, in the same run.

Each simulated switch is a network namespace with 48 interfaces (bridge devices: this kernel has
no dummy driver) and a real
net-snmp snmpd.
Figures are per core: ports answered divided by the CPU seconds the client spent (this
process for the poller; the snmpbulkwalk children for the baseline), so snmpd's own CPU on
the other core does not count for either side. Each figure is the median of --reps runs, and
each ratio the median of the same-run ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.drivers.snmp import ber  # noqa: E402
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
        self.user = "bench"
        self.auth_key, self.priv_key = "a-" + secrets.token_hex(8), "p-" + secrets.token_hex(8)
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
        conf.write_text(f"rocommunity {self.community} 198.18.{BASE + self.k}.0/30\n"
                        f'createUser {self.user} SHA "{self.auth_key}" AES "{self.priv_key}"\n'
                        f"rouser {self.user} priv\n")
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


def walk_args(sw: Switch, oid: str, version: str = "2c") -> list[str]:
    auth = (["-v2c", "-c", sw.community] if version == "2c" else
            ["-v3", "-l", "authPriv", "-u", sw.user, "-a", "SHA", "-A", sw.auth_key, "-x", "AES",
             "-X", sw.priv_key])
    return ["snmpbulkwalk", *auth, "-Cr50", "-On", "-Oq", "-t", "2", "-r", "1", sw.addr, oid]


def target(sw: Switch, version: str) -> SnmpTarget:
    if version == "2c":
        return SnmpTarget(name=sw.ns, host=sw.addr, community=sw.community)
    return SnmpTarget(name=sw.ns, host=sw.addr, version="3", user=sw.user, auth_protocol="sha",
                      auth_key=sw.auth_key, priv_protocol="aes", priv_key=sw.priv_key)


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


async def bench_poller(switches: list[Switch], seconds: float, *, fast: bool,
                       version: str = "2c", ber_loop: str | None = None) -> dict[str, float]:
    ber.use_varbind_loop(ber_loop)
    poller = SnmpPoller(wall=lambda: datetime.now(UTC), mono=time.monotonic, fast_v2c=fast,
                        fast_v3=fast)
    await poller.start()
    targets = [target(sw, version) for sw in switches]
    # Warm-up: engine, transports and (v3) engine discovery and keys exist before timing.
    await poller.poll_many(targets)
    stats = poller.fast_path_stats if version == "2c" else poller.fast_v3_path_stats
    ports = polls = errors = 0
    requests0 = stats().get("requests", 0)
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        for p in await poller.poll_many(targets):
            polls += 1
            if p.error and p.error != "partial":
                errors += 1
            ports += sum(1 for pc in p.ports.values() if pc.if_name.startswith("gi"))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    fallbacks = sum(poller.fast_path_fallbacks().values())
    requests = stats().get("requests", 0) - requests0
    await poller.close()
    ber.use_varbind_loop()
    return {"ports": ports, "polls": polls, "errors": errors, "cpu_s": cpu, "wall_s": wall,
            "fallbacks": fallbacks, "requests": requests}


def bench_snmpbulkwalk(switches: list[Switch], seconds: float,
                       version: str = "2c") -> dict[str, float]:
    # ifTable and ifXTable hold every column the poller reads; a script would walk both.
    env = dict(os.environ, MIBS="")
    ports = polls = errors = 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        procs = [(sw, subprocess.Popen(walk_args(sw, oid, version), stdout=subprocess.PIPE,
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


def per_core(r: dict[str, float]) -> float:
    return r["ports"] / r["cpu_s"] if r["cpu_s"] else 0.0


def one_run(switches: list[Switch], seconds: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for version in ("2c", "3"):
        # pysnmp first: the fast path's sizing then starts cold, as after a daemon start.
        out[f"slow{version}"] = asyncio.run(bench_poller(switches, seconds, fast=False,
                                                         version=version))
        out[f"ours{version}"] = asyncio.run(bench_poller(switches, seconds, fast=True,
                                                         version=version))
        # The same fast path with the varbind loop in Python (drivers/snmp/_bervb.c's twin).
        out[f"pyloop{version}"] = asyncio.run(bench_poller(switches, seconds, fast=True,
                                                           version=version, ber_loop="python"))
        out[f"base{version}"] = bench_snmpbulkwalk(switches, seconds, version)
    return out


def median(runs: list[dict[str, dict[str, float]]], f: Callable[[dict[str, dict[str, float]]],
                                                               float | None]) -> float | None:
    vals = [v for v in (f(r) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def rounded(x: float | None, nd: int = 0) -> float | int | None:
    if x is None:
        return None
    return round(x) if nd == 0 else round(x, nd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--switches", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("snmpd") is None or os.geteuid() != 0:
        print("needs root and net-snmp (make deps)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rw-bench-snmp-"))
    switches = [Switch(k, work) for k in range(args.switches)]
    runs: list[dict[str, dict[str, float]]] = []
    try:
        for sw in switches:
            sw.start()
        wait_ready(switches)
        for _ in range(args.reps):
            runs.append(one_run(switches, args.seconds))
    except RuntimeError:
        for sw in switches:
            log = sw.dir / "log"
            print(f"{sw.ns}: {log.read_text() if log.exists() else 'no log'}", file=sys.stderr)
        raise
    finally:
        for sw in switches:
            sw.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(side: str, f: Callable[[dict[str, float]], float | None]) -> float | None:
        return median(runs, lambda r: f(r[side]))

    def med_ratio(a: str, b: str) -> float | None:
        return median(runs, lambda r: ratio(per_core(r[a]), per_core(r[b])))

    def total(side: str, key: str) -> int:
        return int(sum(r[side][key] for r in runs))

    fig: dict[str, object] = {"switches": args.switches, "ports_per_switch": PORTS,
                              "reps": args.reps, "seconds_per_side": args.seconds}
    for v, pre in (("2c", ""), ("3", "v3_")):
        ours, slow, base, pyloop = f"ours{v}", f"slow{v}", f"base{v}", f"pyloop{v}"
        fig |= {
            f"{pre}poller_python_varbind_loop_ports_per_cpu_s": rounded(med(pyloop, per_core)),
            f"ratio_{pre}poller_vs_python_varbind_loop_per_cpu": rounded(med_ratio(ours, pyloop),
                                                                         2),
            f"{pre}poller_ports_per_cpu_s": rounded(med(ours, per_core)),
            f"{pre}poller_ports_per_wall_s": rounded(med(ours, lambda r: r["ports"] / r["wall_s"])),
            f"{pre}poller_polls": total(ours, "polls"),
            f"{pre}poller_errors": total(ours, "errors"),
            f"{pre}poller_ms_cpu_per_switch_poll": rounded(
                med(ours, lambda r: 1000 * r["cpu_s"] / max(1, r["polls"])), 2),
            f"{pre}poller_fast_path_fallbacks": total(ours, "fallbacks"),
            # GETBULK requests per poll: 1 when the agent fits the sized reply in one message
            # (net-snmp caps a GETBULK reply at 100 varbinds by default: maxGetbulkResponses).
            f"{pre}poller_getbulk_per_poll": rounded(
                med(ours, lambda r: r["requests"] / max(1, r["polls"])), 2),
            f"{pre}pysnmp_poller_ports_per_cpu_s": rounded(med(slow, per_core)),
            f"{pre}pysnmp_poller_ports_per_wall_s": rounded(
                med(slow, lambda r: r["ports"] / r["wall_s"])),
            f"{pre}pysnmp_poller_polls": total(slow, "polls"),
            f"{pre}pysnmp_poller_errors": total(slow, "errors"),
            f"{pre}pysnmp_poller_ms_cpu_per_switch_poll": rounded(
                med(slow, lambda r: 1000 * r["cpu_s"] / max(1, r["polls"])), 2),
            f"{pre}snmpbulkwalk_ports_per_cpu_s": rounded(med(base, per_core)),
            f"{pre}snmpbulkwalk_ports_per_wall_s": rounded(
                med(base, lambda r: r["ports"] / r["wall_s"])),
            f"{pre}snmpbulkwalk_polls": total(base, "polls"),
            f"{pre}snmpbulkwalk_errors": total(base, "errors"),
            f"ratio_{pre}poller_vs_snmpbulkwalk_per_cpu": rounded(med_ratio(ours, base), 2),
            f"ratio_{pre}pysnmp_poller_vs_snmpbulkwalk_per_cpu": rounded(med_ratio(slow, base), 2),
            f"ratio_{pre}poller_vs_pysnmp_poller_per_cpu": rounded(med_ratio(ours, slow), 2),
        }
    print(f"{args.switches} switches x {PORTS} ports, {args.seconds:g} s each side, "
          f"median of {args.reps} runs")
    for pre, what in (("", "v2c"), ("v3_", "v3 authPriv SHA/AES")):
        print(f"  {what}:")
        print(f"    rackwarden poller, fast path: {fig[pre + 'poller_ports_per_cpu_s']} ports/CPU-s, "
              f"{fig[pre + 'poller_ports_per_wall_s']} ports/s wall, "
              f"{fig[pre + 'poller_ms_cpu_per_switch_poll']} ms CPU/poll, "
              f"{fig[pre + 'poller_getbulk_per_poll']} requests/poll, "
              f"{fig[pre + 'poller_fast_path_fallbacks']} fallbacks, "
              f"{fig[pre + 'poller_errors']} errors")
        print(f"    the same, varbind loop in Python: "
              f"{fig[pre + 'poller_python_varbind_loop_ports_per_cpu_s']} ports/CPU-s "
              f"(C loop {fig['ratio_' + pre + 'poller_vs_python_varbind_loop_per_cpu']}x)")
        print(f"    rackwarden poller through pysnmp: {fig[pre + 'pysnmp_poller_ports_per_cpu_s']} "
              f"ports/CPU-s, {fig[pre + 'pysnmp_poller_ports_per_wall_s']} ports/s wall, "
              f"{fig[pre + 'pysnmp_poller_ms_cpu_per_switch_poll']} ms CPU/poll "
              f"(fast path {fig['ratio_' + pre + 'poller_vs_pysnmp_poller_per_cpu']}x)")
        print(f"    snmpbulkwalk     : {fig[pre + 'snmpbulkwalk_ports_per_cpu_s']} ports/CPU-s, "
              f"{fig[pre + 'snmpbulkwalk_ports_per_wall_s']} ports/s wall (ifTable + ifXTable "
              f"walks); fast path {fig['ratio_' + pre + 'poller_vs_snmpbulkwalk_per_cpu']}x per CPU")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
