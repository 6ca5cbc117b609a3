"""netmiko sessions that shut, restore, read back and save ports, one at a time per switch."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from . import DRIVERS, vendor_cli
from .base import (
    EXPECTED_ADMIN,
    HOST_KEY_MODES,
    AdminReading,
    AuthenticationFailed,
    ChangeResult,
    ChangeScript,
    CommandRejected,
    DriverError,
    HostKeyRejected,
    InvalidPortName,
    PermanentDriverError,
    PortAction,
    SaveFailed,
    SaveResult,
    SessionDropped,
    SwitchUnreachable,
    UnexplainedReply,
    WrongVendor,
    change_script,
    device_words,
    error_match,
    looks_like,
    names_port,
    pending_question,
    prompt_vendors,
    save_succeeded,
    unexplained_lines,
)
from .restrictions import (
    ACTION_KIND,
    Restriction,
    RestrictionAction,
    RestrictionChange,
    RestrictionCli,
    RestrictionKind,
    RestrictionRefused,
    RestrictionResult,
    restriction_cli,
    restriction_script,
)

log = logging.getLogger("rackwarden.switch")

_R = TypeVar("_R")

# netmiko and paramiko (with cryptography's SSH parts) cost ~12 MB of RSS at import and are
# needed only when a session opens: they are imported then (`_transient`, `_connect_handler`,
# and inside the methods that name their classes), not when the daemon starts.


@functools.cache
def _transient() -> tuple[type[BaseException], ...]:
    """Failures of the transport or of the dialogue (as opposed to the device saying "no").

    A function, not a module constant, so that netmiko and paramiko load with the first
    session instead of with the daemon; `except _transient()` is evaluated only when an
    exception is already being handled.
    """
    import paramiko
    from netmiko.exceptions import NetmikoTimeoutException, ReadException, WriteException

    return (
        NetmikoTimeoutException,  # also paramiko SSHException during connect, re-wrapped by netmiko
        ReadException,  # ReadTimeout: the prompt never came back
        WriteException,
        paramiko.SSHException,
        socket.error,  # OSError: reset, refused, unreachable, "Socket is closed"
        EOFError,
    )


def _connect_handler(*args: Any, **kwargs: Any) -> Any:
    """netmiko.ConnectHandler, imported at the first connection."""
    from netmiko import ConnectHandler

    return ConnectHandler(*args, **kwargs)


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
    # Host-key verification, one of HOST_KEY_MODES. `known_hosts`: strict, against that file.
    # `pin`: trust on first use; the first key seen is written to `pin_file` and a different key
    # later is refused (HostKeyRejected, nothing sent), as ssh's StrictHostKeyChecking=accept-new.
    # `insecure-accept-any`: no verification, only by explicit opt-in (a spoofed management
    # address would receive the credentials). None: known_hosts when that file is given, else pin
    # when pin_file is given; with neither the target is refused.
    known_hosts: Path | None = None
    host_key: str | None = None
    pin_file: Path | None = None
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
        mode = self.host_key
        if mode is None:
            mode = "known_hosts" if self.known_hosts else "pin" if self.pin_file else None
        if mode is None:
            raise PermanentDriverError(
                "no SSH host-key verification: give known_hosts, a pin file (trust on first "
                "use) or the explicit host_key: insecure-accept-any",
                switch=self.name,
            )
        if mode not in HOST_KEY_MODES:
            raise PermanentDriverError(
                f"host_key must be one of {', '.join(HOST_KEY_MODES)}, not {mode!r}",
                switch=self.name,
            )
        if mode == "known_hosts" and self.known_hosts is None:
            raise PermanentDriverError("host_key known_hosts needs a known_hosts file", switch=self.name)
        if mode == "pin" and self.pin_file is None:
            raise PermanentDriverError("host_key pin needs a pin file", switch=self.name)
        object.__setattr__(self, "host_key", mode)  # frozen: resolved once, here

    @property
    def host_key_name(self) -> str:
        """How known_hosts files name this switch (`host`, or `[host]:port` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


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
        self._connect: Connector = connect if connect is not None else _connect_handler
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self._prompt_checked = False  # the first session checks the CLI is this vendor's
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

    async def throttle(self, port: str, rate_bps: int) -> RestrictionResult:
        """Police what `port` receives from its server to `rate_bps` (rounded down to what the
        vendor's policer accepts, never above), and read the policer back in the same session.

        RestrictionRefused (rate below the vendor's minimum) is raised before any session.
        """
        name = self.validate_port(port)
        change = self._render("throttle", name, lambda r: r.render_throttle(name, rate_bps))
        return await self._restrict("throttle", name, change)

    async def unthrottle(self, port: str) -> RestrictionResult:
        """Remove our policer from `port` (the server is back to line rate)."""
        name = self.validate_port(port)
        change = self._render("unthrottle", name, lambda r: r.render_unthrottle(name))
        return await self._restrict("unthrottle", name, change)

    async def block_service(self, port: str, service: str) -> RestrictionResult:
        """Drop TCP from `port`'s server to `service`'s ports (smtp: 25, 465, 587); the rest passes."""
        name = self.validate_port(port)
        change = self._render("block", name, lambda r: r.render_block_service(name, service))
        return await self._restrict("block", name, change, service)

    async def unblock_service(self, port: str, service: str) -> RestrictionResult:
        """Remove our block of `service` from `port`."""
        name = self.validate_port(port)
        change = self._render("unblock", name, lambda r: r.render_unblock_service(name, service))
        return await self._restrict("unblock", name, change, service)

    async def read_restriction(
        self, port: str, kind: RestrictionKind, service: str | None = None
    ) -> Restriction:
        """What the CLI shows of our throttle or block on `port` (no change)."""
        name = self.validate_port(port)
        if kind not in ("throttle", "block"):
            raise PermanentDriverError(
                f"unknown restriction kind {kind!r} (throttle or block)", switch=self.name, port=name
            )
        commands = self._render("read", name, lambda r: r.render_restriction_readback(name, kind, service))
        async with self._lock:
            return await asyncio.to_thread(self._run_restriction_read, name, kind, service, commands)

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
                saved, save_error = self._save_if_asked(conn)
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

    def _save_if_asked(self, conn: Any) -> tuple[bool | None, str]:
        """Save the running config after a change when the switch's settings ask for it.

        The change stands either way; an unsaved change is reported, not raised, so the caller
        still learns what the read-back showed. None: saving is off or not needed.
        """
        if not (self.target.save_config and self.cli.SAVE is not None):
            return None, ""
        try:
            self._save_dialogue(conn)
            return True, ""
        except DriverError as exc:
            return False, exc.reason

    def _restrictions(self) -> RestrictionCli:
        try:
            return restriction_cli(self.cli)
        except PermanentDriverError as exc:
            raise PermanentDriverError(exc.reason, switch=self.name) from None

    def _render(self, action: str, port: str, render: Callable[[RestrictionCli], _R]) -> _R:
        """Render with the vendor module; a refusal (rate below the policer's minimum, unknown
        service) is raised here, before any session, naming the switch, port and action."""
        try:
            return render(self._restrictions())
        except RestrictionRefused as exc:
            raise RestrictionRefused(exc.reason, switch=self.name, port=port, action=action) from None

    async def _restrict(
        self,
        action: RestrictionAction,
        port: str,
        change: RestrictionChange,
        service: str | None = None,
    ) -> RestrictionResult:
        # Rendered before the lock and before any socket, as for a shut: whatever can refuse
        # the request (port, rate, service) has refused it by now.
        cli = self._restrictions()
        script = restriction_script(self.cli, change)
        readback = cli.render_restriction_readback(port, ACTION_KIND[action], service)
        async with self._lock:
            return await asyncio.to_thread(
                self._run_restriction, action, port, change, script, readback, service
            )

    def _run_restriction(
        self,
        action: RestrictionAction,
        port: str,
        change: RestrictionChange,
        script: ChangeScript,
        readback_cmds: tuple[str, ...],
        service: str | None,
    ) -> RestrictionResult:
        with self._thread_lock:
            start = self._monotonic()
            conn = self._open(port=port, action=action)
            try:
                # A refused line raises CommandRejected here, exactly as for a shut: no result,
                # so a refused `qos lr inbound` can never be reported as a throttle.
                self._send_script(conn, script, port=port, action=action)
                readback = self._send_readback(
                    conn, readback_cmds, port=port, action=action, outcome_unknown=True
                )
                reading = self._restrictions().parse_restriction(
                    readback, port, ACTION_KIND[action], service
                )
                saved, save_error = self._save_if_asked(conn)
                return RestrictionResult(
                    switch=self.name,
                    port=port,
                    action=action,
                    reading=reading,
                    duration_s=self._monotonic() - start,
                    rate=change.rate,
                    service=service,
                    saved=saved,
                    save_error=save_error,
                    readback=readback,
                )
            finally:
                self._close(conn)

    def _run_restriction_read(
        self, port: str, kind: RestrictionKind, service: str | None, commands: tuple[str, ...]
    ) -> Restriction:
        with self._thread_lock:
            conn = self._open(port=port, action="read")
            try:
                out = self._send_readback(
                    conn, commands, port=port, action="read", outcome_unknown=False
                )
            finally:
                self._close(conn)
            return self._restrictions().parse_restriction(out, port, kind, service)

    def _send_readback(
        self, conn: Any, commands: tuple[str, ...], *, port: str, action: str, outcome_unknown: bool
    ) -> str:
        """The joined output of the read-back commands, judged by the vendor's parser only.

        Unlike a port read-back, an error line here is not raised: listing an ACL that is gone
        is an error on VRP and Comware and exactly what an unblock should leave, and the parser
        turns any other error, or output that does not name the port, into `unknown`.
        """
        outputs: list[str] = []
        for command in commands:
            try:
                out = conn.send_command(command, read_timeout=self.target.read_timeout_s)
            except _transient() as exc:
                raise self._dialogue_failure(
                    conn, exc, command, port=port, action=action, outcome_unknown=outcome_unknown
                ) from None
            if not isinstance(out, str):
                raise PermanentDriverError(
                    f"netmiko returned {type(out).__name__} for {command!r}", switch=self.name
                )
            outputs.append(out)
        return "\n".join(outputs)

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
        # paramiko refuses a host whose key differs from a loaded entry (BadHostKeyException)
        # whatever the policy; the policy only decides an unknown host: netmiko's ssh_strict
        # is RejectPolicy, otherwise AutoAddPolicy, which saves the key it adds to the file the
        # keys were loaded from. With the pin file loaded that is exactly trust on first use.
        if t.host_key == "known_hosts":
            kwargs.update(
                ssh_strict=True,
                system_host_keys=False,
                alt_host_keys=True,
                alt_key_file=str(t.known_hosts),
            )
        elif t.host_key == "pin":
            kwargs.update(
                ssh_strict=False,
                system_host_keys=False,
                alt_host_keys=True,
                alt_key_file=str(t.pin_file),
            )
        else:  # insecure-accept-any: the explicit opt-in, shown by check-config and a metric
            kwargs.update(ssh_strict=False, system_host_keys=False, alt_host_keys=False)
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
        pinned_before = self._prepare_pin_file(port=port, action=action)
        from netmiko.exceptions import NetmikoAuthenticationException, ReadTimeout

        try:
            conn = self._login()
        except NetmikoAuthenticationException as exc:
            raise AuthenticationFailed(
                "the switch refused the SSH credentials; check username and key/password",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        except _transient() as exc:
            refused = self._host_key_refusal(exc, port=port, action=action)
            if refused is not None:
                raise refused from None
            if isinstance(exc, ReadTimeout):
                # Only raised once the channel is open: the login worked, the CLI did not answer
                # the way netmiko's driver for this vendor waits for.
                raise SwitchUnreachable(
                    f"logged in, but no {self.cli.NAME} CLI prompt came back (ReadTimeout): "
                    f"probable wrong `vendor: {self.cli.NAME}` for this switch, or its CLI refused "
                    "the session (all vty lines busy); nothing was sent",
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
        if pinned_before is False:
            log.warning(
                "%s: SSH host key of %s pinned on first use in %s; a different key will be refused",
                self.name,
                self.target.host_key_name,
                self.target.pin_file,
            )
        try:
            if not self._prompt_checked:
                self._check_prompt(conn, port=port, action=action)
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
        except _transient() + (ValueError,) as exc:
            self._close(conn)
            raise SessionDropped(
                "session failed while preparing the CLI (prompt, enable); nothing was sent, retry later",
                detail=_first_line(exc),
                switch=self.name,
                port=port,
                action=action,
            ) from None
        return conn

    def _login(self) -> Any:
        """A netmiko session, or the exception; a half-open session is never left behind.

        netmiko's constructor would connect by itself, and if session preparation then fails
        (a CLI that does not answer like the vendor, a vty limit) nothing closes the SSH
        session, which holds one of the switch's few vty lines until its exec-timeout. So the
        connection is built with auto_connect=False and opened through netmiko's own seam.
        """
        conn = self._connect(**self._connect_kwargs(), auto_connect=False)
        try:
            conn._open()
        except BaseException:
            self._close(conn)
            raise
        return conn

    def _prepare_pin_file(self, *, port: str, action: str) -> bool | None:
        """Pin mode: make sure the pin file exists (netmiko loads it only if it does); say
        whether it already holds this switch's key. None in the other modes."""
        t = self.target
        if t.host_key != "pin" or t.pin_file is None:
            return None
        import paramiko

        try:
            t.pin_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not t.pin_file.exists():
                fd = os.open(t.pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            keys = paramiko.HostKeys(str(t.pin_file))
        except (OSError, paramiko.SSHException) as exc:
            raise PermanentDriverError(
                f"cannot use the host-key pin file {t.pin_file}: {exc}; fix the state "
                "directory (nothing was sent)",
                switch=self.name,
                port=port,
                action=action,
            ) from None
        return keys.lookup(t.host_key_name) is not None

    def _host_key_refusal(
        self, exc: BaseException, *, port: str, action: str
    ) -> HostKeyRejected | None:
        """A HostKeyRejected when `exc` (netmiko re-wraps paramiko's) is a host-key refusal."""
        t = self.target
        where = t.pin_file if t.host_key == "pin" else t.known_hosts
        import paramiko

        chain: BaseException | None = exc
        while chain is not None:
            if isinstance(chain, paramiko.BadHostKeyException):
                return HostKeyRejected(
                    f"SSH host key of {t.host_key_name} CHANGED: the switch offers "
                    f"{_fingerprint(chain.key)}, {where} has {_fingerprint(chain.expected_key)}; "
                    "refused before login, nothing was sent (not even the credentials). A "
                    "spoofed management address looks like this: check the switch, and only if "
                    f"it was really replaced remove its line from {where}",
                    switch=self.name,
                    port=port,
                    action=action,
                )
            chain = chain.__cause__ or chain.__context__
        if "not found in known_hosts" in str(exc):
            return HostKeyRejected(
                f"SSH host key of {t.host_key_name} is not in {where}; refused before login, "
                "nothing was sent. Verify the switch's key and add it to known_hosts",
                switch=self.name,
                port=port,
                action=action,
                detail=_first_line(exc),
            )
        return None

    def _check_prompt(self, conn: Any, *, port: str, action: str) -> None:
        """The first session: a prompt of another vendor's shape means the inventory is wrong."""
        prompt = str(conn.find_prompt()).strip()
        if self.cli.PROMPT_PATTERN.fullmatch(prompt):
            self._prompt_checked = True
            return
        others = [v for v in prompt_vendors(prompt, DRIVERS) if v != self.cli.NAME]
        raise WrongVendor(
            f"the CLI prompt {prompt!r} is not a {self.cli.NAME} prompt"
            + (f"; it looks like {' or '.join(others)}" if others else "")
            + f": probable wrong `vendor: {self.cli.NAME}` for this switch; nothing was sent",
            switch=self.name,
            port=port,
            action=action,
        )

    def _vendor_hint(self, output: str) -> str:
        others = looks_like(output, DRIVERS, self.cli.NAME)
        if not others:
            return ""
        return (
            f" (this is {' or '.join(others)} error text: probable wrong "
            f"`vendor: {self.cli.NAME}` for this switch)"
        )

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
            after_effect = index > script.effect_index  # the slow part (a Junos commit) comes after
            try:
                # No netmiko error_pattern: its exception keeps the command, not the device's
                # words. The reply is judged below, strictly: an error marker or any line the
                # vendor's knowledge cannot explain is a refusal, never a success.
                out = conn.send_config_set(
                    [command],
                    enter_config_mode=False,
                    exit_config_mode=False,
                    error_pattern="",
                    terminator=self.cli.CONFIG_TERMINATOR,
                    cmd_verify=True,
                    read_timeout=(
                        self.target.commit_timeout_s if after_effect else self.target.read_timeout_s
                    ),
                )
            except _transient() as exc:
                raise self._dialogue_failure(
                    conn,
                    exc,
                    command,
                    port=port,
                    action=action,
                    outcome_unknown=index >= script.effect_index,
                ) from None
            self._judge_reply(str(out), command, index, script, port=port, action=action)

    def _judge_reply(
        self, out: str, command: str, index: int, script: ChangeScript, *, port: str, action: str
    ) -> None:
        found = error_match(self.cli, out)
        odd = unexplained_lines(self.cli, out, (command,))
        if found is None and not odd:
            return
        words = device_words(odd or [found or ""])
        if found is not None:
            # The vendor's own error marker: that line did not take.
            kind: type[CommandRejected] = CommandRejected
            what = "rejected"
            unknown = index > script.effect_index
        else:
            # Words the driver cannot explain say nothing either way about the effect line.
            kind, what = UnexplainedReply, "answered with text the driver cannot explain to"
            unknown = index >= script.effect_index
        consequence = (
            "the change may already be in effect, read the port back"
            if unknown
            else "the port was not changed"
        )
        raise kind(
            f"the switch {what} {command!r}: {words!r}{self._vendor_hint(out)}; {consequence}",
            switch=self.name,
            port=port,
            action=action,
            outcome_unknown=unknown,
            detail=words,
        )

    def _send_command(
        self, conn: Any, command: str, *, port: str, action: str, outcome_unknown: bool
    ) -> str:
        try:
            out = conn.send_command(command, read_timeout=self.target.read_timeout_s)
        except _transient() as exc:
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
                f"the switch rejected {command!r}: {found}{self._vendor_hint(out)}",
                switch=self.name,
                port=port,
                action=action,
                outcome_unknown=outcome_unknown,
            )
        if not names_port(out, port):
            # Another vendor's error, an empty screen after a timeout, another port: whatever
            # it is, it says nothing about this port, so it is no read-back at all.
            raise UnexplainedReply(
                f"the read-back {command!r} does not name {port}: "
                f"{device_words(out) or '(no output)'!r}{self._vendor_hint(out)}"
                + ("; the change may be in effect, read the port back" if outcome_unknown else ""),
                switch=self.name,
                port=port,
                action=action,
                outcome_unknown=outcome_unknown,
                detail=device_words(out),
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
            except _transient() as exc:
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


def _fingerprint(key: Any) -> str:
    """`ssh-ed25519 SHA256:...`, as ssh-keygen -l prints it."""
    try:
        return f"{key.get_name()} {key.fingerprint}"
    except Exception:  # an exotic key object: its type is still worth showing
        return str(getattr(key, "get_name", lambda: "key")())


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
