"""`make demo`: the lab, the agent enforcing on it, Prometheus and Alertmanager, a story told live."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from .agentrun import (
    AgentProcess,
    free_port,
    start_agent,
    start_switch_cli,
    value,
    write_lab_config,
)
from .netlab import Lab, cleanup_stale, pid_alive
from .snmpd import start_snmpd
from .span import LabSpan

LAB_ID = 90
REPO = Path(__file__).resolve().parents[2]
STATE = Path(tempfile.gettempdir()) / "rackwarden-demo"
PIDFILE = STATE / "demo.pid"
METRICS_PORT, API_PORT, PROM_PORT, AM_PORT = 9817, 9818, 19090, 19093
A, B, C, D = 1, 2, 3, 4  # over the cap, the flooder, the late payer, the maintenance window
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def run(*argv: str, check: bool = True) -> str:
    r = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", *argv], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"rackwarden {' '.join(argv)}: {r.stdout}{r.stderr}")
    return r.stdout


LIVE: dict[str, Any] = {"agent": None, "last": 0.0}


def rates_line(agent: AgentProcess) -> str:
    """What each server sends right now, from the agent's /metrics (NaN: no valid rate this poll)."""
    m = agent.scrape()
    parts = []
    for i in (A, B, C, D):
        v = value(m, "rackwarden_port_rate_bps", server=f"srv-{i}", switch="sw1", port=f"p{i}", direction="outbound")
        st = value(m, "rackwarden_server_cap_state", server=f"srv-{i}")
        state = {0: "ok", 1: "OVER", 2: "SUSTAINED"}.get(int(st), "?") if st is not None else "-"
        rate = "   -  " if v is None or v != v else f"{v / 1e6:6.2f}"
        parts.append(f"srv-{i} {rate} {state:<9}")
    return "  live Mbit/s out: " + " | ".join(parts)


def wait(what: str, cond: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        agent = LIVE["agent"]
        if agent is not None and time.monotonic() - LIVE["last"] >= 2:
            LIVE["last"] = time.monotonic()
            print(rates_line(agent), flush=True)
        time.sleep(0.3)
    raise RuntimeError(f"the demo waited {timeout_s:g} s for {what} in vain; see {STATE}/agent.log")


def service(name: str, argv: list[str], port: int) -> subprocess.Popen[bytes]:
    log = open(STATE / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait(f"{name} to be ready", lambda: _ready(port), 60)
    return proc


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_monitoring(sink_port: int) -> list[subprocess.Popen[bytes]]:
    """Real Prometheus and Alertmanager (Debian packages) with the shipped rules and routes."""
    rules = yaml.safe_load((REPO / "config/prometheus/rules.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "5s"  # a story of a minute cannot wait the production `for:`
    (STATE / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    prom = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    prom["global"].update(scrape_interval="2s", evaluation_interval="2s", scrape_timeout="2s")
    prom["rule_files"] = [str(STATE / "rules.yml")]
    prom["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{AM_PORT}"]}]
    target = {"targets": [f"127.0.0.1:{METRICS_PORT}"]}
    prom["scrape_configs"] = [{"job_name": "rackwarden", "static_configs": [target]}]
    (STATE / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
    am = yaml.safe_load((REPO / "config/alertmanager/example.yml").read_text())
    am["global"] = {"resolve_timeout": "5m"}
    am["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"http://127.0.0.1:{sink_port}/{r['name']}"}]}
                       for r in am["receivers"]]
    am["route"]["group_wait"] = "1s"
    (STATE / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
    return [
        service("alertmanager", ["/usr/bin/prometheus-alertmanager", f"--config.file={STATE / 'alertmanager.yml'}",
                                 f"--storage.path={STATE / 'am-data'}", f"--web.listen-address=127.0.0.1:{AM_PORT}",
                                 "--cluster.listen-address="], AM_PORT),
        service("prometheus", ["/usr/bin/prometheus", f"--config.file={STATE / 'prometheus.yml'}",
                               f"--storage.tsdb.path={STATE / 'tsdb'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}",
                               "--rules.alert.resend-delay=2s"], PROM_PORT),
    ]


def start_sinks(smtp_port: int, hook_port: int) -> list[subprocess.Popen[bytes]]:
    """A mailbox for customer notices and a webhook receiver for on-call, both on loopback."""
    maildir = STATE / "maildir"
    smtp = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}",
                             "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
                            stdout=subprocess.DEVNULL, stderr=open(STATE / "smtp.log", "wb"))
    hook = subprocess.Popen([sys.executable, "-m", "tests.lab.demo", "sink", "--port", str(hook_port),
                             "--out", str(STATE / "oncall.jsonl")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(STATE / "sink.log", "wb"))
    wait("the mailbox", lambda: _port_open(smtp_port), 20)
    return [smtp, hook]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_sink(port: int, out: Path) -> int:
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with open(out, "a") as f:
                f.write(json.dumps({"path": self.path, "body": json.loads(body or b"{}")}) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    return 0


def mails() -> int:
    new = STATE / "maildir" / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def link(lab: Lab, i: int) -> str:
    return "up" if lab.link_admin_up(lab.port_name(i)) else "DOWN"


def story(lab: Lab, agent: AgentProcess, cfg: Path) -> None:
    def actions(reason: str, action: str = "shut") -> float:
        return value(agent.scrape(), "rackwarden_enforcement_actions_total", action=action, reason=reason,
                     result="applied", mode="enforce") or 0.0

    def upstream_mbps(i: int, seconds: float = 2.0) -> float:
        """What the upstream host receives from server i, measured at the sink (UDP payload bytes)."""
        def got() -> int:
            return lab.sink_stats().get(lab.server_ip(i), {"bytes": 0})["bytes"]
        before = got()
        time.sleep(seconds)
        return (got() - before) * 8 / seconds / 1e6

    LIVE["agent"] = agent  # while the story waits, the measured rates are shown every poll
    say("Story 1/4: srv-1 sends 15 Mbit/s on its 10 Mbit/s contract (R1/R2)")
    lab.start_traffic(A, 15_000_000, 60)
    lab.start_traffic(C, 4_000_000, 30)  # srv-3 busy but inside its cap
    wait("srv-1 to be over its cap", lambda: value(agent.scrape(), "rackwarden_server_cap_state", server="srv-1") == 1)
    say("  srv-1 is over its cap; the window (10 s) has to pass before it counts")
    wait("the sustained overage", lambda: value(agent.scrape(), "rackwarden_server_cap_state", server="srv-1") == 2)
    say("  sustained over the cap: RackWarden notifies the customer and starts the grace period (6 s)")
    wait("the warning e-mail", lambda: mails() >= 1, 30)
    say(f"  warning delivered to noc-1@cust-1.example ({mails()} message in the mailbox)")
    wait("the throttle of srv-1", lambda: actions("overage", "throttle") >= 1)
    say(f"  grace over, still over the cap: p1 policed to its 10 Mbit/s cap over SSH (`police`), read back;"
        f" port p1 is {link(lab, A)}, no outage, no credit")
    time.sleep(0.6)
    say(f"  srv-1 still sends 15 Mbit/s (its port counts the demand); the upstream receives"
        f" {upstream_mbps(A):.1f} Mbit/s of payload. Customer told: limited to 10 Mbit/s, not suspended")
    say("  (the shut path stays available: `enforcement.rules.overage.restrict: {overage: shut}`)")
    LIVE["agent"] = None

    say("Story 2/4: srv-2 floods the internet with 20k UDP packets/s (R6), seen on the SPAN port")
    lab.spawn(lab.server_ns(B), [sys.executable, "-m", "tests.lab.attacks", "udp-flood", "--dst", lab.upstream_ip,
                                 "--pps", "20000", "--duration", "6"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.monotonic()
    wait("the flood detection", lambda: value(agent.scrape(), "rackwarden_detections_total", detector="flood",
                                              server="srv-2"))
    say(f"  flood detected in {time.monotonic() - t:.1f} s; the customer has no contact on file (R9: unreachable)")
    wait("the shut of srv-2", lambda: actions("abuse") >= 1)
    say(f"  attack and unreachable: cut first (R9/R10), port p2 is {link(lab, B)}; evidence pcap kept")

    say("Story 3/4: billing reports srv-3's invoice two days late (R11)")
    run("suspend", "srv-3", "--reason", "nonpayment", "--note", "invoice 2026-11 unpaid", "-c", str(cfg),
        "--actor", "billing")
    say(f"  suspended by the billing system: port p3 is {link(lab, C)}; notice sent")
    time.sleep(4)
    run("restore", "srv-3", "-c", str(cfg), "--actor", "billing")
    say(f"  paid: restored, port p3 is {link(lab, C)}")

    say("Story 4/4: planned work on srv-4's line, declared with notice (R17)")
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now + timedelta(seconds=3), now + timedelta(seconds=15)
    run("maintenance", "add", "--config", str(cfg), "--start", start.isoformat(), "--end", end.isoformat(),
        "--kind", "planned", "--servers", "srv-4", "--notified-at", (now - timedelta(seconds=1)).isoformat(),
        "--reason", "patch cable replacement")
    say(f"  window {start:%H:%M:%S}..{end:%H:%M:%S} UTC declared; the technician unplugs srv-4 inside it")
    while datetime.now(UTC) < start + timedelta(seconds=2):
        time.sleep(0.2)
    subprocess.run(["ip", "-n", lab.server_ns(D), "link", "set", "eth0", "down"], check=True)
    time.sleep(6)
    subprocess.run(["ip", "-n", lab.server_ns(D), "link", "set", "eth0", "up"], check=True)
    while datetime.now(UTC) < end + timedelta(seconds=2):
        time.sleep(0.2)
    listing = run("ledger", "list", "--config", str(cfg), "--outages", "--server", "srv-4", "--format", "json")
    seqs = [json.loads(line)["seq"] for line in listing.splitlines() if line.strip()]
    for seq in seqs:
        run("ledger", "reclassify", str(seq), "--class", "maintenance", "--reason", "the declared cable work",
            "--config", str(cfg), "--by", "operator:demo")
    say(f"  the window has passed; the operator classed srv-4's outage as the planned work (ledger seq {seqs})")
    time.sleep(6)  # one more scrape and rule evaluation for the alert list


CONSOLE_LOGINS = {"operator": ("noc", "noc-demo"), "customer": ("ops@cust-1", "cust-1-demo")}


def console_logins() -> tuple[Path, Path]:
    """The demo's console operator and one customer (cust-1, srv-1's owner): demo passwords."""
    import bcrypt

    def h(password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()

    STATE.mkdir(parents=True, exist_ok=True)
    console, customers = STATE / "console-web.yml", STATE / "customers-web.yml"
    login, password = CONSOLE_LOGINS["operator"]
    console.write_text(f"basic_auth_users:\n  {login}: '{h(password)}'\n")
    login, password = CONSOLE_LOGINS["customer"]
    customers.write_text(f"customers:\n  cust-1:\n    basic_auth_users:\n      {login}: '{h(password)}'\n")
    return console, customers


def finale(cfg: Path) -> None:
    print("\n== rackwarden status ==")
    print(run("status", "-c", str(cfg)))
    print("== alerts in Alertmanager ==")
    with urllib.request.urlopen(f"http://127.0.0.1:{AM_PORT}/api/v2/alerts", timeout=5) as r:
        alerts = json.loads(r.read())
    for a in sorted(alerts, key=lambda a: a["labels"]["alertname"]):
        lab_ = a["labels"]
        print(f"  {lab_['alertname']:<34} severity={lab_.get('severity', '-'):<7} server={lab_.get('server', '-')}")
    print(f"\n  customer notices delivered: {mails()} (mailbox {STATE / 'maildir'})")
    oncall = STATE / "oncall.jsonl"
    print(f"  on-call webhook deliveries: {len(oncall.read_text().splitlines()) if oncall.exists() else 0}")
    print("\n== where to look ==")
    print(f"  metrics      http://127.0.0.1:{METRICS_PORT}/metrics")
    print(f"  Prometheus   http://127.0.0.1:{PROM_PORT}/alerts")
    print(f"  Alertmanager http://127.0.0.1:{AM_PORT}/#/alerts")
    print(f"  dashboard    {REPO / 'config/grafana/rackwarden.json'}"
          " (import into Grafana, data source = this Prometheus)")
    print(f"  evidence     {STATE / 'state' / 'evidence'}")
    (op, op_pw), (cu, cu_pw) = CONSOLE_LOGINS["operator"], CONSOLE_LOGINS["customer"]
    print(f"  console      http://127.0.0.1:{API_PORT}/login  (operator {op} / {op_pw}; ?lang=en for English)")
    print(f"  customer     http://127.0.0.1:{API_PORT}/customer/login  ({cu} / {cu_pw}: cust-1's srv-1)")
    month = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m")
    print(f"\n== SLA report {month} ==")
    print(run("report", "sla", "--month", month, "--config", str(cfg)))


def stop_demo() -> None:
    if PIDFILE.exists():
        pid = int(PIDFILE.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not pid_alive(pid):
                    break
                time.sleep(0.2)
    removed = cleanup_stale(LAB_ID)
    print(f"demo stopped; {len(removed)} stale namespaces removed")


def run_demo(stay: bool) -> int:
    if PIDFILE.exists() and pid_alive(int(PIDFILE.read_text())):
        print(f"a demo is already running (pid {PIDFILE.read_text()}): make demo-stop", file=sys.stderr)
        return 1
    cleanup_stale(LAB_ID)
    subprocess.run(["rm", "-rf", str(STATE)], check=False)
    STATE.mkdir(parents=True)
    PIDFILE.write_text(str(os.getpid()))
    procs: list[subprocess.Popen[bytes]] = []
    lab = Lab(LAB_ID, 4, replace_stale=True)
    span = None
    agent = None
    cli = None
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        say("building the lab: switch namespace (bridge br0, ports p1-p4, uplink), 4 servers, upstream")
        lab.start()
        span = LabSpan(lab, [A, B, C, D]).start()
        snmp = start_snmpd(lab)
        cli = start_switch_cli(lab, STATE / "cli")
        lab.spawn(lab.upstream_ns, [sys.executable, "-m", "tests.lab.attacks", "listeners", "--addrs",
                                    lab.upstream_ip, "--lifetime", "3600"])
        smtp_port, hook_port = free_port(), free_port()
        procs += start_sinks(smtp_port, hook_port)
        say(f"snmpd and sshd (IOS CLI emulator) on {lab.mgmt_addr}; SPAN mirrors with tc mirred;"
            " mailbox and webhook up")
        mirrors = "".join(f"      - {{switch: sw1, port: p{i}, ingress: ci{i}, egress: co{i}}}\n" for i in (A, B, C, D))
        cfg = write_lab_config(
            lab, snmp, STATE / "rackwarden.yaml", state_dir=STATE / "state", interval_s=2, window_s=10,
            metrics_port=METRICS_PORT, api_port=API_PORT, mode="enforce", cli=cli, smtp_port=smtp_port,
            webhook_url=f"http://127.0.0.1:{hook_port}/agent",
            rules="    overage: {grace_s: 6, term_s: 3600}\n    abuse: {grace_s: 30}\n",
            safety="{max_shuts_per_switch: 5, max_shuts_total: 10}",
            extra=f"detection:\n  span:\n    netns: {lab.switch_ns}\n    mirrors:\n{mirrors}")
        # srv-2's customer left no contact: a notice cannot reach it (R9).
        text = cfg.read_text().replace(" contacts: [noc-2@cust-2.example]}", " contacts: []}")
        console, customers = console_logins()
        text = text.replace(f"  api_port: {API_PORT}\n", f"  api_port: {API_PORT}\n"
                            f"  console_web_config: {console}\n  customers_web_config: {customers}\n")
        cfg.write_text(text)
        run("check-config", str(cfg))
        agent = start_agent(cfg, METRICS_PORT, STATE / "agent.log")
        procs += start_monitoring(hook_port)
        say(f"agent (pid {agent.pid}) enforcing; Prometheus :{PROM_PORT} and Alertmanager :{AM_PORT} running")
        time.sleep(4)
        story(lab, agent, cfg)
        finale(cfg)
        if stay:
            print("The demo keeps running: browse the URLs above. Ctrl-C or `make demo-stop` tears it down.")
            while not stop["now"]:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if agent is not None:
            agent.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if cli is not None:
            cli.stop()
        if span is not None:
            span.stop()
        lab.stop()
        PIDFILE.unlink(missing_ok=True)
        print("demo torn down")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo")
    p.add_argument("what", nargs="?", default="run", choices=("run", "stop", "sink"))
    p.add_argument("--stop", action="store_true", help="tear down a demo left running")
    p.add_argument("--exit", action="store_true", help="tear down right after the story (CI, scripts)")
    p.add_argument("--port", type=int)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.stop or args.what == "stop":
        stop_demo()
        return 0
    if args.what == "sink":
        return run_sink(args.port, args.out)
    return run_demo(stay=not args.exit and os.environ.get("DEMO_EXIT") != "1")


if __name__ == "__main__":
    sys.exit(main())
