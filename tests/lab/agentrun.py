"""Runs the real `rackwarden` daemon against a lab: writes its config, starts it by PID, scrapes /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from .netlab import Lab, pid_alive
from .snmpd import SnmpAgent
from .sshd import SshdHandle, start_sshd

EMULATOR = Path(__file__).resolve().parent / "cli_emulator.py"


# Per emulator flavour: the vendor module the agent drives, the CLI name of port p{i}, the uplink's.
FLAVOURS: dict[str, tuple[str, str, str]] = {
    "ios": ("cisco_ios", "GigabitEthernet0/{i}", "TenGigabitEthernet0/1"),
    "vrp": ("huawei", "GigabitEthernet0/0/{i}", "XGigabitEthernet0/0/1"),
    "comware": ("hp_comware", "GigabitEthernet1/0/{i}", "Ten-GigabitEthernet1/0/25"),
}


def cli_name(i: int, flavour: str = "ios") -> str:
    """The lab switch's CLI name for port p{i} in the flavour's spelling, as netmiko expects."""
    return FLAVOURS[flavour][1].format(i=i)


@dataclass
class SwitchCli:
    """A real OpenSSH server in the switch namespace whose login shell is the vendor-CLI emulator."""

    sshd: SshdHandle
    map_path: Path
    base_map: dict[str, object]
    known_hosts: Path
    flavour: str = "ios"

    def set_faults(self, **faults: float) -> None:
        """Test-only faults the emulator reads at each login (reject_shutdown, drop_after_shutdown)."""
        self.map_path.write_text(json.dumps({**self.base_map, "faults": faults}))

    @property
    def pid(self) -> int:
        return self.sshd.pid

    def stop(self) -> None:
        self.sshd.stop()


def start_switch_cli(lab: Lab, workdir: Path, flavour: str = "ios", port: int = 22) -> SwitchCli:
    workdir.mkdir(parents=True, exist_ok=True)
    base_map: dict[str, object] = {
        "hostname": "sw1",
        "interfaces": {cli_name(i, flavour): lab.port_name(i) for i in range(1, lab.n_servers + 1)}
        | {FLAVOURS[flavour][2]: lab.uplink_port},
        "login_privileged": True,
        "startup_file": str(workdir / "startup.json"),
        "log_file": str(workdir / "cli.log"),
    }
    map_path = workdir / "map.json"
    map_path.write_text(json.dumps(base_map))
    handle = start_sshd(lab.switch_ns, lab.mgmt_addr, port, workdir,
                        [sys.executable, "-I", "-S", str(EMULATOR), "--flavour", flavour, "--map", str(map_path)])
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(handle.known_hosts_line())
    return SwitchCli(handle, map_path, base_map, known_hosts, flavour)


class WebhookSink:
    """An on-call webhook receiver on loopback that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.events: list[dict[str, object]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.events.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_lab_config(
    lab: Lab,
    snmp: SnmpAgent,
    path: Path,
    *,
    state_dir: Path,
    interval_s: float = 2.0,
    window_s: float = 10.0,
    cap_mbps: float = 10.0,
    mode: str = "notify",
    snmp_version: str = "3",
    metrics_port: int = 9817,
    n_servers: int | None = None,
    cli: SwitchCli | None = None,
    api_port: int | None = None,
    smtp_port: int | None = None,
    extra: str = "",
    rules: str = "",
    safety: str = "",
    webhook_url: str | None = None,
) -> Path:
    """An inventory for the lab: switch sw1 at the lab's management address, one server per port."""
    n = n_servers or lab.n_servers
    if snmp_version == "3":
        auth = (f'{{version: "3", user: {snmp.v3_user}, auth_protocol: sha, auth_key: "{snmp.v3_auth_key}",'
                f' priv_protocol: aes, priv_key: "{snmp.v3_priv_key}"}}')
    else:
        auth = f'{{version: "2c", community: "{snmp.community}"}}'
    servers = "\n".join(
        f"  - {{id: srv-{i}, customer: cust-{i}, switch: sw1, port: {lab.port_name(i)},"
        f" ips: [{lab.server_ip(i)}], template: rental, monthly_fee_fen: 80000,"
        f" contacts: [noc-{i}@cust-{i}.example]}}"
        for i in range(1, n + 1)
    )
    ssh = ""
    if cli is not None:
        names = ", ".join(f"{lab.port_name(i)}: {cli_name(i, cli.flavour)}" for i in range(1, lab.n_servers + 1))
        ssh = (f"    ssh: {{username: root, port: {cli.sshd.port}, key_file: {cli.sshd.client_key},"
               f" known_hosts: {cli.known_hosts}, timeout_s: 10}}\n"
               f"    cli_names: {{{names}, {lab.uplink_port}: {FLAVOURS[cli.flavour][2]}}}\n")
    notify = ""
    if smtp_port is not None or webhook_url is not None:
        notify = "notify:\n  operator_contact: \"NOC +86 592 0000 0000\"\n"
    if smtp_port is not None:
        notify += f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, from: noc@idc.example}}\n"
    if webhook_url is not None:
        notify += f"  webhook_url: {webhook_url}\n"
    enforcement = ""
    if rules or safety:
        enforcement = "enforcement:\n" + (f"  rules:\n{rules}" if rules else "") + (
            f"  safety: {safety}\n" if safety else "")
    path.write_text(f"""\
# Generated for lab {lab.lab_id}: short interval and window so a test sees a sustained overage.
version: 1
agent:
  state_dir: {state_dir}
  mode: {mode}
  metrics_listen: 127.0.0.1
  metrics_port: {metrics_port}
  record_polls: true
  max_gap_s: {max(30.0, interval_s * 5)}
  api_port: {api_port if api_port is not None else free_port()}
{notify}{enforcement}{extra}
templates:
  rental: {{cap_mbps: {cap_mbps}, window_s: {window_s}, direction: out, credit: rental}}
switches:
  sw1:
    address: {snmp.host}
    vendor: {FLAVOURS[cli.flavour][0] if cli is not None else "cisco_ios"}
    snmp: {auth}
    snmp_port: {snmp.port}
    interval_s: {interval_s}
    timeout_s: 1
    retries: 1
    port_speed_mbps: 100
    ports: [{", ".join(lab.port_name(i) for i in range(1, lab.n_servers + 1))}, {lab.uplink_port}]
    protected_ports: [{lab.uplink_port}]
{ssh}servers:
{servers}
""")
    return path


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Read /metrics over HTTP exactly as Prometheus would."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scrape(self) -> Samples:
        return scrape(self.metrics_port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return int(self.proc.returncode)


def start_agent(config: Path, metrics_port: int, log_path: Path, timeout_s: float = 60.0) -> AgentProcess:
    """Start `rackwarden run` and return once /metrics answers.

    A wait, not a timing claim: with `make test` running files side by side on two cores, the
    agent's imports alone can take tens of seconds; a healthy start returns at once.
    """
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rackwarden.agent.cli", "run", "-c", str(config)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    agent = AgentProcess(proc, metrics_port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}:\n{agent.log()}")
        try:
            agent.scrape()
            return agent
        except OSError:
            time.sleep(0.2)
    agent.stop()
    raise RuntimeError(f"agent /metrics did not answer in {timeout_s} s:\n{agent.log()}")


T = TypeVar("T")


class Rig:
    """What one lab test started: stopped in reverse order in one place, every PID checked gone."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], object]] = []
        self._pids: list[Callable[[], list[int]]] = []

    def lab(self, lab: Lab) -> Lab:
        lab.start()
        self._stops.append(lab.stop)
        self._pids.append(lambda: list(lab.started_pids))
        return lab

    def add(self, thing: T) -> T:
        """Anything with stop() (and a pid, if it is a process of ours)."""
        self._stops.append(thing.stop)  # type: ignore[attr-defined]
        if hasattr(thing, "pid"):
            self._pids.append(lambda: [thing.pid])  # type: ignore[attr-defined]
        return thing

    def track(self, pid: int) -> None:
        """A process the test started itself and must have ended by the end."""
        self._pids.append(lambda: [pid])

    def close(self) -> list[int]:
        pids = [p for source in self._pids for p in source()]  # before stop() forgets them
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as e:  # keep stopping the rest; the PID check below still judges
                print(f"teardown: {stop!r} raised {e!r}")
        return pids


@contextmanager
def lab_rig() -> Iterator[Rig]:
    rig = Rig()
    try:
        yield rig
    except BaseException:
        rig.close()
        raise
    left = [p for p in rig.close() if pid_alive(p)]
    assert not left, f"processes left running: {left}"

