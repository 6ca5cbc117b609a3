"""netmiko sessions that shut, restore, read back and save ports, one at a time per switch."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko
from netmiko import ConnectHandler
from netmiko.exceptions import (
    ConfigInvalidException,
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadException,
    WriteException,
)

from . import vendor_cli
from .base import (
    EXPECTED_ADMIN,
    AdminReading,
    AuthenticationFailed,
    ChangeResult,
    ChangeScript,
    CommandRejected,
    DriverError,
    InvalidPortName,
    PermanentDriverError,
    PortAction,
    SaveFailed,
    SaveResult,
    SessionDropped,
    SwitchUnreachable,
    change_script,
    error_match,
    pending_question,
    save_succeeded,
)

# Failures of the transport or of the dialogue (as opposed to the device saying "no").
_TRANSIENT = (
    NetmikoTimeoutException,  # also paramiko SSHException during connect, re-wrapped by netmiko
    ReadException,  # ReadTimeout: the prompt never came back
    WriteException,
    paramiko.SSHException,
    socket.error,  # OSError: reset, refused, unreachable, "Socket is closed"
    EOFError,
)


class SecretLike(Protocol):
    """A secret that prints as a mask; only `.reveal()` yields the value (config owns the type)."""

    def reveal(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SwitchTarget:
    """Where and how to log in to one switch; built by the wiring from validated config."""

    name: str  # inventory name, used in every message
    vendor: str  # netmiko device_type, a key of DRIVERS
    host: str
    username: str
    port: int = 22
    key_file: Path | None = None
    key_passphrase: SecretLike | None = field(default=None, repr=False)
    password: SecretLike | None = field(default=None, repr=False)
    enable_secret: SecretLike | None = field(default=None, repr=False)
    # A known_hosts file turns on strict host-key checking. Without it netmiko accepts any host
    # key (AutoAddPolicy), which lets a spoofed management address capture the credentials.
    known_hosts: Path | None = None
    # e.g. {"pubkeys": ("rsa-sha2-256", "rsa-sha2-512")} for old switches that only verify
    # ssh-rsa signatures and do not announce server-sig-algs.
    disabled_algorithms: Mapping[str, tuple[str, ...]] | None = None
    conn_timeout_s: float = 5.0  # TCP connect and SSH banner
    auth_timeout_s: float = 10.0
    read_timeout_s: float = 10.0  # one prompt-to-prompt exchange
    commit_timeout_s: float = 60.0  # lines after the effect (Junos commit can take tens of s)
    save_config: bool = False  # write memory / save after every change
    # The inventory's ports on this switch; when set, any other name is refused as well.
    ports: frozenset[str] | None = None

    def __post_init__(self) -> None:
        vendor_cli(self.vendor)  # UnknownVendor lists the valid names
        if self.key_file is None and self.password is None:
            raise PermanentDriverError("switch needs a key_file or a password", switch=self.name)
        for label in ("conn_timeout_s", "auth_timeout_s", "read_timeout_s", "commit_timeout_s"):
            if not getattr(self, label) > 0:
                raise PermanentDriverError(f"{label} must be > 0", switch=self.name)


Connector = Callable[..., Any]  # netmiko.ConnectHandler or a test double with its signature


class NetmikoSwitch:
    """The real SwitchDriver: a fresh SSH session per operation, serialised per switch.

    Sessions are opened for each operation and closed after it instead of being kept:
    enforcement actions are rare, switch vty lines are few and shared with people, idle
    sessions are cut by exec-timeouts and would fail exactly when needed, and a fresh login
    always starts in a known CLI mode, even after an aborted dialogue. The cost is one login
    per action (0.6-1.1 s in the lab, most of it netmiko's session preparation).

    Build one object per switch: its asyncio.Lock queues callers, and a thread lock keeps the
    promise even when a cancelled caller leaves its worker thread running.
    """

    def __init__(
        self,
        target: SwitchTarget,
        *,
        connect: Connector | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.name = target.name
        self.cli = vendor_cli(target.vendor)
        self._connect: Connector = connect if connect is not None else ConnectHandler
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        # Canonical spellings, so `Gi1/0/1` in the inventory matches `GigabitEthernet1/0/1`;
        # a bad inventory entry fails here, at wiring time, not at the first violation.
        self._inventory: frozenset[str] | None = (
            None
            if target.ports is None
            else frozenset(self.cli.canonical_port(p).casefold() for p in target.ports)
        )

    def __repr__(self) -> str:
        t = self.target
        return f"NetmikoSwitch({t.name!r}, {t.vendor}, {t.username}@{t.host}:{t.port})"

    # ---------------------------------------------------------------- public (SwitchDriver)

    async def shut(self, port: str) -> ChangeResult:
        """Administratively disable `port` and report what the CLI shows afterwards."""
        return await self._change("shut", port)

    async def restore(self, port: str) -> ChangeResult:
        """Re-enable `port` and report what the CLI shows afterwards."""
        return await self._change("restore", port)

    async def read_admin_state(self, port: str) -> AdminReading:
        """Read `port`'s admin state from the CLI (no change)."""
        name = self.validate_port(port)
        command = self.cli.render_readback(name)
        async with self._lock:
            return await asyncio.to_thread(self._run_readback, name, command)

    async def save(self) -> SaveResult:
        """Save the running configuration, answering the vendor's confirm prompts."""
        async with self._lock:
            return await asyncio.to_thread(self._run_save)

    def validate_port(self, port: str) -> str:
        """The canonical name of `port`, or InvalidPortName; never touches the network."""
        try:
            name = self.cli.canonical_port(port)
        except InvalidPortName as exc:
            raise InvalidPortName(exc.reason, switch=self.name) from None
        if self._inventory is not None and name.casefold() not in self._inventory:
            raise InvalidPortName(
                f"{name} is not an inventory port of this switch; add it to the inventory "
                "first (nothing was sent to the switch)",
                switch=self.name,
                port=name,
            )
        return name

    # ---------------------------------------------------------------- worker-thread side

    async def _change(self, action: PortAction, port: str) -> ChangeResult:
        # Everything that can refuse the request runs before the lock and before any socket.
        name = self.validate_port(port)
        script = change_script(self.cli, action, name)
        readback = self.cli.render_readback(name)
        async with self._lock:
            return await asyncio.to_thread(self._run_change, action, name, script, readback)

    def _run_change(
        self, action: PortAction, port: str, script: ChangeScript, readback_cmd: str
    ) -> ChangeResult:
        with self._thread_lock:
            start = self._monotonic()
            conn = self._open(port=port, action=action)
            try:
                self._send_script(conn, script, port=port, action=action)
                # The change may have landed from here on: every failure is outcome-unknown.
                readback = self._send_command(
                    conn, readback_cmd, port=port, action=action, outcome_unknown=True
                )
                admin = self.cli.parse_admin_state(readback, port)
                saved: bool | None = None
                save_error = ""
                if self.target.save_config and self.cli.SAVE is not None:
                    try:
                        self._save_dialogue(conn)
                        saved = True
                    except DriverError as exc:
                        # The port change stands; an unsaved change is reported, not raised,
                        # so the caller still learns what the read-back showed.
                        saved, save_error = False, exc.reason
                return ChangeResult(
                    switch=self.name,
                    port=port,
                    action=action,
                    expected=EXPECTED_ADMIN[action],
                    cli_admin=admin,
                    duration_s=self._monotonic() - start,
                    saved=saved,
                    save_error=save_error,
                    readback=readback,
                )
            finally:
                self._close(conn)

    def _run_readback(self, port: str, command: str) -> AdminReading:
        with self._thread_lock:
            start = self._monotonic()
            conn = self._open(port=port, action="read")
            try:
                out = self._send_command(
                    conn, command, port=port, action="read", outcome_unknown=False
                )
            finally:
                self._close(conn)
            return AdminReading(
                switch=self.name,
                port=port,
                admin=self.cli.parse_admin_state(out, port),
                duration_s=self._monotonic() - start,
                readback=out,
            )

    def _run_save(self) -> SaveResult:
        with self._thread_lock:
            start = self._monotonic()
            if self.cli.SAVE is None:
                return SaveResult(switch=self.name, duration_s=0.0, transcript="")
            conn = self._open(port="", action="save")
            try:
                transcript = self._save_dialogue(conn)
            finally:
                self._close(conn)
            return SaveResult(
                switch=self.name, duration_s=self._monotonic() - start, transcript=transcript
            )

    # ---------------------------------------------------------------- netmiko plumbing

    def _connect_kwargs(self) -> dict[str, Any]:
        t = self.target
        kwargs: dict[str, Any] = {
            "device_type": self.cli.NAME,
            "host": t.host,
            "port": t.port,
            "username": t.username,
            "conn_timeout": t.conn_timeout_s,
            "banner_timeout": t.conn_timeout_s,
            "auth_timeout": t.auth_timeout_s,
            "fast_cli": True,  # netmiko 4 default, spelled out: delay factor 0.1
            "allow_agent": False,  # only the configured key, never whatever an agent holds
            "use_keys": t.key_file is not None,
        }
        if t.key_file is not None:
            kwargs["key_file"] = str(t.key_file)
        if t.key_passphrase is not None:
            kwargs["passphrase"] = t.key_passphrase.reveal()
        if t.password is not None:
            kwargs["password"] = t.password.reveal()
        if t.enable_secret is not None:
            kwargs["secret"] = t.enable_secret.reveal()
        if t.known_hosts is not None:
            kwargs.update(
                ssh_strict=True,
                system_host_keys=False,
                alt_host_keys=True,
                alt_key_file=str(t.known_hosts),
            )
        if t.disabled_algorithms:
            kwargs["disabled_algorithms"] = {k: list(v) for k, v in t.disabled_algorithms.items()}
        if self.cli.CMD_VERIFY is not None:
            kwargs["global_cmd_verify"] = self.cli.CMD_VERIFY
        return kwargs

    def _open(self, *, port: str, action: str) -> Any:
        key = self.target.key_file
        if key is not None and not os.access(key, os.R_OK):
            # netmiko would report this as a ValueError indistinguishable from a prompt problem.
            raise PermanentDriverError(
                f"SSH key file {key} is missing or unreadable; fix key_file (nothing was sent)",
                switch=self.name,
                port=port,
                action=action,
            )
        try:
            conn = self._connect(**self._connect_kwargs())
        except NetmikoAuthenticationException as exc:
            raise AuthenticationFailed(
                "the switch refused the SSH credentials; check username and key/password",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        except _TRANSIENT as exc:
            text = str(exc)
            if "known_hosts" in text or "does not match" in text:
                raise PermanentDriverError(
                    "SSH host key not trusted (unknown or changed); verify the switch and "
                    "update known_hosts",
                    detail=_first_line(exc),
                    switch=self.name,
                    port=port,
                    action=action,
                ) from None
            raise SwitchUnreachable(
                f"could not open an SSH session to {self.target.host}:{self.target.port} "
                f"({type(exc).__name__}); nothing was sent, retry later",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        except ValueError as exc:  # netmiko: prompt not found during session preparation
            raise SwitchUnreachable(
                f"logged in but no CLI prompt was recognised for {self.cli.NAME}; nothing was "
                "sent (wrong vendor in the inventory?)",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        try:
            if self.cli.NEEDS_ENABLE and not conn.check_enable_mode():
                if self.target.enable_secret is None:
                    raise AuthenticationFailed(
                        "login lands in user EXEC (>) and no enable secret is configured; "
                        "give the account privilege 15 or configure enable_secret",
                        switch=self.name,
                        port=port,
                        action=action,
                    )
                self._enable(conn, port=port, action=action)
        except DriverError:
            self._close(conn)
            raise
        except _TRANSIENT as exc:
            self._close(conn)
            raise SessionDropped(
                "session failed while entering privileged mode; nothing was sent, retry later",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        return conn

    def _enable(self, conn: Any, *, port: str, action: str) -> None:
        # Our own dialogue instead of netmiko's enable(): after a wrong secret IOS asks for the
        # password again, and enable() would sit out a 10 s read before failing as a timeout.
        secret = self.target.enable_secret
        assert secret is not None
        asks = r"[Pp]assword:\s*$"
        settled = r"[>#]\s*$"
        expect = f"(?:{asks}|{settled})"
        kwargs = {"expect_string": expect, "read_timeout": self.target.read_timeout_s}
        out = str(conn.send_command("enable", strip_prompt=False, strip_command=False, **kwargs))
        if re.search(asks, out):
            out = str(
                conn.send_command(
                    secret.reveal(),
                    strip_prompt=False,
                    strip_command=False,
                    cmd_verify=False,  # the secret is not echoed
                    **kwargs,
                )
            )
        if not re.search(r"#\s*$", out):
            raise AuthenticationFailed(
                "`enable` did not reach privileged mode; check the enable secret",
                switch=self.name,
                port=port,
                action=action,
            )

    def _send_script(self, conn: Any, script: ChangeScript, *, port: str, action: str) -> None:
        # One send_config_set per line: netmiko's own config_mode() probes cost a 2 s quiet-time
        # read each on VRP, and line by line we know exactly whether the effect line was sent.
        for index, command in enumerate(script.commands):
            after_effect = index > script.effect_index
            try:
                conn.send_config_set(
                    [command],
                    enter_config_mode=False,
                    exit_config_mode=False,
                    error_pattern=self.cli.ERROR_PATTERN,
                    terminator=self.cli.CONFIG_TERMINATOR,
                    cmd_verify=True,
                    read_timeout=(
                        self.target.commit_timeout_s if after_effect else self.target.read_timeout_s
                    ),
                )
            except ConfigInvalidException as exc:
                raise CommandRejected(
                    f"the switch rejected {command!r}"
                    + (
                        "; the change may already be in effect, read the port back"
                        if after_effect
                        else "; the port was not changed"
                    ),
                    switch=self.name,
                    port=port,
                    action=action,
                    outcome_unknown=after_effect,
                    detail=_first_line(exc),
                ) from None
            except _TRANSIENT as exc:
                raise self._dialogue_failure(
                    conn,
                    exc,
                    command,
                    port=port,
                    action=action,
                    outcome_unknown=index >= script.effect_index,
                ) from None

    def _send_command(
        self, conn: Any, command: str, *, port: str, action: str, outcome_unknown: bool
    ) -> str:
        try:
            out = conn.send_command(command, read_timeout=self.target.read_timeout_s)
        except _TRANSIENT as exc:
            raise self._dialogue_failure(
                conn, exc, command, port=port, action=action, outcome_unknown=outcome_unknown
            ) from None
        if not isinstance(out, str):
            raise PermanentDriverError(
                f"netmiko returned {type(out).__name__} for {command!r}", switch=self.name
            )
        found = error_match(self.cli, out)
        if found is not None:
            raise CommandRejected(
                f"the switch rejected {command!r}: {found}",
                switch=self.name,
                port=port,
                action=action,
                outcome_unknown=outcome_unknown,
            )
        return out

    def _save_dialogue(self, conn: Any) -> str:
        spec = self.cli.SAVE
        if spec is None:
            return ""
        prompt = rf"{re.escape(conn.base_prompt)}[^\r\n]*[>#\]$]\s*$"
        questions = "|".join(f"(?:{q})" for q, _ in spec.prompts)
        expect = f"(?:{questions}|{prompt})" if questions else prompt
        transcript = ""
        typed = spec.command
        for _ in range(len(spec.prompts) + 3):
            try:
                out = conn.send_command(
                    typed,
                    expect_string=expect,
                    read_timeout=spec.timeout_s,
                    strip_prompt=False,
                    strip_command=False,
                )
            except _TRANSIENT as exc:
                raise self._dialogue_failure(
                    conn, exc, typed or "<Enter>", port="", action="save", outcome_unknown=True
                ) from None
            transcript += str(out)
            answer = pending_question(spec, str(out))
            if answer is None:
                break
            typed = answer
        else:
            raise SaveFailed(
                "the save dialogue kept asking questions; save by hand and check the prompts",
                switch=self.name,
                action="save",
                detail=transcript[-300:],
            )
        if not save_succeeded(self.cli, transcript):
            raise SaveFailed(
                f"`{spec.command}` did not report success; save by hand",
                switch=self.name,
                action="save",
                detail=(error_match(self.cli, transcript) or transcript[-300:]),
            )
        return transcript

    def _dialogue_failure(
        self,
        conn: Any,
        exc: BaseException,
        command: str,
        *,
        port: str,
        action: str,
        outcome_unknown: bool,
    ) -> DriverError:
        if outcome_unknown:
            consequence = "the outcome is unknown: read the port state back before acting again"
        else:
            consequence = "nothing took effect yet; retry later"
        if _session_closed(conn):
            what = f"the SSH session dropped after {command!r} was sent"
        else:
            what = f"no prompt came back after {command!r} ({type(exc).__name__})"
        return SessionDropped(
            f"{what}; {consequence}",
            switch=self.name,
            port=port,
            action=action,
            outcome_unknown=outcome_unknown,
            detail=_first_line(exc),
        )

    def _close(self, conn: Any) -> None:
        # The dialogue always ends in the login mode, so skip netmiko's cleanup() probes (its
        # config-mode check costs a 2 s quiet-time read on VRP): say goodbye, close the
        # transport, then let disconnect() release netmiko's per-session log filter (its own
        # probes now fail at once on the closed channel).
        try:
            conn.write_channel(_LOGOUT.get(self.cli.NAME, "exit") + conn.RETURN)
        except Exception:  # the session may already be gone; we are closing anyway
            pass
        for step in (conn.paramiko_cleanup, conn.disconnect):
            try:
                step()
            except Exception:  # same: nothing useful to do with a failed close
                pass


_LOGOUT = {"huawei": "quit", "hp_comware": "quit", "juniper_junos": "exit", "linux": "exit"}


def _session_closed(conn: Any) -> bool:
    """True when the SSH channel or transport is gone (the far end closed or reset it)."""
    channel = getattr(conn, "remote_conn", None)
    if channel is None:
        return True
    if getattr(channel, "closed", False) or getattr(channel, "eof_received", False):
        return True
    transport = channel.get_transport() if hasattr(channel, "get_transport") else None
    return transport is None or not transport.is_active()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
