"""Real Prometheus and Alertmanager turn the lab agent's sustained overage into a webhook call.

The rules are the shipped config/prometheus/rules.yml, with one test-only change: every `for:`
is cut to 2 s (a copy written to the test's temp dir; expressions, labels and annotations are
untouched), so a rule that needs minutes in production fires within seconds here. The
Alertmanager config is the shipped example's routing tree with each receiver replaced by a
webhook on this test's loopback receiver and group_wait cut to 1 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge
from rackwarden.agent.webauth import MetricsServer, parse_web_config

from tests.integration.test_prometheus_rules import dashboard_exprs, grafana_to_promql
from tests.lab.agentrun import AgentProcess, free_port, start_agent, write_lab_config
from tests.lab.netlab import Lab, pid_alive
from tests.lab.snmpd import start_snmpd
from tests.unit.test_webauth import _cert, _key, _write

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
LAB_ID = 31
INTERVAL_S = 1.0
WINDOW_S = 5.0
SHORT_FOR = "2s"


# --- the parts ---------------------------------------------------------------------------------

@dataclass
class Webhook:
    """Alertmanager's webhook receiver: records every POST by path."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def deliveries(self, receiver: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body in self.received if path == f"/{receiver}"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_webhook() -> Webhook:
    holder: list[Webhook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with holder[0].lock:
                holder[0].received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(server)
    holder.append(hook)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    return hook


@dataclass
class Service:
    """A server binary started by this test, stopped by its PID."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_service(name: str, argv: list[str], port: int, workdir: Path,
                  timeout_s: float = 30) -> Service:
    """Start a Prometheus-family server and wait until its /-/ready answers 200."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    svc = Service(name, proc, port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{svc.log()}")
        try:
            with urllib.request.urlopen(f"{svc.url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return svc
        except OSError:
            pass
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"{name} not ready in {timeout_s} s:\n{svc.log()}")


def short_rules(dest: Path) -> Path:
    """The shipped rules with every `for:` cut to SHORT_FOR; nothing else changes."""
    doc = yaml.safe_load((REPO / "config/prometheus/rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def prometheus_config(workdir: Path, rules: Path, scrape: list[dict[str, Any]],
                      alertmanager_port: int | None) -> Path:
    """The shipped example scrape config, at 1 s intervals, pointed at this test's parts."""
    cfg = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    cfg["rule_files"] = [str(rules)]
    if alertmanager_port is None:
        cfg.pop("alerting", None)
    else:
        cfg["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    cfg["scrape_configs"] = scrape
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_prometheus(workdir: Path, config: Path) -> Service:
    port = free_port()
    return start_service("prometheus", [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ], port, workdir)


def alertmanager_config(workdir: Path, webhook: Webhook) -> Path:
    """The shipped routing tree; every receiver becomes a webhook to /<receiver name>."""
    cfg = yaml.safe_load((REPO / "config/alertmanager/example.yml").read_text())
    cfg["global"] = {"resolve_timeout": "1m"}  # no SMTP here: e-mail receivers become webhooks
    cfg["receivers"] = [{"name": r["name"], "webhook_configs": [
        {"url": f"{webhook.url}/{r['name']}", "send_resolved": True}]} for r in cfg["receivers"]]

    def fast(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is cfg["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_alertmanager(workdir: Path, config: Path) -> Service:
    port = free_port()
    return start_service("alertmanager", [
        ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=warn",
    ], port, workdir)


def prom_query(prom: Service, expr: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_until(what: str, fn: Callable[[], Any], timeout_s: float, diag: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {timeout_s} s\n{diag()}")


def firing(hook: Webhook, receiver: str, alertname: str) -> list[dict[str, Any]]:
    return [a for body in hook.deliveries(receiver) if body["status"] == "firing"
            for a in body["alerts"]
            if a["status"] == "firing" and a["labels"].get("alertname") == alertname]


# --- the lab test ------------------------------------------------------------------------------

@pytest.mark.lab
def test_over_cap_alert_reaches_the_webhook(tmp_path: Path) -> None:
    t0 = time.monotonic()
    hook = start_webhook()
    services: list[Service] = []
    agent: AgentProcess | None = None
    lab = Lab(LAB_ID, 2, replace_stale=True).start()
    pids: list[int] = []
    timings: dict[str, float] = {}
    try:
        am = start_alertmanager(tmp_path, alertmanager_config(tmp_path, hook))
        services.append(am)
        snmp = start_snmpd(lab)
        agent_port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=INTERVAL_S, window_s=WINDOW_S, metrics_port=agent_port)
        agent = start_agent(cfg, agent_port, tmp_path / "agent.log", timeout_s=60)
        prom = start_prometheus(tmp_path, prometheus_config(
            tmp_path, short_rules(tmp_path / "rules.yml"),
            [{"job_name": "rackwarden",
              "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}],
            am.port))
        services.append(prom)
        timings["setup_s"] = time.monotonic() - t0

        def diag() -> str:
            return (f"webhook: {hook.received}\nagent:\n{agent.log()[-3000:] if agent else ''}\n"
                    f"prometheus:\n{prom.log()}\nalertmanager:\n{am.log()}")

        # srv-1 sends 15 Mbit/s against its 10 Mbit/s cap; srv-2 stays quiet.
        t_traffic = time.monotonic()
        heavy = lab.start_traffic(1, 15_000_000, 60)
        try:
            alerts = wait_until("the over-cap alert at the webhook",
                                lambda: firing(hook, "noc-email", "RackWardenServerOverCap"),
                                45, diag)
            timings["traffic_to_webhook_s"] = time.monotonic() - t_traffic
            # While the overage lasts, the dashboard's queries run on the real data.
            for _where, expr in dashboard_exprs():
                prom_query(prom, grafana_to_promql(expr))
            rate = prom_query(prom, 'rackwarden_port_rate_bps{server="srv-1",direction="outbound"}')
            # Over the cap; how close to the sent rate is test_metering_lab's business.
            assert rate and 10e6 < float(rate[0]["value"][1]) < 16e6, rate
            assert [r["metric"]["server"] for r in
                    prom_query(prom, "rackwarden_server_cap_state == 2")] == ["srv-1"]
        finally:
            sent = heavy.stop()
        assert sent["rate_bps_achieved"] > 10e6, sent

        a = alerts[0]
        assert a["labels"] == {
            "alertname": "RackWardenServerOverCap", "severity": "ticket", "job": "rackwarden",
            "instance": f"127.0.0.1:{agent_port}", "server": "srv-1", "switch": "sw1", "port": "p1",
        }
        assert re.fullmatch(r"srv-1 \(switch sw1 port p1\) has sent more than its cap for the "
                            r"whole contract window: now [0-9.]+Mbit/s against a cap of "
                            r"10Mbit/s\. The enforcement ladder \(notice, grace, shut\) is "
                            r"running for it\.",
                            a["annotations"]["description"]), a["annotations"]
        # A ticket goes to the NOC mailbox route, never to the pager; srv-2 is not alerted.
        assert hook.deliveries("noc-email")[0]["receiver"] == "noc-email"
        assert not firing(hook, "oncall-pager", "RackWardenServerOverCap")
        assert all(x["labels"]["server"] == "srv-1"
                   for x in firing(hook, "noc-email", "RackWardenServerOverCap"))

        # The agent dies: the page goes to the pager and (continue: true) to the mailbox.
        t_kill = time.monotonic()
        pids.append(agent.pid)
        os.kill(agent.pid, signal.SIGKILL)
        agent.proc.wait(timeout=10)
        instance = f"127.0.0.1:{agent_port}"

        def agent_down(receiver: str) -> list[dict[str, Any]]:
            # This target's alert. With `for` cut to 2 s, a loaded machine can also fire the
            # rule's absent(up) branch (no instance label) while Prometheus starts, before its
            # first scrape; the shipped 2m leaves that no chance.
            return [a for a in firing(hook, receiver, "RackWardenAgentDown")
                    if a["labels"].get("instance") == instance]

        down = wait_until("the agent-down page", lambda: agent_down("oncall-pager"), 30, diag)
        timings["kill_to_page_s"] = time.monotonic() - t_kill
        assert down[0]["labels"] == {"alertname": "RackWardenAgentDown", "severity": "page",
                                     "job": "rackwarden", "instance": instance}
        wait_until("the agent-down copy to the mailbox", lambda: agent_down("noc-email"), 10, diag)
    finally:
        for svc in services:
            svc.stop()
            pids.append(svc.proc.pid)
        if agent is not None:
            agent.stop()
            pids.append(agent.pid)
        pids += lab.started_pids
        lab.stop()
        hook.stop()
    timings["total_s"] = time.monotonic() - t0
    print("e2e timings:", {k: round(v, 1) for k, v in timings.items()})
    assert not any(pid_alive(p) for p in pids)


# --- Prometheus through the web auth -----------------------------------------------------------

def test_prometheus_scrapes_through_basic_auth_and_tls(tmp_path: Path) -> None:
    """The real Prometheus client against agent/webauth.py: right password up, wrong one down."""
    key = _key()
    cert = _write(tmp_path / "metrics.crt", _cert("rackwarden-test", key, server=True, ca=True))
    _write(tmp_path / "metrics.key", key=key)
    password = "scrape-me"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    wc = parse_web_config(f"tls_server_config: {{cert_file: metrics.crt, key_file: metrics.key}}\n"
                          f"basic_auth_users: {{prometheus: '{hashed}'}}\n", "web.yml", tmp_path)
    registry = CollectorRegistry()
    Gauge("rackwarden_config_reload_failed", "test", registry=registry).set(0)
    server = MetricsServer(registry, "127.0.0.1", 0, wc)
    server.start()
    (tmp_path / "good.pw").write_text(password)
    (tmp_path / "bad.pw").write_text("not-it")
    prom: Service | None = None
    try:
        def job(name: str, pw: str) -> dict[str, Any]:
            return {"job_name": name, "scheme": "https",
                    "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / pw)},
                    "tls_config": {"ca_file": str(cert)},
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}

        prom = start_prometheus(tmp_path, prometheus_config(
            tmp_path, short_rules(tmp_path / "rules.yml"),
            [job("rackwarden", "good.pw"), job("wrong-password", "bad.pw")], None))

        def ups() -> dict[str, str] | None:
            got = {r["metric"]["job"]: r["value"][1] for r in prom_query(prom, "up")}
            return got if len(got) == 2 else None

        assert wait_until("both scrapes", ups, 20, prom.log) == {"rackwarden": "1",
                                                                  "wrong-password": "0"}
        got = prom_query(prom, 'rackwarden_config_reload_failed{job="rackwarden"}')
        assert [r["value"][1] for r in got] == ["0"]
        assert prom_query(prom, 'rackwarden_config_reload_failed{job="wrong-password"}') == []
    finally:
        if prom is not None:
            prom.stop()
        server.stop()
    assert prom is not None and not pid_alive(prom.proc.pid)


@pytest.fixture(autouse=True)
def _binaries_present() -> Iterator[None]:
    # The Makefile's deps target installs these Debian packages; say so plainly if they are not.
    for b in (PROMETHEUS, ALERTMANAGER):
        assert os.access(b, os.X_OK), \
            f"{b} missing: apt-get install prometheus prometheus-alertmanager"
    yield
