"""A lab data centre in network namespaces: a bridged switch, N servers, an upstream, mgmt."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

# The repo root, so child Pythons started inside namespaces can import `tests.lab`.
REPO_ROOT = Path(__file__).resolve().parents[2]

SINK_PORT = 9  # discard; the upstream runs a counting sink here so no ICMP unreachables flow


class LabError(RuntimeError):
    """A lab step failed; the message names the command and what it printed."""


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20.0) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc.stdout


def _netns_list() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).strip()
    if not out:
        return []
    return [str(entry["name"]) for entry in json.loads(out)]


def _kill_pid(pid: int, grace_s: float = 2.0) -> None:
    """SIGTERM one PID, then SIGKILL it if it outlives the grace period."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _pid_alive(pid: int) -> bool:
    try:
        # A zombie still answers kill(0); it is gone for our purposes once /proc says Z.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return _pid_alive(pid)


def lab_prefix(lab_id: int) -> str:
    """Namespace name prefix for one lab id; the trailing dash keeps rw1- apart from rw10-."""
    return f"rw{lab_id}-"


def cleanup_stale(lab_id: int) -> list[str]:
    """Remove namespaces (and the processes inside them) left by a crashed run of this lab id."""
    _check_lab_id(lab_id)
    prefix = lab_prefix(lab_id)
    removed: list[str] = []
    for ns in _netns_list():
        if not ns.startswith(prefix):
            continue
        # A netns outlives `ip netns del` while any process still lives in it, so end those
        # first, each by its own PID.
        pids = _run(["ip", "netns", "pids", ns], check=False).split()
        for pid in pids:
            if pid.isdigit() and int(pid) != os.getpid():
                _kill_pid(int(pid))
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    mgmt_if = f"rw{lab_id}m"
    if Path(f"/sys/class/net/{mgmt_if}").exists():
        _run(["ip", "link", "del", mgmt_if], check=False)
        removed.append(mgmt_if)
    return removed


def _check_lab_id(lab_id: int) -> None:
    if not 0 <= lab_id <= 200:
        raise ValueError(f"lab_id must be 0..200 (it becomes an IPv4 octet), got {lab_id}")


@dataclass(frozen=True)
class PortCounters:
    """Kernel byte/packet counters of one switch port, as the switch sees them."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


class TrafficRun:
    """One running rate-paced sender; `wait()` returns its JSON summary."""

    def __init__(self, proc: subprocess.Popen[str], server: int) -> None:
        self.proc = proc
        self.server = server
        self._result: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if self._result is not None:
            return self._result
        out, err = self.proc.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise LabError(
                f"traffic sender for server {self.server} failed "
                f"(rc={self.proc.returncode}): {err.strip() or out.strip()}"
            )
        self._result = json.loads(lines[-1])
        return self._result

    def stop(self) -> dict[str, Any]:
        """End the sender early; it still prints its summary on SIGTERM."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_pid(self.proc.pid, grace_s=0)
            self.proc.wait()
            raise


class Lab:
    """The lab data centre; build with `start()` (or `with Lab(...)`), tear down with `stop()`."""

    def __init__(self, lab_id: int, n_servers: int, *, replace_stale: bool = False) -> None:
        _check_lab_id(lab_id)
        if not 1 <= n_servers <= 200:
            raise ValueError(f"n_servers must be 1..200, got {n_servers}")
        self.lab_id = lab_id
        self.n_servers = n_servers
        self.replace_stale = replace_stale
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._started_pids: list[int] = []
        self._workdir: Path | None = None
        self._sink: subprocess.Popen[str] | None = None
        self._started = False
        self._stopped = False

    # ---- names and addresses -------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return lab_prefix(self.lab_id)

    @property
    def switch_ns(self) -> str:
        return f"rw{self.lab_id}-sw"

    @property
    def upstream_ns(self) -> str:
        return f"rw{self.lab_id}-up"

    def server_ns(self, i: int) -> str:
        self._check_server(i)
        return f"rw{self.lab_id}-s{i}"

    def server_ip(self, i: int) -> str:
        self._check_server(i)
        return f"198.19.{self.lab_id}.{10 + i}"

    def port_name(self, i: int) -> str:
        self._check_server(i)
        return f"p{i}"

    @property
    def uplink_port(self) -> str:
        return "uplink"

    @property
    def upstream_ip(self) -> str:
        return f"198.19.{self.lab_id}.1"

    @property
    def lan_prefix_len(self) -> int:
        return 24

    @property
    def mgmt_addr(self) -> str:
        """The switch's management address, reachable from the root namespace."""
        return f"198.18.{self.lab_id}.2"

    @property
    def noc_addr(self) -> str:
        """The root namespace end of the management link (where the NOC agent sits)."""
        return f"198.18.{self.lab_id}.1"

    @property
    def mgmt_if_root(self) -> str:
        return f"rw{self.lab_id}m"

    @property
    def mgmt_if_switch(self) -> str:
        return "mgmt"

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    @property
    def started_pids(self) -> list[int]:
        """Every PID this lab started, including ones already ended."""
        return list(self._started_pids)

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("lab not started")
        return self._workdir

    def _check_server(self, i: int) -> None:
        if not 1 <= i <= self.n_servers:
            raise ValueError(f"server index must be 1..{self.n_servers}, got {i}")

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Lab:
        if self._started:
            raise LabError("lab already started; a Lab object is single-use")
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces); run the tests as root")
        self._started = True
        atexit.register(self.stop)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        existing = [ns for ns in _netns_list() if ns.startswith(self.prefix)]
        if existing or Path(f"/sys/class/net/{self.mgmt_if_root}").exists():
            if not self.replace_stale:
                raise LabError(
                    f"lab {self.lab_id} leftovers exist ({existing or self.mgmt_if_root}); "
                    f"call tests.lab.netlab.cleanup_stale({self.lab_id}) or pass "
                    "replace_stale=True"
                )
            cleanup_stale(self.lab_id)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"rwlab{self.lab_id}-"))

        ns_all = [self.switch_ns, self.upstream_ns] + [
            self.server_ns(i) for i in range(1, self.n_servers + 1)
        ]
        for ns in ns_all:
            _run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            # No IPv6: router solicitations, MLD and DAD would add frames to the port counters
            # that the rate assertions would have to tolerate.
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            self._sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

        sw = self.switch_ns
        batch = [
            "link add br0 type bridge stp_state 0",
            # Veths are created straight inside their namespaces, so no temporary name ever
            # appears in the root namespace where another lab could collide with it.
            f"link add {self.uplink_port} type veth peer name eth0 netns {self.upstream_ns}",
            f"link set {self.uplink_port} master br0",
        ]
        for i in range(1, self.n_servers + 1):
            p = self.port_name(i)
            batch.append(f"link add {p} type veth peer name eth0 netns {self.server_ns(i)}")
            batch.append(f"link set {p} master br0")
        for i in range(1, self.n_servers + 1):
            batch.append(f"link set {self.port_name(i)} up")
        batch += [f"link set {self.uplink_port} up", "link set br0 up"]
        self._ip_batch(sw, batch)

        # Management link: root end in the root namespace, the other end inside the switch.
        _run(["ip", "link", "add", self.mgmt_if_root, "type", "veth", "peer", "name",
              self.mgmt_if_switch, "netns", sw])
        _run(["ip", "addr", "add", f"{self.noc_addr}/30", "dev", self.mgmt_if_root])
        _run(["ip", "link", "set", self.mgmt_if_root, "up"])
        self._ip_batch(sw, [
            f"addr add {self.mgmt_addr}/30 dev {self.mgmt_if_switch}",
            f"link set {self.mgmt_if_switch} up",
        ])

        self._ip_batch(self.upstream_ns, [
            f"addr add {self.upstream_ip}/{self.lan_prefix_len} dev eth0",
            "link set eth0 up",
        ])
        for i in range(1, self.n_servers + 1):
            self._ip_batch(self.server_ns(i), [
                f"addr add {self.server_ip(i)}/{self.lan_prefix_len} dev eth0",
                "link set eth0 up",
                f"route add default via {self.upstream_ip}",
            ])
        self._start_sink()

    def _start_sink(self) -> None:
        stats = self.workdir / "sink.json"
        self._sink = self.spawn(
            self.upstream_ns,
            [sys.executable, "-m", "tests.lab.traffic", "sink", "--bind", self.upstream_ip,
             "--port", str(SINK_PORT), "--stats-file", str(stats)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 10
        while not stats.exists():
            if self._sink.poll() is not None:
                _out, err = self._sink.communicate()
                raise LabError(f"UDP sink in {self.upstream_ns} died: {err.strip()}")
            if time.monotonic() > deadline:
                raise LabError(f"UDP sink in {self.upstream_ns} did not start within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill what the lab started (by PID) and delete its namespaces; safe to call twice."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        try:
            atexit.unregister(self.stop)
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn atexit down
            pass
        errors: list[str] = []
        for proc in reversed(self._procs):
            if proc.poll() is None:
                _kill_pid(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                errors.append(f"pid {proc.pid} did not exit")
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
        for ns in reversed(self._namespaces):
            # Anything else that wandered into our namespaces (e.g. a helper a test spawned
            # with plain `ip netns exec`) would keep the namespace alive; end it by PID.
            for pid in _run(["ip", "netns", "pids", ns], check=False).split():
                if pid.isdigit() and int(pid) != os.getpid():
                    _kill_pid(int(pid))
            out = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if out.returncode != 0:
                errors.append(f"netns del {ns}: {out.stderr.strip()}")
        self._namespaces.clear()
        # Deleting the switch namespace destroys the mgmt veth pair; this is only a backstop.
        if Path(f"/sys/class/net/{self.mgmt_if_root}").exists():
            subprocess.run(["ip", "link", "del", self.mgmt_if_root], capture_output=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if errors:
            raise LabError("lab stop incomplete: " + "; ".join(errors))

    # ---- helpers -------------------------------------------------------------------------

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])

    def _ip_batch(self, ns: str, commands: list[str]) -> None:
        proc = subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n",
            capture_output=True, text=True, timeout=20, check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"ip -n {ns} -batch failed: {proc.stderr.strip()}\n"
                           + "\n".join(commands))

    def exec(
        self, ns: str, argv: Sequence[str], **popen_kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run argv to completion inside namespace `ns` (kwargs go to subprocess.run)."""
        self._check_ns(ns)
        popen_kw.setdefault("capture_output", True)
        popen_kw.setdefault("text", True)
        popen_kw.setdefault("timeout", 30)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **popen_kw)

    def spawn(self, ns: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start argv in namespace `ns`; the lab kills it by PID on stop()."""
        self._check_ns(ns)
        env = dict(popen_kw.pop("env", None) or os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        popen_kw.setdefault("cwd", str(REPO_ROOT))
        # `ip netns exec` execs the command, so the PID we get is the real process, and its own
        # session keeps a Ctrl-C on the test run from racing our ordered shutdown.
        popen_kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], env=env, **popen_kw
        )
        self._procs.append(proc)
        self._started_pids.append(proc.pid)
        return proc

    def _check_ns(self, ns: str) -> None:
        if ns not in self._namespaces:
            raise LabError(f"{ns!r} is not a namespace of this lab ({self._namespaces})")

    def _read_sys(self, ns: str, paths: list[str]) -> list[str]:
        proc = self.exec(ns, ["cat", *paths])
        if proc.returncode != 0:
            raise LabError(f"reading {paths} in {ns}: {proc.stderr.strip()}")
        return str(proc.stdout).split()

    def if_index(self, port_name: str, ns: str | None = None) -> int:
        return int(self._read_sys(ns or self.switch_ns, [f"/sys/class/net/{port_name}/ifindex"])[0])

    def link_admin_up(self, port: str, ns: str | None = None) -> bool:
        flags = int(self._read_sys(ns or self.switch_ns, [f"/sys/class/net/{port}/flags"])[0], 16)
        return bool(flags & 0x1)  # IFF_UP is the administrative state

    def set_link(self, port: str, up: bool, ns: str | None = None) -> None:
        """Set a port administratively up or down (what a switch `shutdown` does)."""
        _run(["ip", "-n", ns or self.switch_ns, "link", "set", port, "up" if up else "down"])

    def port_counters(self, port: str, ns: str | None = None) -> PortCounters:
        base = f"/sys/class/net/{port}/statistics/"
        vals = self._read_sys(
            ns or self.switch_ns,
            [base + n for n in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")],
        )
        return PortCounters(*(int(v) for v in vals))

    # ---- traffic -------------------------------------------------------------------------

    def start_traffic(
        self,
        i: int,
        rate_bps: int,
        duration_s: float,
        frame_bytes: int = 1400,
        *,
        dst: str | None = None,
        port: int = SINK_PORT,
    ) -> TrafficRun:
        """Start a paced UDP sender in server i's namespace towards the upstream sink."""
        proc = self.spawn(
            self.server_ns(i),
            [sys.executable, "-m", "tests.lab.traffic", "udp", "--dst", dst or self.upstream_ip,
             "--port", str(port), "--rate-bps", str(rate_bps), "--duration-s", str(duration_s),
             "--frame-bytes", str(frame_bytes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        return TrafficRun(proc, i)

    def sink_stats(self) -> dict[str, dict[str, int]]:
        """Packets/bytes the upstream sink has received, per source address."""
        path = self.workdir / "sink.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return {src: {"packets": int(v["packets"]), "bytes": int(v["bytes"])}
                for src, v in data["sources"].items()}

    def sink_received(self, src: str) -> int:
        """Datagrams the upstream has received from `src` so far (the sink flushes every 50 ms)."""
        return self.sink_stats().get(src, {"packets": 0})["packets"]
