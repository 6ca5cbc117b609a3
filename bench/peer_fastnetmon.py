"""Benchmark: RackWarden beside FastNetMon 1.2.4 (Debian) on the same sFlow stream, at once.

The fleet: `--agents` switches (sFlow agents 127.200.a.b) x 48 ports, one server per port
(10.1.0.0 upwards; 9,600 servers by default), a healthy background as bench/sflow_batch.py
makes it (TCP replies and SYNs, DNS, ICMP in 802.1Q; IPv4 only; ports sampled 1-in-16),
encoded with the project's pack_datagrams (8 flow samples, ~1.3 KB per datagram), plus one
server flooding UDP at `--flood-pps` (40,960 pps: 40 samples/s at 1-in-1024). A paced sender in
its own process (bench/_peer_sender.py; its CPU is charged to neither tool, and it runs at nice
-10 so the offered rate holds while both tools, at the same normal priority, compete for the
cores) sends every datagram twice over loopback, to each tool's port, renumbering datagram and
sample sequences (and sample pools) on every pass as an agent would. Nothing leaves the
machine; every process the bench starts is stopped by its PID at the end, also on error.

- RackWarden: the daemon's sFlow path in a process of its own (bench/_peer_rackwarden.py: the
  config loaded as the daemon loads it, AbuseService with its SflowCollector receive thread and
  16 MB socket buffer, AbuseDetector and the 4 Hz evaluation, evidence pcaps, /metrics), flood
  and UDP-flood thresholds at 10k pps. No SNMP polling, ledger or API run beside it.
- FastNetMon: /usr/sbin/fastnetmon with its own copy of the packaged /etc/fastnetmon.conf,
  edited only where the bench must (fastnetmon_edits(): sFlow on our port, usage report off,
  its gRPC API off, Prometheus on a free port, threshold_pps 10k, the fleet's /16 as
  networks_list, paths into a temp dir, a notify script that only records when it was called);
  everything else as packaged (average_calculation_time 5 s, its default socket buffer).

After a warm-up (`--warmup-s` at 1,000 datagrams/s: every server seen once, so first-sight
costs fall in no step), measured per offered rate (`--rates`, datagrams/s, each for
`--step-s`; the sender's achieved rate is printed):
- loss per tool from its own counters, read once they have stopped moving after the step (at
  most 90 s): RackWarden's rackwarden_sflow_datagrams against datagrams sent, FastNetMon's
  fastnetmon_total_simple_packets_processed (flow samples) against flow samples sent; beside
  it the kernel's drops of each tool's socket (/proc/net/udp), RackWarden's backlog drops (its
  receive thread's bounded queue) and each tool's lag (seconds after the sender stopped until
  its /metrics answered with its final count: RackWarden serves /metrics on its event loop,
  behind the batches queued there, so its lag is the backlog it was still working off);
- CPU (utime+stime of the whole process from /proc/<pid>/stat, over the step and its lag) per
  million flow samples the tool took, over all steps; and each tool's CPU per second with no
  traffic (its fixed cost);
- RSS (VmRSS) of each tool after each step.
The lossless rate is the highest offered rate whose loss, and every lower rate's, is under 1 %
(a step the sender fell short of by > 5 % does not count). Then `--rounds` flood rounds at
`--detect-rate` background (1,000 datagrams/s: detection, not overload), each flooding from a
server not flooded before (FastNetMon bans for 1900 s): detection delay = flood start (the
sender's clock before its first flood datagram) -> the moment the tool hands the decision to
its action (RackWarden: AbuseService's call to the enforcer, a stand-in here; FastNetMon: its
notify script with `ban`); median over the rounds, misses counted.

The machine's cores are shared by the sender, both tools and other users: figures are from one
run, side by side, under the same contention; the load average is printed. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FASTNETMON = "/usr/sbin/fastnetmon"
PACKAGED_CONF = Path("/etc/fastnetmon.conf")
PORTS = 48
THRESHOLD_PPS = 10_000
MAX_LOSS = 0.01
BENCH = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FULL: dict[str, Any] = {"rates": "2500,5000,7500,10000,20000,30000,40000", "step_s": 10.0, "rounds": 5,
                        "round_s": 10.0, "idle_s": 4.0}
QUICK: dict[str, Any] = {"rates": "2500,10000,20000", "step_s": 4.0, "rounds": 3, "round_s": 8.0,
                         "idle_s": 2.0}


# -- pure parts (tests/unit/test_bench_peer.py) ---------------------------------------------------

def loss_fraction(sent: int, got: int) -> float:
    """Share of what was sent that the tool never counted; 0 for nothing sent. A tool that
    counts more than was sent (it never should) reads as no loss, not as negative loss."""
    if sent <= 0:
        return 0.0
    return max(0.0, (sent - got) / sent)


@dataclass(frozen=True)
class Step:
    offered: float  # datagrams/s asked of the sender
    achieved: float  # datagrams/s it sent
    loss: float  # 0..1, from the tool's own counter


def lossless_rate(steps: Iterable[Step], max_loss: float = MAX_LOSS, min_achieved: float = 0.95) -> float:
    """The highest offered rate at which the loss, and the loss at every lower offered rate,
    stayed under `max_loss`; 0 if even the lowest lost more. A step the sender fell short of
    (achieved < min_achieved x offered) proves nothing about that rate and ends the climb."""
    best = 0.0
    for s in sorted(steps, key=lambda s: s.offered):
        if s.achieved < min_achieved * s.offered or s.loss >= max_loss:
            break
        best = s.offered
    return best


@dataclass(frozen=True)
class FnmSettings:
    sflow_port: int
    prometheus_port: int
    work: Path
    threshold_pps: int = THRESHOLD_PPS


_ACTIVE = re.compile(r"^(?P<key>[a-z0-9_]+)\s*=\s*(?P<value>.*?)\s*$")


def fastnetmon_edits(s: FnmSettings) -> dict[str, str]:
    """Every line the bench changes in the packaged config, and why."""
    w = s.work
    return {
        "sflow": "on", "sflow_host": "127.0.0.1", "sflow_port": str(s.sflow_port),
        "disable_usage_report": "on",  # no reports to fastnetmon.com from a bench
        # Its gRPC API listens on a fixed 127.0.0.1:50052: off, so a packaged instance or a
        # second run cannot collide with this one.
        "enable_api": "off",
        "prometheus": "on", "prometheus_host": "127.0.0.1", "prometheus_port": str(s.prometheus_port),
        "enable_ban": "on", "ban_for_pps": "on", "threshold_pps": str(s.threshold_pps),
        "networks_list_path": str(w / "networks_list"),
        "white_list_path": str(w / "networks_whitelist"),
        "notify_script_path": str(w / "notify.sh"),
        "pid_path": str(w / "fastnetmon.pid"),
        "cli_stats_file_path": str(w / "fastnetmon.dat"),
        "cli_stats_ipv6_file_path": str(w / "fastnetmon_ipv6.dat"),
    }


def fastnetmon_config(packaged: str, settings: FnmSettings, file: str = "fastnetmon.conf") -> str:
    """The packaged config with fastnetmon_edits() applied to its active (uncommented) lines,
    everything else kept as shipped. Each edited key must be active exactly once: a package
    whose config moved a key on would otherwise run with the shipped value unnoticed."""
    edits = fastnetmon_edits(settings)
    seen: dict[str, int] = {}
    out = []
    for n, line in enumerate(packaged.splitlines(), start=1):
        m = _ACTIVE.match(line)
        if m is not None and m.group("key") in edits:
            key = m.group("key")
            if key in seen:
                raise ValueError(f"{file}:{n}: {key} set twice (first on line {seen[key]})")
            seen[key] = n
            line = f"{key} = {edits[key]}"
        out.append(line)
    missing = sorted(set(edits) - set(seen))
    if missing:
        raise ValueError(f"{file}: no active line for {', '.join(missing)}")
    return "\n".join(out) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """name{labels} -> value for every sample line (FastNetMon 1.2.4 omits the space before
    the value on some lines: `...{...}0`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            name, _, value = line.rpartition("}")
            name += "}"
        else:
            name, _, value = line.rpartition(" ")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            continue
    return out


def udp_drops(proc_net_udp: str, port: int, addr: str = "127.0.0.1") -> int | None:
    """The drops column of the socket bound to addr:port in /proc/net/udp text. The address
    matters: the sender's sockets, bound to 127.200.a.b, may draw the same port number."""
    want = f"{int.from_bytes(socket.inet_aton(addr), 'little'):08X}:{port:04X}"
    for line in proc_net_udp.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 13 and cols[1].upper() == want:
            return int(cols[12])
    return None


def notify_bans(text: str) -> dict[str, float]:
    """ip -> first time FastNetMon called the notify script to ban it (lines `<t> <ip> <dir>
    <pps> <action>` as notify.sh records them)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[4] == "ban" and cols[1] not in out:
            out[cols[1]] = float(cols[0])
    return out


def median_or_none(xs: Sequence[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


# -- processes ------------------------------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A process the bench started, its stdout read line by line on a thread."""

    def __init__(self, name: str, argv: list[str], stdin: bool = True, stdout: bool = True,
                 log: Path | None = None, nice: int = 0) -> None:
        self.name = name
        err = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                     stderr=err, text=True, bufsize=1,
                                     preexec_fn=(lambda: _renice(nice)) if nice else None)
        self.pid = self.proc.pid
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.pending: list[dict[str, Any]] = []
        if stdout:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next line holding `key` (other lines are kept for later in `pending`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self.lines.empty():
                raise RuntimeError(f"{self.name} (pid {self.pid}) gave no {key!r} line"
                                   f" (exit status {self.proc.poll()})")
            try:
                msg = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if key in msg:
                return msg
            self.pending.append(msg)

    def drain(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def send(self, msg: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """By PID: close stdin (a clean stop) or SIGTERM, then SIGKILL."""
        if self.proc.poll() is not None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
                self.proc.wait(timeout=3)
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
            if self.proc.poll() is not None:
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _renice(n: int) -> None:
    try:
        os.nice(n)
    except OSError:  # not root: the sender runs at the tools' priority and may fall short
        pass


def scrape(port: int) -> dict[str, float]:
    # A busy event loop answers late: the daemon's /metrics is served on it.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        return parse_prometheus(r.read().decode())


@dataclass
class Tool:
    name: str
    pid: int
    metrics_port: int
    sflow_port: int
    counter: str  # what loss is counted from
    unit: str  # "datagrams" or "samples": what `counter` counts
    samples_counter: str  # flow samples the tool took (CPU is per sample)

    def read(self) -> tuple[float, float]:
        m = scrape(self.metrics_port)
        return m.get(self.counter, 0.0), m.get(self.samples_counter, 0.0)

    def drops(self) -> int:
        with open("/proc/net/udp") as f:
            return udp_drops(f.read(), self.sflow_port) or 0


def settle(tools: Sequence[Tool], quiet_s: float = 1.5, limit_s: float = 90.0,
           trace: bool = False) -> list[float]:
    """Wait until every tool's counter has stopped moving for quiet_s (its backlog is worked
    off), at most limit_s; returns, per tool, the seconds after the call until its counter last
    moved. A tool's first answer counts as movement: RackWarden serves /metrics on its event
    loop, behind the batches queued there, so that answer comes only once they are done. The
    tools are read in parallel, so one's slow answer does not delay the other's."""
    t0 = time.monotonic()

    def read(t: Tool) -> tuple[float, float]:
        v = t.read()[0]
        return v, time.monotonic()

    with ThreadPoolExecutor(len(tools)) as pool:
        first = list(pool.map(read, tools))
        last = [v for v, _ in first]
        moved = [at for _, at in first]
        while time.monotonic() - t0 < limit_s:
            time.sleep(0.25)
            got = list(pool.map(read, tools))
            now = [v for v, _ in got]
            at = time.monotonic()
            if trace:
                print("settle +%.2f s: " % (at - t0) + ", ".join(
                    f"{t.name} {v:,.0f} (read at +{r - t0:.2f})" for t, (v, r) in zip(tools, got, strict=True)),
                    file=sys.stderr)
            moved = [at if n != o else m for n, o, m in zip(now, last, moved, strict=True)]
            last = now
            if all(at - m >= quiet_s for m in moved):
                break
    return [m - t0 for m in moved]


NOTIFY_SH = """#!/bin/sh
# FastNetMon calls this with: <ip> <incoming|outgoing> <pps> <ban|unban|attack_details>
echo "$(date +%s.%N) $*" >> {log}
exec timeout 1 cat > /dev/null
"""


def start_fastnetmon(work: Path, networks: str) -> tuple[Child, Tool]:
    settings = FnmSettings(free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), work)
    (work / "networks_list").write_text(networks + "\n")
    (work / "networks_whitelist").write_text("")
    notify = work / "notify.sh"
    notify.write_text(NOTIFY_SH.format(log=work / "notify.log"))
    notify.chmod(0o755)
    conf = work / "fastnetmon.conf"
    conf.write_text(fastnetmon_config(PACKAGED_CONF.read_text(), settings, str(PACKAGED_CONF)))
    child = Child("fastnetmon", [FASTNETMON, "--configuration_file", str(conf),
                                 "--log_file", str(work / "fastnetmon.log"), "--disable_pid_logic"],
                  stdin=False, stdout=False, log=work / "fastnetmon.stderr")
    tool = Tool("fastnetmon", child.pid, settings.prometheus_port, settings.sflow_port,
                "fastnetmon_total_simple_packets_processed", "samples",
                "fastnetmon_total_simple_packets_processed")
    deadline = time.monotonic() + 30
    while True:
        if child.proc.poll() is not None:
            raise RuntimeError(f"fastnetmon exited ({child.proc.returncode}); see its log: "
                               + (work / "fastnetmon.log").read_text()[-2000:])
        try:
            tool.read()
            with open("/proc/net/udp") as f:
                if udp_drops(f.read(), settings.sflow_port) is not None:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("fastnetmon did not open its sFlow socket and /metrics in 30 s")
        time.sleep(0.2)
    return child, tool


def start_rackwarden(work: Path, agents: int) -> tuple[Child, Tool, dict[str, Any]]:
    from bench._peer_rackwarden import fleet_yaml

    path = work / "rackwarden.yaml"
    path.write_text(fleet_yaml(work / "rw-state", agents, PORTS, THRESHOLD_PPS))
    child = Child("rackwarden", [sys.executable, str(BENCH / "_peer_rackwarden.py"), "--config", str(path)],
                  log=work / "rackwarden.stderr")
    ready = child.expect("ready", 120)
    tool = Tool("rackwarden", child.pid, ready["metrics_port"], ready["sflow_port"],
                "rackwarden_sflow_datagrams_total", "datagrams", "bench_sflow_flow_samples_total")
    return child, tool, ready


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1.5-2 minutes: rates 2500,10000,20000 for 4 s each, 3 flood rounds of 8 s")
    ap.add_argument("--agents", type=int, default=200, help="switches of 48 ports (200: 9,600 servers)")
    ap.add_argument("--rates", type=str, help="offered datagrams/s, comma-separated "
                    f"(default {FULL['rates']}; quick {QUICK['rates']})")
    ap.add_argument("--step-s", type=float, help=f"seconds per rate ({FULL['step_s']}; quick {QUICK['step_s']})")
    ap.add_argument("--rounds", type=int, help=f"flood rounds ({FULL['rounds']}; quick {QUICK['rounds']})")
    ap.add_argument("--round-s", type=float,
                    help=f"seconds per flood round ({FULL['round_s']}; quick {QUICK['round_s']})")
    ap.add_argument("--idle-s", type=float,
                    help=f"seconds of no traffic, for the fixed CPU ({FULL['idle_s']}; quick {QUICK['idle_s']})")
    ap.add_argument("--warmup-s", type=float, default=5.0,
                    help="seconds at 1,000 datagrams/s before anything is measured (one pass of the fleet)")
    ap.add_argument("--detect-rate", type=float, default=1000.0,
                    help="background datagrams/s during the flood rounds")
    ap.add_argument("--flood-pps", type=float, default=40_960.0,
                    help="the flooder's packets/s on the wire (sampled 1-in-1024)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--trace", action="store_true", help="print each tool's counter while settling")
    args = ap.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    if not (os.access(FASTNETMON, os.X_OK) and PACKAGED_CONF.exists()):
        print(f"peer_fastnetmon: {FASTNETMON} or {PACKAGED_CONF} is missing: install the Debian "
              "package fastnetmon (make bench does: apt-get install fastnetmon)", file=sys.stderr)
        return 2

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(f"peer_fastnetmon: signal {signum}: stopping the processes it started")

    # A SIGTERM (make's, a CI timeout's) then unwinds through the finally below like an error.
    signal.signal(signal.SIGTERM, terminated)
    work = Path(tempfile.mkdtemp(prefix="rw-bench-peer-"))
    children: list[Child] = []
    try:
        return _run(args, rates, work, children)
    finally:
        for c in reversed(children):
            c.stop()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, rates: list[float], work: Path, children: list[Child]) -> int:
    from bench._peer_sender import server_id, server_ip

    servers = args.agents * PORTS
    flood_samples_per_s = args.flood_pps / 1024
    t_start = time.monotonic()
    rw_child, rw, rw_ready = start_rackwarden(work, args.agents)
    children.append(rw_child)
    fnm_child, fnm = start_fastnetmon(work, "10.1.0.0/16")
    children.append(fnm_child)
    sender = Child("sender", [sys.executable, str(BENCH / "_peer_sender.py"),
                              "--agents", str(args.agents), "--ports", str(PORTS),
                              "--targets", str(rw.sflow_port), str(fnm.sflow_port)],
                   log=work / "sender.stderr", nice=-10)
    children.append(sender)
    corpus = sender.expect("ready", 300)
    per_dg = corpus["samples_per_pass"] / corpus["datagrams_per_pass"]
    tools = [rw, fnm]
    print(f"fleet: {servers} servers on {args.agents} switches; pass of {corpus['datagrams_per_pass']} "
          f"datagrams, {per_dg:.2f} flow samples each; flood {args.flood_pps:,.0f} pps UDP "
          f"(1-in-1024); thresholds {THRESHOLD_PPS:,} pps on both; set up in "
          f"{time.monotonic() - t_start:.1f} s")
    print(f"rackwarden pid {rw.pid} (sFlow :{rw.sflow_port}, rcvbuf {rw_ready['rcvbuf_bytes']} B), "
          f"fastnetmon pid {fnm.pid} (sFlow :{fnm.sflow_port}, its default rcvbuf), sender pid {sender.pid}")

    # Warm-up: one pass of the fleet at a low rate, so first-sight costs (a server's detector
    # state, a source's sequence tracker, FastNetMon's first counters) fall in no step.
    sender.send({"rate": 1000.0, "seconds": args.warmup_s, "flood": None})
    sender.expect("sent_datagrams", args.warmup_s + 60)
    settle(tools)

    # Fixed cost: CPU per second with no traffic (RackWarden's 4 Hz evaluate, FastNetMon's
    # per-second recalculation over its hosts).
    c0 = [proc_cpu_s(t.pid) for t in tools]
    time.sleep(args.idle_s)
    idle = [(proc_cpu_s(t.pid) - c) / args.idle_s for t, c in zip(tools, c0, strict=True)]

    # Rising rates; one fixed server floods throughout (flood rounds use others).
    steps: dict[str, list[Step]] = {"rackwarden": [], "fastnetmon": []}
    cpu = {"rackwarden": 0.0, "fastnetmon": 0.0}
    took = {"rackwarden": 0.0, "fastnetmon": 0.0}
    rss: dict[str, list[float]] = {"rackwarden": [], "fastnetmon": []}
    rows = []
    for rate in rates:
        before = [(t.read(), t.drops(), proc_cpu_s(t.pid)) for t in tools]
        bl0 = scrape(rw.metrics_port).get("rackwarden_sflow_backlog_drops_total", 0.0)
        sender.send({"rate": rate, "seconds": args.step_s, "flood": 0, "flood_at": 0.0,
                     "flood_samples_per_s": flood_samples_per_s})
        sent = sender.expect("sent_datagrams", args.step_s + 60)
        lags = settle(tools, trace=args.trace)
        row: dict[str, Any] = {"offered": rate, "achieved": sent["sent_datagrams"] / sent["elapsed_s"],
                               "send_errors": sent["send_errors"]}
        for t, ((c_0, s_0), d0, cpu0), lag in zip(tools, before, lags, strict=True):
            (c_1, s_1), d1, cpu1 = t.read(), t.drops(), proc_cpu_s(t.pid)
            sent_n = sent["sent_datagrams"] if t.unit == "datagrams" else sent["sent_samples"]
            loss = loss_fraction(sent_n, int(c_1 - c_0))
            steps[t.name].append(Step(rate, row["achieved"], loss))
            cpu[t.name] += cpu1 - cpu0
            took[t.name] += s_1 - s_0
            rss[t.name].append(proc_rss_mb(t.pid))
            row[t.name] = {"loss": loss, "sent": sent_n, "got": int(c_1 - c_0),
                           "kernel_drops": d1 - d0, "cpu_s": cpu1 - cpu0, "lag_s": lag,
                           "samples": s_1 - s_0, "rss_mb": rss[t.name][-1]}
        row["rackwarden"]["backlog_drops"] = scrape(rw.metrics_port).get(
            "rackwarden_sflow_backlog_drops_total", 0.0) - bl0
        rows.append(row)

    # Flood rounds: a fresh flooder each round.
    rw_detect: list[float] = []
    fnm_detect: list[float] = []
    rounds = []
    for k in range(args.rounds):
        g = (k + 1) * 997 % servers or 1
        rw_child.drain()
        sender.send({"rate": args.detect_rate, "seconds": args.round_s, "flood": g, "flood_at": 1.0,
                     "flood_samples_per_s": flood_samples_per_s})
        sent = sender.expect("sent_datagrams", args.round_s + 60)
        time.sleep(0.5)
        start = sent["flood_start"]
        rw_t = next((m["t"] for m in rw_child.drain() if m.get("detect") == server_id(g)), None)
        bans = notify_bans((work / "notify.log").read_text()) if (work / "notify.log").exists() else {}
        fnm_t = bans.get(server_ip(g))
        rw_s = None if rw_t is None else float(rw_t) - start
        fnm_s = None if fnm_t is None else fnm_t - start
        if rw_s is not None:
            rw_detect.append(rw_s)
        if fnm_s is not None:
            fnm_detect.append(fnm_s)
        r = {"server": server_id(g), "ip": server_ip(g), "rackwarden_s": rw_s, "fastnetmon_s": fnm_s}
        rounds.append(r)

    # -- report ---------------------------------------------------------------------------------
    print(f"\nrates: {args.step_s:.0f} s each; loss from each tool's own counter "
          "(RackWarden datagrams, FastNetMon flow samples); kernel drops of its socket")
    print("(lag: seconds after the sender stopped until the tool's /metrics gave its final count)")
    print(f"{'offered':>8} {'achieved':>9} | {'RW loss':>8} {'kern':>7} {'backlog':>7} {'lag':>5} "
          f"{'CPU s':>6} {'RSS':>5} | {'FNM loss':>8} {'kern':>7} {'lag':>5} {'CPU s':>6} {'RSS':>5}")
    for row in rows:
        a, b = row["rackwarden"], row["fastnetmon"]
        print(f"{row['offered']:8,.0f} {row['achieved']:9,.0f} | {a['loss']:8.2%} {a['kernel_drops']:7,} "
              f"{a['backlog_drops']:7,.0f} {a['lag_s']:5.1f} {a['cpu_s']:6.2f} {a['rss_mb']:4.0f}M | "
              f"{b['loss']:8.2%} {b['kernel_drops']:7,} {b['lag_s']:5.1f} {b['cpu_s']:6.2f} {b['rss_mb']:4.0f}M")
    per_m = {n: (cpu[n] / took[n] * 1e6 if took[n] else None) for n in cpu}
    lossless = {n: lossless_rate(s) for n, s in steps.items()}
    for n, label in (("rackwarden", "RackWarden"), ("fastnetmon", "FastNetMon")):
        pm = per_m[n]
        i = 0 if n == "rackwarden" else 1
        print(f"{label:10s}: lossless (< 1 %) to {lossless[n]:,.0f} datagrams/s; "
              + (f"{pm:.2f} CPU-s per million samples ({1e6 / pm:,.0f} samples/CPU-s) " if pm else "")
              + f"over {took[n]:,.0f} samples; idle {idle[i]:.3f} CPU-s/s; RSS max {max(rss[n]):.0f} MB")
    print(f"\nflood detection delay (flood start -> action hook), {args.detect_rate:,.0f} datagrams/s "
          "background:")
    def fmt(x: Any) -> str:
        return "missed" if x is None else f"{x:.2f} s"

    for r in rounds:
        print(f"  {r['server']} ({r['ip']}): RackWarden {fmt(r['rackwarden_s'])}, "
              f"FastNetMon {fmt(r['fastnetmon_s'])}")
    rw_med, fnm_med = median_or_none(rw_detect), median_or_none(fnm_detect)
    print(f"  median: RackWarden {rw_med} s ({len(rw_detect)}/{len(rounds)}), "
          f"FastNetMon {fnm_med} s ({len(fnm_detect)}/{len(rounds)})")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores shared with other users)")
    print(json.dumps({
        "servers": servers,
        "rates_offered": rates,
        "rackwarden_lossless_datagrams_per_s": lossless["rackwarden"],
        "fastnetmon_lossless_datagrams_per_s": lossless["fastnetmon"],
        "rackwarden_loss_by_rate": {str(int(s.offered)): round(s.loss, 4) for s in steps["rackwarden"]},
        "fastnetmon_loss_by_rate": {str(int(s.offered)): round(s.loss, 4) for s in steps["fastnetmon"]},
        "achieved_by_rate": {str(int(r["offered"])): round(r["achieved"]) for r in rows},
        "rackwarden_kernel_drops_by_rate": {str(int(r["offered"])): r["rackwarden"]["kernel_drops"] for r in rows},
        "rackwarden_backlog_drops_by_rate": {str(int(r["offered"])): int(r["rackwarden"]["backlog_drops"])
                                             for r in rows},
        "rackwarden_lag_s_by_rate": {str(int(r["offered"])): round(r["rackwarden"]["lag_s"], 1) for r in rows},
        "fastnetmon_kernel_drops_by_rate": {str(int(r["offered"])): r["fastnetmon"]["kernel_drops"] for r in rows},
        "rackwarden_cpu_s_per_million_samples": None if per_m["rackwarden"] is None else round(per_m["rackwarden"], 3),
        "fastnetmon_cpu_s_per_million_samples": None if per_m["fastnetmon"] is None else round(per_m["fastnetmon"], 3),
        "rackwarden_idle_cpu_s_per_s": round(idle[0], 4),
        "fastnetmon_idle_cpu_s_per_s": round(idle[1], 4),
        "rackwarden_rss_mb": round(max(rss["rackwarden"]), 1),
        "fastnetmon_rss_mb": round(max(rss["fastnetmon"]), 1),
        "rackwarden_detect_median_s": rw_med,
        "fastnetmon_detect_median_s": fnm_med,
        "rackwarden_detect_missed": len(rounds) - len(rw_detect),
        "fastnetmon_detect_missed": len(rounds) - len(fnm_detect),
        "load_average": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
