"""Throw-away OpenSSH server for the lab: own config, keys and PID, optionally inside a netns."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# sshd's privilege-separation directory; Debian creates it from a tmpfiles unit that only runs
# with the system service, which this helper never touches.
PRIVSEP_DIR = Path("/run/sshd")


class SshdError(RuntimeError):
    """The test sshd could not be configured or did not come up."""


@dataclass
class SshdHandle:
    """A running test sshd; `stop()` ends it and its session children by PID."""

    pid: int
    address: str
    port: int
    client_key: Path  # private key whose public half is the only authorized key
    host_public_key: Path
    config: Path
    log: Path
    netns: str | None
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def known_hosts_line(self) -> str:
        """A known_hosts entry for strict host-key checking against this server."""
        kind, blob = self.host_public_key.read_text().split()[:2]
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {kind} {blob}\n"

    def connection_count(self) -> int:
        """TCP connections sshd accepted so far (LogLevel VERBOSE logs each one)."""
        return sum(1 for line in self.log_lines() if "Connection from " in line)

    def log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the listener and its per-connection children (all started by us), by PID."""
        children = _descendants(self.pid)
        for pid in [self.pid, *children]:
            _signal(pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal(self.pid, signal.SIGKILL)
            self._proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        for pid in children:
            while _exists(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _exists(pid):
                _signal(pid, signal.SIGKILL)


def start_sshd(
    netns: str | None,
    listen_addr: str,
    port: int,
    workdir: Path,
    force_command: list[str],
    *,
    ready_timeout_s: float = 10.0,
) -> SshdHandle:
    """Write a test-only sshd_config in `workdir`, generate keys, start `sshd -D -e -f CONF`.

    Only the generated client key may log in, only as the current user, with no password or
    PAM, and every session runs `force_command`. Nothing under /etc/ssh, no system user and no
    system sshd is touched.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(force_command)
    if "\n" in command or "\r" in command:
        raise SshdError("force_command must not contain line breaks")

    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "client_ed25519"
    for key, comment in ((host_key, "rackwarden-lab-host"), (client_key, "rackwarden-lab-client")):
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())

    conf = workdir / "sshd_config"
    log = workdir / "sshd.log"
    pidfile = workdir / "sshd.pid"
    user = getpass.getuser()
    conf.write_text(
        "\n".join(
            [
                "# test-only sshd for the RackWarden lab; generated, never installed",
                f"Port {port}",
                f"ListenAddress {listen_addr}",
                f"HostKey {host_key}",
                f"PidFile {pidfile}",
                f"AuthorizedKeysFile {authorized}",
                f"AllowUsers {user}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "HostbasedAuthentication no",
                "PermitRootLogin prohibit-password",
                "PermitEmptyPasswords no",
                "PermitTTY yes",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "AllowStreamLocalForwarding no",
                "X11Forwarding no",
                "PermitTunnel no",
                "PermitUserEnvironment no",
                "PrintMotd no",
                "PrintLastLog no",
                "UseDNS no",
                "LoginGraceTime 20",
                "MaxStartups 32:50:64",
                "LogLevel VERBOSE",
                f"ForceCommand {command}",
                "",
            ]
        )
    )

    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    check = subprocess.run([*prefix, SSHD, "-t", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SshdError(f"sshd -t rejected {conf}: {check.stderr.strip()}")

    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # `ip netns exec` execs sshd in place, so Popen's PID is sshd's PID.
        proc = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
        )
    finally:
        os.close(log_fd)

    handle = SshdHandle(
        pid=proc.pid,
        address=listen_addr,
        port=port,
        client_key=client_key,
        host_public_key=host_key.with_suffix(".pub"),
        config=conf,
        log=log,
        netns=netns,
        _proc=proc,
    )
    listening = re.compile(rf"Server listening on {re.escape(listen_addr)} port {port}\b")
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdError(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if any(listening.search(line) for line in handle.log_lines()):
            return handle
        time.sleep(0.02)
    handle.stop()
    raise SshdError(f"sshd not listening after {ready_timeout_s} s: {log.read_text()[-2000:]}")


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SshdError(f"{argv[0]} failed: {proc.stderr.strip()}")


def _descendants(root: int) -> list[int]:
    """PIDs below `root` (sshd session processes and their shells), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists" for kill(0); treat it as gone, it holds no resources we need.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
