"""Benchmark: config load time and the agent's memory with 10,000 servers.

The fleet: 209 switches x 48 server ports (+ 2 protected uplinks each) = 10,032 servers, written
as an operator would (config/example.yaml's keys): SNMPv3 authPriv and SSH keys from
`{credential: NAME}` files, sFlow agents, three templates, customers with contacts, one or two
IPs per server, declared ports, whitelists, a cap change and an exemption on some servers.

Measured, in this order, in one process (RSS from /proc/self/status, CPU from
time.process_time, peak from tracemalloc only where named):

- config load, wall and CPU seconds, median of the repetitions (`--reps`), interleaved, so the
  ratios are from the same run: the loader as it is now (agent/_yamlcompose.c composing, over
  libyaml's events), the same with PyYAML's libyaml binding composing (the loader before that
  module, and on a machine without its build), and the first loader (the pure-Python
  composer, the GC on): rackwarden.agent.config with its composer switched back;
- each load's peak: a fresh process (the daemon's imports, then one load) reports VmHWM above
  its RSS before the load, and its RSS after;
- RSS at rest: after the imports, after the loads, and with the daemon's core objects built
  for the fleet as `rackwarden run` builds them (wiring.Runtime: metering state, metrics, the
  enforcer, the AbuseDetector with a server state per server, the SNMP poller started on
  loopback) but no switch polled: two polls of every port are handed to metering;
- RSS after a SIGHUP-like reload (Daemon.reload: the file loaded again and every part
  reconfigured), against the RSS before it;
- RSS under sFlow load: the sFlow batch path (SflowCollector.datagrams_received, as
  bench/sflow_batch.py drives it; on the default vector engine, columns into VectorDetector and
  the raw datagram ring) feeding the runtime's AbuseService for every server, with
  evaluate() at 4 Hz of receive time.

With `--trace`, tracemalloc runs from the runtime's construction on, and each stage (runtime
built, at rest, reload, sFlow load) prints its top allocation sites by file:line (retained
bytes above the previous stage). tracemalloc slows the polls several times and its own
bookkeeping inflates RSS: read the RSS figures from a run without it.

Figures are printed with the baseline (the interpreter, the imports, the old composer) from the
same run; the run ends with one JSON line (`servers`, `rss_mb`, `config_load_s`, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SWITCHES = 209
PORTS = 48
TEMPLATES = ("rental", "colo", "campus")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fleet_yaml(state_dir: Path, switches: int = SWITCHES, ports: int = PORTS) -> str:
    """The config text for `switches` x `ports` servers, keys as in config/example.yaml."""
    out = [f"""# scale benchmark fleet: {switches} switches x {ports} ports
version: 1

agent:
  state_dir: {state_dir}
  timezone: Asia/Shanghai
  mode: notify
  metrics_listen: 127.0.0.1
  metrics_port: 9817
  record_polls: false
  max_gap_s: 300
  snmp_max_concurrency: 32

snmp_defaults:
  interval_s: 60
  timeout_s: 2
  retries: 1
  max_repetitions: 50
  port: 161

enforcement:
  rules:
    overage:    {{grace_s: 600, term_s: 3600}}
    abuse:      {{grace_s: 300, shut_at_once_if_unreachable: true}}
    nonpayment: {{grace_s: 0, term_s: until_restored}}
    operator:   {{grace_s: 0, term_s: until_restored}}
  safety:
    max_shuts_per_switch: 2
    max_shuts_total: 5
    budget_window_s: 3600
    breaker_fraction: 0.5
    breaker_min_servers: 3

notify:
  smtp: {{host: 127.0.0.1, port: 25, from: noc@idc.example}}
  alertmanager_url: http://127.0.0.1:9093
  language: both
  operator_contact: "NOC +86 592 0000 0000, noc@idc.example"

detection:
  sflow: {{listen: 127.0.0.1, port: 0}}
  thresholds:
    rental: {{flood_pps: 10000, spam_distinct_dsts: 20, scan_distinct_ports: 100}}

templates:
  rental:
    cap_mbps: 10
    window_s: 300
    direction: out
    billing_direction: max
    credit: rental
  colo:
    cap_mbps: 10
    window_s: 300
    direction: out
    billing_direction: max
    credit: colo
  campus:
    cap_mbps: 10
    window_s: 600
    direction: max
    billing_direction: max
    timezone: Asia/Shanghai
    credit: none

switches:
"""]
    for w in range(switches):
        out.append(f"""  sw{w:03d}:
    address: 10.200.{w // 256}.{w % 256}
    vendor: cisco_ios
    snmp:
      version: "3"
      user: rackwarden
      auth_protocol: sha
      auth_key: {{credential: snmp-auth}}
      priv_protocol: aes
      priv_key: {{credential: snmp-priv}}
    interval_s: 60
    port_speed_mbps: 100
    ports: ["Gi0/[1-{ports}]", "Te0/1", "Te0/2"]
    protected_ports: ["Te0/1", "Te0/2"]
    sflow_agent: 10.200.{w // 256}.{w % 256}
    ssh:
      username: rackwarden
      key_file: {{credential: ssh-key}}
      known_hosts: {{credential: known-hosts}}
      save_config: false
""")
    out.append("\nservers:\n")
    n = 0
    for w in range(switches):
        for p in range(1, ports + 1):
            n += 1
            g = n - 1  # bench/sflow_batch.py's numbering: its frames carry these addresses
            ip = f"10.{1 + g // 65536}.{(g // 256) % 256}.{g % 256}"
            out.append(f"""  - id: srv-{n:05d}
    customer: cust-{n // 7:04d}
    switch: sw{w:03d}
    port: Gi0/{p}
    ips: [{ip}]
    template: {TEMPLATES[n % 3]}
    monthly_fee_fen: {60000 + (n % 5) * 10000}
    contacts: [ops@cust-{n // 7:04d}.example]
""")
            if n % 4 == 0:
                out.append("    declared_ports: [22, 80, 443]\n")
            if n % 10 == 0:
                out.append("    whitelist: [203.0.113.0/24]\n")
            if n % 25 == 0:
                out.append('    cap_changes:\n      - {cap_mbps: 20, effective: "2027-01-01"}\n')
            if n % 50 == 0:
                out.append('    exemptions:\n      - {detectors: [scan], until: "2027-01-01T00:00:00+08:00",'
                           ' reason: "booked pentest"}\n')
    return "".join(out)


def write_fleet(work: Path, switches: int = SWITCHES, ports: int = PORTS) -> tuple[Path, Path]:
    """The config file and its credentials directory (as systemd's LoadCredential= gives it)."""
    creds = work / "credentials"
    creds.mkdir(parents=True, exist_ok=True)
    for name in ("snmp-auth", "snmp-priv", "ssh-key", "known-hosts"):
        (creds / name).write_text(f"bench-{name}-secret\n")
    path = work / "fleet.yaml"
    path.write_text(fleet_yaml(work / "state", switches, ports))
    return path, creds


# -- config load ---------------------------------------------------------------------------------

class _GcLeftOn:
    """The previous loader left the cyclic GC on during a load: loads() sees this as `gc`."""

    isenabled = staticmethod(gc.isenabled)
    enable = staticmethod(gc.enable)
    collect = staticmethod(gc.collect)

    @staticmethod
    def disable() -> None:
        return None


def loader(kind: str) -> Callable[[Path, Path], Any]:
    """`fast`: agent/config.py as it is (agent/_yamlcompose.c composes, when built).
    `binding`: the same with PyYAML's libyaml binding composing, as before that module (and
    as on a machine without its build). `old`: the same with the pure-Python composer and the
    GC left on, the two changes that took the time at first (the readers' per-Section plans
    and later tuning stay: the old figures are, if anything, flattered)."""
    from rackwarden.agent import config as configmod

    def load(path: Path, creds: Path) -> Any:
        if kind == "fast":
            return configmod.load(path, credentials_dir=creds)
        saved = configmod._yaml_c_compose, configmod._C_LOADER, configmod.gc
        configmod._yaml_c_compose = None
        if kind == "old":
            configmod._C_LOADER, configmod.gc = None, _GcLeftOn  # type: ignore[assignment]
        try:
            return configmod.load(path, credentials_dir=creds)
        finally:
            configmod._yaml_c_compose, configmod._C_LOADER, configmod.gc = saved  # type: ignore[assignment]
    return load


def vm(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_load(kind: str, path: Path, creds: Path) -> None:
    """In a fresh process: the load's peak RSS (VmHWM) above the RSS before it, and after it."""
    import rackwarden.agent.wiring  # noqa: F401  (the daemon's imports, as when it loads)

    load = loader(kind)
    gc.collect()
    before = vm("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    cfg = load(path, creds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"servers": len(cfg.servers), "rss_before_mb": before, "hwm_mb": vm("VmHWM"),
                      "rss_after_mb": vm("VmRSS"), "wall_s": wall, "cpu_s": cpu}))


def run_child(kind: str, path: Path, creds: Path) -> dict[str, Any]:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--child-load", kind, "--config", str(path),
                          "--credentials", str(creds)], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- the daemon's core objects -------------------------------------------------------------------

def poll_everything(rt: Any, at0: Any, now0: float, rounds: int = 2) -> None:
    """Two polls of every port (60 s apart) into metering and the poll metrics, then the
    detector re-keyed by the ifIndexes they reported, as after the daemon's first polls."""
    from datetime import timedelta

    from rackwarden.policies.facts import PortCounters, PortPoll

    for k in range(rounds):
        at, now = at0 + timedelta(seconds=60 * k), now0 + 60 * k
        for name, sw in rt.daemon.config.switches.items():
            ports = {p: PortCounters(p, i, 10_000_000 * (k + 1) + i, 20_000_000 * (k + 1) + i, 64, "up", "up", 100)
                     for i, p in enumerate(sw.ports, start=1)}
            rt.daemon.metering.ingest(PortPoll(name, at, now, 100_000 + 6000 * k, ports))
            rt.metrics.observe_poll(name, 0.05, None, at.timestamp())
    if rt.abuse is not None:
        rt.abuse.refresh_ports()


def sflow_load(rt: Any, samples_per_port: int, rounds: int) -> tuple[int, float, float]:
    """bench/sflow_batch.py's healthy fleet (8 servers flooding, sampled 1-in-4096) for all
    switches, through the batch receive path into the runtime's AbuseService, evaluate() at
    4 Hz of receive time. Its frames are IPv4 only here (the config gives each server one
    address). Returns (samples, RSS with the corpus held, the corpus's own MB)."""
    from datetime import timedelta

    from rackwarden.drivers.sflow.collector import SflowCollector

    import bench.sflow_batch as sb

    sb.AGENTS = len(rt.daemon.config.switches)  # type: ignore[misc]  (one agent per switch)
    frame = sb._frame
    sb._frame = lambda g, j, flood: frame(g, j + 1 if j % 10 == 9 else j, flood)  # type: ignore[assignment]
    before = rss_mb()
    datagrams, _specs, n = sb.build_corpus(samples_per_port)
    del _specs
    corpus_mb = rss_mb() - before
    clock = sb._Clock()
    # As AbuseService.start builds it: on the vector engine (the default) batches are decoded
    # into columns, kept in the raw datagram ring and fed to VectorDetector.
    vector = rt.abuse.engine == "vector"
    col = SflowCollector(allowed_agents=["10.200.0.0/16"], on_samples=rt.abuse.on_samples, clock=clock,
                         on_columns=rt.abuse.on_columns if vector else None,
                         raw_ring=rt.abuse.sflow_ring if vector else None)
    det = rt.abuse.detector
    span = len(datagrams) * sb.DATAGRAM_SPACING_S
    for r in range(rounds):
        nows = [1000.0 + r * span + i * sb.DATAGRAM_SPACING_S for i in range(len(datagrams))]
        ats = [sb.AT0 + timedelta(seconds=t - 1000.0) for t in nows]
        sb.run_batch((col, det, clock), datagrams, nows, ats, 1024)
        del nows, ats
    held = rss_mb()
    del datagrams
    return n * rounds, held, corpus_mb


class Tracer:
    """`--trace`: retained bytes by allocation site (file:line) grown since the last stage."""

    def __init__(self, top: int) -> None:
        import tracemalloc

        self.top = top
        gc.collect()
        tracemalloc.start()
        self.last = tracemalloc.take_snapshot()

    def stage(self, name: str) -> None:
        import tracemalloc

        gc.collect()
        snap = tracemalloc.take_snapshot()
        stats = snap.compare_to(self.last, "lineno")
        files = snap.compare_to(self.last, "filename")
        self.last = snap
        print(f"[trace] {name}: {sum(st.size_diff for st in stats) / 1e6:+.1f} MB retained;"
              f" by file: " + ", ".join(f"{Path(str(st.traceback[0].filename)).name} {st.size_diff / 1e6:+.1f}"
                                       for st in files[:6]))
        for st in stats[:self.top]:
            print(f"[trace]   {st.size_diff / 1e6:+8.2f} MB {st.count_diff:+9d} blocks  {st.traceback[0]}")


def malloc_trim() -> None:
    """Hand freed heap pages back to the kernel (glibc): what RSS then shows is what is held."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switches", type=int, default=SWITCHES)
    ap.add_argument("--reps", type=int, default=3, help="config loads of each kind (median)")
    ap.add_argument("--samples-per-port", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=8, help="passes of the sFlow corpus")
    ap.add_argument("--trace", type=int, nargs="?", const=15, default=0, metavar="TOP",
                    help="print the top TOP allocation sites of each stage (tracemalloc; slow)")
    ap.add_argument("--child-load", choices=("fast", "binding", "old"))
    ap.add_argument("--config", type=Path)
    ap.add_argument("--credentials", type=Path)
    args = ap.parse_args()
    if args.child_load:
        child_load(args.child_load, args.config, args.credentials)
        return 0

    rss_start = rss_mb()
    import rackwarden.agent.wiring as wiring
    from rackwarden.agent import config as configmod
    from rackwarden.agent.clock import FakeClock
    from rackwarden.drivers.snmp.poller import SnmpPoller
    rss_imports = rss_mb()

    work = Path(tempfile.mkdtemp(prefix="rw-bench-scale-"))
    path, creds = write_fleet(work, args.switches)
    os.environ["CREDENTIALS_DIRECTORY"] = str(creds)  # as systemd hands it to the daemon (reload)
    print(f"fleet: {args.switches} switches x {PORTS} ports, {path.stat().st_size / 1e6:.1f} MB of YAML")

    # Config load: old, binding and fast interleaved, each in this process (times) and in a
    # fresh one (peak).
    kinds = ("old", "binding", "fast")
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    cfg = None
    for _ in range(args.reps):
        for kind in kinds:
            cfg = None
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            cfg = loader(kind)(path, creds)
            times[kind].append((time.perf_counter() - t0, time.process_time() - c0))
    assert cfg is not None
    servers = len(cfg.servers)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    peaks = {kind: run_child(kind, path, creds) for kind in kinds}
    print(f"config load, {servers} servers (median of {args.reps}, wall / CPU s):")
    for kind, label in (("old", "pure-Python composer, GC on (first)"),
                        ("binding", "PyYAML's libyaml binding (before)"),
                        ("fast", "agent/_yamlcompose.c (now)" if configmod._yaml_c_compose
                         else "PyYAML's libyaml binding (no C build)")):
        p = peaks[kind]
        peak = p["hwm_mb"] - p["rss_before_mb"]
        print(f"  {label:40s} {med[kind][0]:7.2f} / {med[kind][1]:6.2f}   peak +{peak:6.1f} MB"
              f" over {p['rss_before_mb']:.0f} MB, after {p['rss_after_mb']:.0f} MB")
    speedup = med["old"][0] / med["fast"][0]
    vs_binding = med["binding"][0] / med["fast"][0]
    print(f"  now against the first (same run): {speedup:.1f}x wall, {med['old'][1] / med['fast'][1]:.1f}x CPU;"
          f" against the binding: {vs_binding:.2f}x wall, {med['binding'][1] / med['fast'][1]:.2f}x CPU")

    # The daemon's core objects for the fleet, no network.
    cfg = None
    gc.collect()
    malloc_trim()
    rss_loaded = rss_mb()
    tracer = Tracer(args.trace) if args.trace else None
    cfg = loader("fast")(path, creds)
    if tracer:
        tracer.stage("config loaded")
    clock = FakeClock(datetime(2026, 12, 1, tzinfo=UTC))
    # The daemon's SNMP poller, started as start_core starts it (its sockets, and pysnmp's
    # engine if it builds one), on loopback; it polls nothing: the bench hands polls to
    # metering itself.
    snmp = SnmpPoller(wall=clock.at, mono=clock.now, max_concurrency=cfg.agent.snmp_max_concurrency,
                      local_address=("127.0.0.1", 0))
    rt = wiring.Runtime(cfg, path, clock, poller=snmp)
    import asyncio  # (here: the daemon imports it, and "interpreter" above is without it)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(snmp.start())
    # As `rackwarden run` does: only the runtime holds the config, so a reload replaces it.
    cfg = None
    rss_built = rss_mb()
    if tracer:
        tracer.stage("runtime built")
    (work / "state").mkdir(parents=True, exist_ok=True)
    rt.daemon.usage.start()  # metering commits billed polls to it (a local sqlite file)
    poll_everything(rt, clock.at(), clock.now())
    gc.collect()
    rss_rest = rss_mb()
    if tracer:
        tracer.stage("at rest, after two polls")
    rt.daemon.reload()
    gc.collect()
    rss_reload = rss_mb()
    if tracer:
        tracer.stage("after a reload")
    malloc_trim()
    rss_reload_trim = rss_mb()
    print("RSS (MB):")
    print(f"  interpreter                                {rss_start:7.1f}")
    print(f"  + daemon imports                           {rss_imports:7.1f}")
    print(f"  after the config loads above (trimmed)     {rss_loaded:7.1f}")
    print(f"  runtime built, SNMP poller started         {rss_built:7.1f}")
    print(f"  at rest, after two polls of every port     {rss_rest:7.1f}")
    print(f"  after a SIGHUP reload (Daemon.reload)      {rss_reload:7.1f}  ({rss_reload_trim:.1f} after malloc_trim)")

    samples, held, corpus_mb = sflow_load(rt, args.samples_per_port, args.rounds)
    gc.collect()
    malloc_trim()
    rss_load = rss_mb()
    if tracer:
        tracer.stage("under sFlow load, corpus freed")
    print(f"  under sFlow load: {samples:,} samples through the batch path into the detector")
    print(f"    with the {corpus_mb:.0f} MB corpus held                 {held:7.1f}")
    print(f"    corpus freed (detector state kept)         {rss_load:7.1f}")
    print(json.dumps({
        "servers": servers, "rss_mb": round(rss_load, 1), "rss_rest_mb": round(rss_rest, 1),
        "rss_after_reload_mb": round(rss_reload, 1), "rss_imports_mb": round(rss_imports, 1),
        "config_load_s": round(med["fast"][0], 3), "config_load_cpu_s": round(med["fast"][1], 3),
        "config_load_old_s": round(med["old"][0], 3), "config_load_old_cpu_s": round(med["old"][1], 3),
        "config_load_speedup": round(speedup, 2),
        "config_load_binding_s": round(med["binding"][0], 3),
        "config_load_speedup_vs_binding": round(vs_binding, 2),
        "config_load_peak_mb": round(peaks["fast"]["hwm_mb"] - peaks["fast"]["rss_before_mb"], 1),
        "config_load_old_peak_mb": round(peaks["old"]["hwm_mb"] - peaks["old"]["rss_before_mb"], 1),
        "config_load_binding_peak_mb": round(peaks["binding"]["hwm_mb"] - peaks["binding"]["rss_before_mb"], 1),
        "sflow_samples": samples,
    }))
    loop.run_until_complete(snmp.close())
    loop.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
