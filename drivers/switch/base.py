"""Switch driver contract: vendor CLI protocol, port-name guard, result facts and the error tree."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from .restrictions import Restriction, RestrictionKind, RestrictionResult

AdminState = Literal["up", "down", "unknown"]
PortAction = Literal["shut", "restore"]

# What each action must leave behind; the read-back is compared with this.
EXPECTED_ADMIN: Mapping[PortAction, AdminState] = {"shut": "down", "restore": "up"}

# Longest interface name any supported vendor prints (Comware "Twenty-FiveGigE1/0/0/48" is 23);
# a generous bound keeps fuzzed or pasted junk out of command lines and logs.
MAX_PORT_NAME_LEN = 48

# How a switch's SSH host key is verified (switches.<name>.ssh.host_key): against a known_hosts
# file; trust on first use, pinned in the state directory (ssh's `accept-new`); or not at all,
# which only the loudly named opt-in allows.
HOST_KEY_MODES = ("known_hosts", "pin", "insecure-accept-any")

# Refused by name before any vendor pattern runs, so the error can say exactly why. These are
# the characters that end a CLI line, chain commands, quote, pipe or substitute on some shell.
FORBIDDEN_PORT_CHARS = frozenset("\r\n;'\"|`")


# --------------------------------------------------------------------------------------------
# Errors: one tree for the layer. Transient = try again later (the network or the device was
# busy); permanent = a human must fix config, inventory or the device before a retry can help.
# --------------------------------------------------------------------------------------------


class DriverError(Exception):
    """Base of every switch driver failure.

    `outcome_unknown` is True when a change command may have reached the switch before the
    failure: the port state must be read back (SNMP or a fresh session) before anything else.
    """

    def __init__(
        self,
        message: str,
        *,
        switch: str = "",
        port: str = "",
        action: str = "",
        outcome_unknown: bool = False,
        detail: str = "",
    ) -> None:
        where = "/".join(p for p in (switch, port) if p)
        prefix = f"[{where}{' ' + action if action else ''}] " if where or action else ""
        super().__init__(prefix + message)
        self.reason = message  # without the [switch/port] prefix, for re-raising with context
        self.switch = switch
        self.port = port
        self.action = action
        self.outcome_unknown = outcome_unknown
        self.detail = detail


class TransientDriverError(DriverError):
    """Timeouts, refused or dropped sessions: retry later, after reading the port state back."""


class PermanentDriverError(DriverError):
    """Bad port name, rejected command, bad credentials: fix the cause before retrying."""


class InvalidPortName(PermanentDriverError):
    """The interface name is unsafe or does not match the vendor's pattern or the inventory."""


class CommandRejected(PermanentDriverError):
    """The switch answered a command with its error marker (`% Invalid input`, `Error:` ...)."""


class AuthenticationFailed(PermanentDriverError):
    """The switch refused the credentials or the enable secret."""


class UnknownVendor(PermanentDriverError):
    """The configured vendor is not a registered driver."""


class SaveFailed(PermanentDriverError):
    """Saving the running configuration did not report success."""


class UnexplainedReply(CommandRejected):
    """The switch answered a line with text the driver cannot explain, or its read-back does not
    name the port: never taken for success, and the device's words travel in the message."""


class WrongVendor(PermanentDriverError):
    """The CLI answers like another vendor's: the inventory's `vendor` is probably wrong."""


class HostKeyRejected(PermanentDriverError):
    """The switch's SSH host key is unknown (strict known_hosts) or changed since it was pinned.

    Nothing was sent, not even the credentials: a changed key is what a spoofed management
    address looks like, so a person must check the switch before its key is trusted again.
    """


class SwitchUnreachable(TransientDriverError):
    """TCP connect, SSH handshake or the first prompt timed out."""


class SessionDropped(TransientDriverError):
    """The SSH session closed or stopped answering in the middle of a dialogue."""


# --------------------------------------------------------------------------------------------
# Vendor contract. Each vendor module implements this structurally (modules as protocol
# implementations), so adding a vendor is one module, one registry line, one fixture folder.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveSpec:
    """How a vendor saves its running config: the command, the questions it may ask, success."""

    command: str
    # (regex of a question the device may ask, answer to type); "" answers with Enter.
    prompts: tuple[tuple[str, str], ...] = ()
    success_pattern: str = ""
    timeout_s: float = 60.0


class VendorCli(Protocol):
    """Pure per-vendor knowledge: names, commands, parsers and error markers. No I/O."""

    NAME: str  # = module name = config value = netmiko device_type
    # Full-match pattern of a manageable access port; check-config validates the inventory's CLI
    # names with the same pattern (through canonical_port), so config and driver never disagree.
    INTERFACE_PATTERN: re.Pattern[str]
    ERROR_PATTERN: str  # the vendor's error marker (searched with re.M over the transcript)
    # A bare CLI prompt of this vendor (full match), also the prefix stripped off transcript lines.
    PROMPT_PATTERN: re.Pattern[str]
    # Lines a config command may print that mean nothing is wrong (mode banners, syslog). Any
    # other line in a reply is unexplained, and an unexplained reply is never a success.
    BENIGN_REPLY: re.Pattern[str]
    CONFIG_ENTER: tuple[str, ...]  # typed before the change, from the login mode
    CONFIG_EXIT: tuple[str, ...]  # typed after it, back to the login mode (commit for Junos)
    CONFIG_TERMINATOR: str  # regex of the prompt's last char in config mode (send_config_set)
    NEEDS_ENABLE: bool  # login may land in user EXEC and need `enable` + secret
    CMD_VERIFY: bool | None  # netmiko global_cmd_verify override; None = netmiko default
    SAVE: SaveSpec | None  # None: changes persist by themselves (Junos commit, Linux)

    def canonical_port(self, port: str) -> str:
        """Validate `port` and return the full name the device prints; raise InvalidPortName."""
        ...

    def render_shut(self, port: str) -> tuple[str, ...]:
        """Config-mode lines that administratively disable `port`; the last one takes effect."""
        ...

    def render_restore(self, port: str) -> tuple[str, ...]:
        """Config-mode lines that re-enable `port`; the last one takes effect."""
        ...

    def render_readback(self, port: str) -> str:
        """The exec-mode command whose output tells the port's admin state."""
        ...

    def parse_admin_state(self, output: str, port: str) -> AdminState:
        """Admin state of `port` in read-back output; `unknown` when the output is not clear."""
        ...


# --------------------------------------------------------------------------------------------
# Port-name guard, shared by every vendor.
# --------------------------------------------------------------------------------------------


def unsafe_reason(port: object) -> str | None:
    """Why `port` may never reach a CLI, or None when it is plain printable ASCII."""
    if not isinstance(port, str):
        return f"port name must be a string, got {type(port).__name__}"
    if not port:
        return "port name is empty"
    if len(port) > MAX_PORT_NAME_LEN:
        return f"port name is longer than {MAX_PORT_NAME_LEN} characters"
    for ch in port:
        if ch in FORBIDDEN_PORT_CHARS:
            return f"port name contains forbidden character {ch!r}"
        if unicodedata.category(ch)[0] == "C":  # Cc control, Cf format (bidi tricks), Cs, Co, Cn
            return f"port name contains control character U+{ord(ch):04X}"
        if not ch.isascii() or not ch.isprintable():
            # Vendor CLIs take ASCII names; anything else (U+2028, NBSP, homoglyphs) is a trap.
            return f"port name contains non-ASCII or unprintable character U+{ord(ch):04X}"
    return None


def checked_port(
    vendor: str,
    pattern: re.Pattern[str],
    port: str,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """Refuse unsafe names, then full-match the vendor pattern; return the canonical name.

    `re.fullmatch` matters: `re.match(r"...$", "Gi0/1\\n")` succeeds because `$` also matches
    before a trailing newline.
    """
    reason = unsafe_reason(port)
    if reason is not None:
        raise InvalidPortName(
            f"{reason}: {port!r}; fix the inventory entry (nothing was sent to the switch)",
            port=repr(port) if isinstance(port, str) else "",
        )
    name = expand_alias(port, aliases or {})
    if pattern.fullmatch(name) is None:
        raise InvalidPortName(
            f"{port!r} is not a {vendor} access-port name (pattern {pattern.pattern!r}); "
            "fix the inventory entry (nothing was sent to the switch)",
            port=port,
        )
    return name


_ALIAS_SPLIT = re.compile(r"([A-Za-z][A-Za-z0-9-]*?)(\d.*)", re.ASCII)


def expand_alias(port: str, aliases: Mapping[str, str]) -> str:
    """Expand a vendor abbreviation (`Gi1/0/1`, `XGE1/0/49`) to the full name the CLI prints."""
    m = _ALIAS_SPLIT.fullmatch(port)
    if m is None:
        return port
    prefix, rest = m.group(1), m.group(2)
    full = aliases.get(prefix.lower())
    return f"{full}{rest}" if full else port


def same_port(a: str, b: str) -> bool:
    """CLI interface names compare case-insensitively (IOS accepts `gigabitethernet0/1`)."""
    return a.casefold() == b.casefold()


# --------------------------------------------------------------------------------------------
# Change scripts: what the session types, and from which line on the port may have changed.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeScript:
    """Every line the session sends for one change; lines from `effect_index` on may take effect."""

    commands: tuple[str, ...]
    effect_index: int


def change_script(cli: VendorCli, action: PortAction, port: str) -> ChangeScript:
    """The full, ordered command list for `action` on `port` (mode entry and exit included)."""
    body = cli.render_shut(port) if action == "shut" else cli.render_restore(port)
    if not body:
        raise PermanentDriverError(f"{cli.NAME} rendered no commands for {action}", port=port)
    commands = (*cli.CONFIG_ENTER, *body, *cli.CONFIG_EXIT)
    return ChangeScript(commands=commands, effect_index=len(cli.CONFIG_ENTER) + len(body) - 1)


def error_match(cli: VendorCli, output: str) -> str | None:
    """The vendor's error line in `output`, or None; same search netmiko does (re.M)."""
    m = re.search(cli.ERROR_PATTERN, output, flags=re.M)
    return m.group(0).strip() if m else None


def unexplained_lines(cli: VendorCli, output: str, echoes: tuple[str, ...] = ()) -> list[str]:
    """The lines of a config reply the vendor's knowledge cannot explain (empty: all is well).

    Prompts (with the echoed command after them), the echoes themselves, blank lines and the
    vendor's benign lines (mode banners, syslog) are explained; everything else is the device
    saying something this driver does not understand, such as another vendor's error text.
    """
    typed = {e.strip() for e in echoes if e.strip()}
    out: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        m = cli.PROMPT_PATTERN.match(line)
        if m is not None:
            line = line[m.end() :].strip()  # a prompt, maybe with the echo or a log line after it
        if not line or line in typed or cli.BENIGN_REPLY.fullmatch(line):
            continue
        out.append(line)
    return out


def looks_like(output: str, clis: Mapping[str, VendorCli], own: str) -> list[str]:
    """Other vendors whose error marker matches `output` while `own`'s does not."""
    if re.search(clis[own].ERROR_PATTERN, output, flags=re.M):
        return []
    return [
        name
        for name, cli in sorted(clis.items())
        if name != own and re.search(cli.ERROR_PATTERN, output, flags=re.M)
    ]


def prompt_vendors(prompt: str, clis: Mapping[str, VendorCli]) -> list[str]:
    """The vendors whose prompt shape `prompt` has (IOS, EOS and a Linux shell look alike)."""
    bare = prompt.strip()
    return [name for name, cli in sorted(clis.items()) if cli.PROMPT_PATTERN.fullmatch(bare)]


def names_port(output: str, port: str) -> bool:
    """True when a read-back mentions the port it was asked about (any case), as a whole name:
    `GigabitEthernet1/0/12` does not name `GigabitEthernet1/0/1`."""
    whole = rf"(?<![\w/.:-]){re.escape(port)}(?![\w/]|[.:-]\w)"  # `p1:` yes, `Gi0/1.100` no
    return re.search(whole, output, flags=re.I) is not None


def device_words(lines: list[str] | str, limit: int = 240) -> str:
    """The device's own text, one line, bounded: for messages and the action record."""
    text = " | ".join(lines) if isinstance(lines, list) else " | ".join(
        ln.strip() for ln in lines.splitlines() if ln.strip()
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pending_question(spec: SaveSpec, output: str) -> str | None:
    """The answer to type when `output` ends with one of the save dialogue's questions."""
    tail = output.rstrip()
    for question, answer in spec.prompts:
        if re.search(f"(?:{question})$", tail):
            return answer
    return None


def save_succeeded(cli: VendorCli, output: str) -> bool:
    """True when a save transcript shows the vendor's success line and no error line."""
    if cli.SAVE is None:
        return True
    if error_match(cli, output) is not None:
        return False
    return re.search(cli.SAVE.success_pattern, output, flags=re.M) is not None


# --------------------------------------------------------------------------------------------
# Facts returned by sessions.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """What the CLI shows after a shut or restore; the enforcer decides APPLIED with SNMP too."""

    switch: str
    port: str
    action: PortAction
    expected: AdminState
    cli_admin: AdminState  # read back in the same session, right after the change
    duration_s: float
    saved: bool | None = None  # None: saving is off for this switch or not needed
    save_error: str = ""
    readback: str = field(default="", repr=False)

    @property
    def agrees(self) -> bool:
        """The CLI read-back shows the state the action asked for."""
        return self.cli_admin == self.expected


@dataclass(frozen=True, slots=True)
class AdminReading:
    """One CLI read of a port's admin state."""

    switch: str
    port: str
    admin: AdminState
    duration_s: float
    readback: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SaveResult:
    """A completed save of the running configuration."""

    switch: str
    duration_s: float
    transcript: str = field(default="", repr=False)


class SwitchDriver(Protocol):
    """What the enforcer needs from a switch; NetmikoSwitch is the real one, tests bring fakes."""

    name: str

    async def shut(self, port: str) -> ChangeResult: ...

    async def restore(self, port: str) -> ChangeResult: ...

    async def read_admin_state(self, port: str) -> AdminReading: ...

    async def save(self) -> SaveResult: ...

    # Graceful restrictions (drivers/switch/restrictions.py): police the port's ingress to a
    # rate, or drop one service (outbound SMTP) with an ACL. Each reads back in the same session.
    async def throttle(self, port: str, rate_bps: int) -> RestrictionResult: ...

    async def unthrottle(self, port: str) -> RestrictionResult: ...

    async def block_service(self, port: str, service: str) -> RestrictionResult: ...

    async def unblock_service(self, port: str, service: str) -> RestrictionResult: ...

    async def read_restriction(self, port: str, kind: RestrictionKind,
                               service: str | None = None) -> Restriction: ...
