"""systemd unit: systemd-analyze verify and security, sd_notify from the daemon, install.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.agentrun import free_port, scrape, value

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
SPAN_DROPIN = REPO / "systemd" / "rackwarden-span.conf"
# The venv running the tests: its console script stands in for /opt/rackwarden/venv.
VENV = Path(sys.executable).parent.parent
EXPOSURE_LIMIT = 2.0  # "OK" in systemd-analyze's words is below 4.9; this unit aims far lower


def _run(argv: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=timeout, **kw)


def render_unit(folder: Path, confdir: Path, *, span: bool = False, venv: Path = VENV) -> Path:
    """The unit as install.sh writes it, with ExecStart on this checkout's venv."""
    r = _run(["bash", str(INSTALL), "--render-unit", "--venv", str(venv),
              "--confdir", str(confdir)])
    assert r.returncode == 0, r.stderr
    folder.mkdir(parents=True, exist_ok=True)
    unit = folder / "rackwarden.service"
    unit.write_text(r.stdout)
    if span:
        (folder / "rackwarden.service.d").mkdir(exist_ok=True)
        shutil.copy(SPAN_DROPIN, folder / "rackwarden.service.d" / "span.conf")
    return unit


def unit_settings(*files: Path) -> dict[str, list[str]]:
    """Section.Key -> values in file order, the way systemd reads a unit and its drop-ins."""
    out: dict[str, list[str]] = {}
    for f in files:
        section = ""
        for raw in f.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, val = line.partition("=")
            out.setdefault(f"{section}.{key.strip()}", []).append(val.strip())
    return out


def exec_argv(line: str, env: dict[str, str]) -> list[str]:
    """An Exec*= line as systemd runs it: `$VAR` splits into words, `${VAR}` stays one."""
    argv: list[str] = []
    for word in line.split():
        if m := re.fullmatch(r"\$\{(\w+)\}", word):
            argv.append(env.get(m[1], ""))
        elif m := re.fullmatch(r"\$(\w+)", word):
            argv.extend(env.get(m[1], "").split())
        else:
            argv.append(word)
    return argv


def verify(unit: Path) -> list[str]:
    """systemd-analyze verify; returns the lines that concern our unit (there must be none)."""
    r = _run(["systemd-analyze", "verify", str(unit)])
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    ours = [ln for ln in lines if "rackwarden" in ln]
    assert r.returncode == 0, "\n".join(lines)
    return ours


def exposure(unit: Path) -> float:
    """systemd-analyze security --offline=true: works on a unit file without a running systemd."""
    r = _run(["systemd-analyze", "security", "--offline=true", str(unit)])
    m = re.search(r"Overall exposure level for rackwarden\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m[1])


# --- the unit itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("span", [False, True], ids=["base", "span-dropin"])
def test_unit_verifies_without_warnings(tmp_path: Path, span: bool) -> None:
    unit = render_unit(tmp_path / "unit", tmp_path / "etc", span=span)
    assert verify(unit) == []


def test_unit_settings_are_the_ones_the_issue_asks_for(tmp_path: Path) -> None:
    unit = render_unit(tmp_path / "unit", tmp_path / "etc")
    s = unit_settings(unit)
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.WatchdogSec"] == "60s"
    assert one["Service.ExecStartPre"] == (f"{VENV}/bin/rackwarden check-config --require-credentials "
                                           f"{tmp_path / 'etc'}/rackwarden.yaml")
    assert one["Service.ExecStart"].startswith(f"{VENV}/bin/rackwarden run -c ")
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Service.StateDirectory"] == "rackwarden"
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                      "PrivateTmp": "yes", "DynamicUser": "yes", "CapabilityBoundingSet": "",
                      "AmbientCapabilities": "",
                      "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert one[f"Service.{key}"] == want, key
    assert "@system-service" in s["Service.SystemCallFilter"]
    # Without the SPAN drop-in there is no raw packet access at all.
    values = " ".join(v for vals in s.values() for v in vals)
    assert "CAP_NET_RAW" not in values and "AF_PACKET" not in values
    span = unit_settings(unit, SPAN_DROPIN)
    assert span["Service.CapabilityBoundingSet"][-1] == "CAP_NET_RAW"
    assert "AF_PACKET" in span["Service.RestrictAddressFamilies"][-1]
    assert span["Service.PrivateUsers"][-1] == "no"


def test_security_exposure_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = exposure(render_unit(tmp_path / "base", tmp_path / "etc"))
    span = exposure(render_unit(tmp_path / "span", tmp_path / "etc", span=True))
    with capsys.disabled():
        print(f"\nsystemd-analyze security exposure: rackwarden.service {base:.1f}, "
              f"with the SPAN drop-in {span:.1f}")
    assert base <= EXPOSURE_LIMIT
    assert base <= span <= EXPOSURE_LIMIT + 0.5


def test_exec_start_pre_refuses_a_bad_config(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    unit = render_unit(tmp_path / "unit", etc)
    pre = exec_argv(unit_settings(unit)["Service.ExecStartPre"][0], {})
    (etc / "rackwarden.yaml").write_text(_config_text(tmp_path, free_port(), free_port()))
    ok = _run(pre, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    (etc / "rackwarden.yaml").write_text(_config_text(tmp_path, 1, 2) + "bogus_key: 1\n")
    bad = _run(pre, timeout=60)
    assert bad.returncode != 0
    assert re.search(r"rackwarden\.yaml:\d+ bogus_key: unknown key", bad.stderr), bad.stderr


# --- the daemon under a fake service manager ---------------------------------------------------

def _config_text(tmp_path: Path, metrics_port: int, api_port: int) -> str:
    """The replay fixture with its own state dir and ports; its SNMP target answers nothing."""
    text = (REPO / "tests" / "fixtures" / "replay" / "lab.yaml").read_text()
    agent = (f"  state_dir: {tmp_path / 'state'}\n"
             f"  metrics_port: {metrics_port}\n"
             f"  api_port: {api_port}\n")
    new = re.sub(r"^  state_dir: .*\n", agent, text, count=1, flags=re.M)
    assert new != text
    return new


@dataclass
class Notification:
    pid: int
    fields: dict[str, str]


class FakeNotifySocket:
    """What systemd listens on: a datagram socket that also tells who sent each message."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        # SCM_CREDENTIALS lets us check the sender is the main PID, as NotifyAccess=main does.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.seen: list[Notification] = []

    def recv(self, timeout: float) -> Notification | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        n = Notification(pid, fields)
        self.seen.append(n)
        return n

    def wait_for(self, key: str, val: str, timeout: float) -> Notification:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            n = self.recv(left)
            if n is not None and n.fields.get(key) == val:
                return n
        seen = [n.fields for n in self.seen]
        raise AssertionError(f"no {key}={val} within {timeout} s; got {seen}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[FakeNotifySocket]:
    s = FakeNotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_daemon_ready_watchdog_reload_and_stop_under_fake_systemd(
        tmp_path: Path, notify_socket: FakeNotifySocket) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    unit = render_unit(tmp_path / "unit", etc)
    s = unit_settings(unit)
    metrics_port, api_port = free_port(), free_port()
    good = _config_text(tmp_path, metrics_port, api_port)
    (etc / "rackwarden.yaml").write_text(good)
    watchdog_usec = 400_000
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path),
           "WATCHDOG_USEC": str(watchdog_usec), "RACKWARDEN_ARGS": ""}
    env.pop("WATCHDOG_PID", None)
    argv = exec_argv(s["Service.ExecStart"][0], env)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.monotonic()
        ready = notify_socket.wait_for("READY", "1", timeout=60)
        ready_s = time.monotonic() - t0
        assert ready.pid == proc.pid, "READY must come from the main process (NotifyAccess=main)"
        # READY means ready: the metrics answer at once.
        assert value(scrape(metrics_port), "rackwarden_config_reload_failed") == 0

        # Pings at half of WATCHDOG_USEC, from the main process.
        t1 = time.monotonic()
        pings = [notify_socket.wait_for("WATCHDOG", "1", timeout=2) for _ in range(4)]
        per_ping = (time.monotonic() - t1) / 4
        assert all(p.pid == proc.pid for p in pings)
        assert per_ping < watchdog_usec / 1e6, f"pings every {per_ping:.2f} s: would be killed"

        # ExecReload with a broken file: refused, the old config keeps running.
        reload_argv = exec_argv(s["Service.ExecReload"][0], {"MAINPID": str(proc.pid)})
        (etc / "rackwarden.yaml").write_text(good + "bogus_key: 1\n")
        assert _run(reload_argv).returncode == 0
        notify_socket.wait_for("RELOADING", "1", timeout=10)
        notify_socket.wait_for("READY", "1", timeout=10)
        assert value(scrape(metrics_port), "rackwarden_config_reload_failed") == 1
        assert proc.poll() is None
        notify_socket.wait_for("WATCHDOG", "1", timeout=2)  # still alive and pinging

        # A good file that switches to enforce: the running enforcer takes it (its own status).
        def mode() -> str:
            out = _run([sys.executable, "-m", "rackwarden.agent.cli", "status", "--json", "-c",
                        str(etc / "rackwarden.yaml")])
            assert out.returncode == 0, out.stderr
            return str(json.loads(out.stdout)["mode"])

        (etc / "rackwarden.yaml").write_text(good)
        assert mode() == "notify"
        (etc / "rackwarden.yaml").write_text(good.replace("  metrics_port:", "  mode: enforce\n  metrics_port:"))
        assert _run(reload_argv).returncode == 0
        notify_socket.wait_for("RELOADING", "1", timeout=10)
        notify_socket.wait_for("READY", "1", timeout=10)
        assert value(scrape(metrics_port), "rackwarden_config_reload_failed") == 0
        assert mode() == "enforce"

        # systemctl stop: SIGTERM, STOPPING=1, a clean exit well inside TimeoutStopSec.
        t2 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        notify_socket.wait_for("STOPPING", "1", timeout=10)
        rc = proc.wait(timeout=30)
        stop_s = time.monotonic() - t2
        assert rc == 0, log_path.read_text()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
        print(f"READY after {ready_s:.2f} s, watchdog every {per_ping:.2f} s, "
              f"stop in {stop_s:.2f} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --- install.sh --------------------------------------------------------------------------------

def _outside_state() -> dict[str, float | None]:
    """What a DESTDIR install must leave alone on the real system."""
    out: dict[str, float | None] = {}
    for p in ("/opt/rackwarden", "/etc/rackwarden", "/etc/systemd/system/rackwarden.service",
              "/etc/systemd/system/rackwarden.service.d", "/var/lib/rackwarden"):
        try:
            out[p] = os.lstat(p).st_mtime
        except FileNotFoundError:
            out[p] = None
    return out


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _installed_python_env() -> dict[str, str]:
    """The staged venv holds only rackwarden (installed offline with --no-deps); its
    dependencies come from the test venv's site-packages, which has no `rackwarden` folder."""
    purelib = sysconfig.get_paths()["purelib"]
    assert not (Path(purelib) / "rackwarden").exists()
    return {**os.environ, "PYTHONPATH": purelib}


def test_install_sh_into_a_destdir(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    before = _outside_state()
    # Offline: the wheel is built by the test venv's setuptools, dependencies are not fetched.
    offline = ["--build-python", sys.executable,
               "--pip-args", "--no-index --no-deps --no-build-isolation"]
    t0 = time.monotonic()
    first = _run(["bash", str(INSTALL), "--destdir", str(dest), "--span", *offline], timeout=300)
    install_s = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr

    venv = dest / "opt/rackwarden/venv"
    etc = dest / "etc/rackwarden"
    units = dest / "etc/systemd/system"
    script = venv / "bin/rackwarden"
    assert os.access(script, os.X_OK)
    assert script.read_text().splitlines()[0] == f"#!{venv}/bin/python"
    env = _installed_python_env()
    where = _run([str(venv / "bin/python"), "-c",
                  "import rackwarden.agent.cli as c, rackwarden.policies.cap as p;"
                  " print(c.__file__); print(p.__file__)"], env=env)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
    # The staged copy runs: check-config on the replay fixture.
    chk = _run([str(script), "check-config", str(REPO / "tests/fixtures/replay/lab.yaml")], env=env)
    assert chk.returncode == 0 and "OK" in chk.stdout, chk.stdout + chk.stderr

    # Config: the example, readable by the dynamic user; credentials for root only.
    assert (etc / "rackwarden.yaml").read_text() == (REPO / "config/example.yaml").read_text()
    assert _mode(etc / "rackwarden.yaml") == 0o644
    assert (etc / "rackwarden.env").read_text() == (REPO / "systemd/rackwarden.env").read_text()
    assert _mode(etc / "credentials") == 0o700
    # The unit carries the final paths, not the staging ones.
    unit_text = (units / "rackwarden.service").read_text()
    assert str(dest) not in unit_text
    assert "ExecStart=/opt/rackwarden/venv/bin/rackwarden run -c /etc/rackwarden/rackwarden.yaml" \
        in unit_text
    rendered = _run(["bash", str(INSTALL), "--render-unit"]).stdout
    assert unit_text == rendered
    assert (units / "rackwarden.service.d/span.conf").read_text() == SPAN_DROPIN.read_text()
    assert not (units / "rackwarden.service.d/credentials.conf").exists()
    share = dest / "opt/rackwarden/share"
    for f in ("prometheus/rules.yml", "prometheus/rules_test.yml", "prometheus/prometheus.yml",
              "alertmanager/example.yml", "grafana/rackwarden.json", "rackwarden.example.yaml"):
        assert (share / f).is_file(), f
    assert (dest / "opt/rackwarden/README.md").is_file()
    # State is systemd's (StateDirectory= with DynamicUser=): not made by the installer.
    assert not (dest / "var").exists()

    # The operator edits the config and adds secrets; a refresh keeps the one, loads the others.
    (etc / "rackwarden.yaml").write_text((etc / "rackwarden.yaml").read_text() + "# edited\n")
    for name, mode in (("sw1-snmp-auth", 0o600), ("sw1-snmp-priv", 0o644)):
        (etc / "credentials" / name).write_text("secret\n")
        (etc / "credentials" / name).chmod(mode)
    second = _run(["bash", str(INSTALL), "--destdir", str(dest), "--no-venv"], timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (etc / "rackwarden.yaml").read_text().endswith("# edited\n")
    assert "sw1-snmp-priv is readable by others" in second.stdout
    creds = (units / "rackwarden.service.d/credentials.conf").read_text()
    assert [ln for ln in creds.splitlines() if ln.startswith("LoadCredential=")] == [
        "LoadCredential=sw1-snmp-auth:/etc/rackwarden/credentials/sw1-snmp-auth",
        "LoadCredential=sw1-snmp-priv:/etc/rackwarden/credentials/sw1-snmp-priv",
    ]
    assert not (units / "rackwarden.service.d/span.conf").exists()  # no --span this time

    # The staged unit and its drop-ins verify, with /opt pointed at the staging tree.
    check = tmp_path / "verify"
    shutil.copytree(units, check)
    for staged in [check / "rackwarden.service", *(check / "rackwarden.service.d").iterdir()]:
        staged.write_text(staged.read_text().replace("/opt/rackwarden", f"{dest}/opt/rackwarden")
                     .replace("/etc/rackwarden", f"{dest}/etc/rackwarden"))
    assert verify(check / "rackwarden.service") == []
    assert unit_settings(check / "rackwarden.service",
                         check / "rackwarden.service.d/credentials.conf")["Service.LoadCredential"]

    assert _outside_state() == before, "a DESTDIR install touched the real system"
    print(f"install.sh into DESTDIR: {install_s:.1f} s")


def test_install_sh_refuses_bad_paths(tmp_path: Path) -> None:
    r = _run(["bash", str(INSTALL), "--destdir", str(tmp_path), "--prefix", "relative/path"])
    assert r.returncode == 2 and "absolute path" in r.stderr
    r = _run(["bash", str(INSTALL), "--destdir", str(tmp_path), "--confdir", "/etc/rack|warden"])
    assert r.returncode == 2 and "use letters" in r.stderr
    r = _run(["bash", str(INSTALL), "--bogus"])
    assert r.returncode == 2 and "unknown option" in r.stderr
    assert not any(tmp_path.iterdir())

