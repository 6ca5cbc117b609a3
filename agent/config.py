"""Strict, frozen configuration: loads inventory and contracts, lists every error as file:line key: reason.

Each key is declared once in config_schema.py (kind, default, bounds, meaning); the section
readers below read the declared keys generically and keep code only for what ties keys together.
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from rackwarden.drivers.switch import port_name_problem
from rackwarden.policies.cap import CapRule, CapSchedule
from rackwarden.policies.detect import DETECTORS
from rackwarden.policies.ladder import DEFAULT_RULES, REASONS, LadderRule
from rackwarden.policies.safety import SafetyConfig
from rackwarden.policies.sla import NO_CREDIT

from .config_schema import (
    AGENT,
    AGENT_HA,
    AUTH_PROTOCOLS,
    CAP_CHANGE,
    CREDIT_RULES,
    DETECTION,
    ENFORCEMENT,
    EXEMPTION,
    MIRROR,
    MODES,
    NOTIFY,
    PRIV_PROTOCOLS,
    RULE,
    SAFETY,
    SCALAR_KINDS,
    SERVER,
    SFLOW,
    SMTP,
    SNMP_DEFAULTS,
    SPAN,
    SWITCH,
    SWITCH_SNMP,
    SWITCH_SSH,
    TEMPLATE,
    THRESHOLDS,
    TOP,
    VENDORS,
    From,
    Section,
    Setting,
)
from .textfile import TextFileError, read_text
from .yamldepth import MAX_DEPTH, too_deep

__all__ = [
    "AUTH_PROTOCOLS", "CREDIT_RULES", "MODES", "NO_CREDIT", "PRIV_PROTOCOLS", "VENDORS", "AgentSettings", "Config",
    "ConfigError", "DetectionConfig", "EnforcementConfig", "HaSettings", "MirrorConfig", "NotifyConfig",
    "RuleConfig", "Secret", "ServerConfig", "SmtpConfig", "SnmpAuth", "SshConfig", "SwitchConfig", "TemplateConfig",
    "expand_ports", "load", "loads", "mbps_to_bps",
]

# YAML 1.1 reads these as booleans; a strict config makes the author say what they mean.
AMBIGUOUS = {"yes", "no", "on", "off", "y", "n"}
_AMBIGUOUS_LEN = max(map(len, AMBIGUOUS))  # a longer value is not one: no lower() for it
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))  # a plain scalar YAML reads as no value
_RANGE = re.compile(r"^(?P<prefix>.*)\[(?P<lo>\d+)-(?P<hi>\d+)\](?P<suffix>.*)$")


class ConfigError(Exception):
    """A configuration that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[str]):
        super().__init__("\n".join(issues))
        self.issues = issues


class Secret:
    """A credential that never prints; reveal() is the only way to the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str):
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<{self.source}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SnmpAuth:
    version: str  # "2c" | "3"
    community: Secret | None = None
    user: str | None = None
    auth_protocol: str | None = None
    auth_key: Secret | None = None
    priv_protocol: str | None = None
    priv_key: Secret | None = None


@dataclass(frozen=True)
class SshConfig:
    username: str
    port: int = SWITCH_SSH.default("port")
    key_file: Path | None = None
    password: Secret | None = None
    known_hosts: Path | None = None
    save_config: bool = SWITCH_SSH.default("save_config")
    timeout_s: float = SWITCH_SSH.default("timeout_s")
    # known_hosts | pin | insecure-accept-any (drivers.switch.HOST_KEY_MODES), always set by the
    # loader; pin keeps the key first seen in pin_file (state_dir/ssh_host_keys/<switch>) and
    # refuses any other later.
    host_key: str | None = None
    pin_file: Path | None = None


@dataclass(frozen=True)
class SwitchConfig:
    name: str
    address: str
    vendor: str
    snmp: SnmpAuth
    snmp_port: int
    interval_s: float
    timeout_s: float
    retries: int
    max_repetitions: int
    port_speed_mbps: int
    ports: tuple[str, ...]
    protected_ports: frozenset[str]
    ssh: SshConfig | None = None
    sflow_agent: str | None = None  # the agent address in this switch's sFlow datagrams
    # Inventory names are the switch's ifName (what SNMP reports); where its CLI spells the
    # interface differently (ifName "p1" in the lab, CLI "GigabitEthernet0/1"), this maps them.
    cli_names: Mapping[str, str] = field(default_factory=dict)

    def cli_name(self, port: str) -> str:
        return self.cli_names.get(port, port)


@dataclass(frozen=True)
class TemplateConfig:
    name: str
    cap_mbps: float
    window_s: float
    direction: str
    billing_direction: str
    timezone: str
    credit: str  # a key of policies.sla.BUILTIN_TEMPLATES, or NO_CREDIT ("none"): seconds only


@dataclass(frozen=True)
class ServerConfig:
    id: str
    customer: str
    switch: str
    port: str
    ips: tuple[str, ...]
    template: str
    monthly_fee_fen: int
    cap_mbps: float | None  # override of the template's cap
    cap_changes: tuple[tuple[datetime, float], ...]  # (effective_at, cap_mbps), ascending
    contacts: tuple[str, ...] = ()  # customer notice addresses (R9)
    mail_server: bool = False  # declared mail server: exempt from the spam detector
    declared_ports: tuple[int, ...] = ()  # R8: service ports the customer declared open
    whitelist: tuple[str, ...] = ()  # destination networks the detectors never count against it
    # (detector or None for all, until, reason): time-limited waivers, e.g. a booked pentest
    exemptions: tuple[tuple[str | None, datetime, str], ...] = ()


@dataclass(frozen=True)
class HaSettings:
    """Shared deployment: this agent's name among those sharing the PostgreSQL ledger."""

    holder: str  # unique per agent; shown in enforcement_leases and pg_stat_activity
    renew_s: float = AGENT_HA.default("renew_s")


@dataclass(frozen=True)
class AgentSettings:
    state_dir: Path
    timezone: str
    mode: str
    metrics_listen: str
    metrics_port: int
    record_polls: bool
    max_gap_s: float
    snmp_max_concurrency: int
    api_listen: str = AGENT.default("api_listen")
    api_port: int = AGENT.default("api_port")
    metrics_web_config: Path | None = None  # basic auth / TLS, as the Prometheus exporters' web config
    api_web_config: Path | None = None  # TLS for the local API (the same file format, no basic auth)
    console_web_config: Path | None = None  # the console's operators (basic_auth_users)
    customers_web_config: Path | None = None  # the customer page's logins, per customer
    ledger_url: Secret | None = None  # None: sqlite in state_dir; PostgreSQL for shared deployments
    ha: HaSettings | None = None

    def ledger_database(self) -> str:
        """The ledger's database; the enforcement records (actions, rungs, audit, holds) live in
        it too, so one transaction writes a change with its outage entry, and a standby that
        takes a switch over reads what the previous holder did there."""
        return self.ledger_url.reveal() if self.ledger_url else f"sqlite:///{self.state_dir / 'ledger.sqlite'}"


@dataclass(frozen=True)
class RuleConfig:
    """One enforcement reason's ladder and mode (None: the agent's mode)."""

    mode: str | None
    rule: LadderRule


@dataclass(frozen=True)
class EnforcementConfig:
    rules: Mapping[str, RuleConfig]
    safety: SafetyConfig

    def mode_for(self, reason: str, default: str) -> str:
        r = self.rules.get(reason)
        return r.mode if r is not None and r.mode is not None else default


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    starttls: bool
    username: str | None
    password: Secret | None


@dataclass(frozen=True)
class MirrorConfig:
    """A SPAN/mirror pair for one switch port: where its ingress and egress copies arrive."""

    switch: str
    port: str
    ingress: str | None
    egress: str | None


@dataclass(frozen=True)
class DetectionConfig:
    sflow_listen: str | None = None  # None: no sFlow collector
    sflow_port: int = SFLOW.default("port")
    span_mirrors: tuple[MirrorConfig, ...] = ()
    span_netns: str | None = None  # capture inside this network namespace (the lab's switch)
    span_mode: str = SPAN.default("mode")
    evaluate_interval_s: float = DETECTION.default("evaluate_interval_s")
    detector_engine: str = DETECTION.default("engine")
    thresholds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # template -> fields

    @property
    def enabled(self) -> bool:
        return self.sflow_listen is not None or bool(self.span_mirrors)


@dataclass(frozen=True)
class NotifyConfig:
    smtp: SmtpConfig | None = None
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    language: str = NOTIFY.default("language")
    operator_contact: str = NOTIFY.default("operator_contact")


@dataclass(frozen=True)
class Config:
    path: Path
    agent: AgentSettings
    templates: Mapping[str, TemplateConfig]
    switches: Mapping[str, SwitchConfig]
    servers: tuple[ServerConfig, ...]
    enforcement: EnforcementConfig = field(default_factory=lambda: _default_enforcement())
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    _by_port: Mapping[tuple[str, str], ServerConfig] = field(repr=False, default_factory=dict)
    # `file:line key: not checked: …` for each credential load(require_credentials=False) could
    # not read; a Config with any is for check-config's report only.
    unchecked: tuple[str, ...] = ()
    # `file:line key: WARNING …` for settings that load but weaken security (an SSH host key
    # accepted unverified); check-config prints them and the agent logs them.
    warnings: tuple[str, ...] = ()

    def server(self, server_id: str) -> ServerConfig | None:
        return next((s for s in self.servers if s.id == server_id), None)

    def server_on(self, switch: str, port: str) -> ServerConfig | None:
        return self._by_port.get((switch, port))

    def servers_on(self, switch: str) -> list[ServerConfig]:
        return [s for s in self.servers if s.switch == switch]

    def cap_schedule(self, server: ServerConfig) -> CapSchedule:
        base = server.cap_mbps if server.cap_mbps is not None else self.templates[server.template].cap_mbps
        return CapSchedule(
            base_cap_bps=mbps_to_bps(base),
            changes=tuple((at, mbps_to_bps(c)) for at, c in server.cap_changes),
        )

    def cap_rule(self, server: ServerConfig, at: datetime) -> CapRule:
        t = self.templates[server.template]
        return CapRule(
            cap_bps=self.cap_schedule(server).cap_at(at),
            window_s=t.window_s,
            direction=t.direction,  # type: ignore[arg-type]
        )


def _default_enforcement() -> EnforcementConfig:
    return EnforcementConfig(
        rules=MappingProxyType({k: RuleConfig(None, v) for k, v in DEFAULT_RULES.items()}),
        safety=SafetyConfig(),
    )


def mbps_to_bps(mbps: float) -> int:
    return round(mbps * 1_000_000)


# ---------------------------------------------------------------------------------------------
# A small strict reader over PyYAML's node tree, which keeps line numbers and raw scalar text.


_FULLMATCH: dict[str, Callable[[str], re.Match[str] | None]] = {}


def _fullmatch(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """`pattern`'s compiled fullmatch, compiled once (re.fullmatch looks it up in re's cache on
    every call: 10,000 servers ask for a handful of patterns some 40,000 times)."""
    match = _FULLMATCH.get(pattern)
    if match is None:
        match = _FULLMATCH[pattern] = re.compile(pattern).fullmatch
    return match


_WHOLE_NUMBER = _fullmatch(r"[+-]?\d+(_\d+)*")

# An IPv4 address already as ipaddress writes it: four octets 0-255 in ASCII digits without
# leading zeros. Most of a fleet's addresses are; they skip ipaddress's parse and print.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = _fullmatch(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def _canonical_ip(text: str) -> str:
    """`text` as ipaddress writes the address (ValueError when it is not one)."""
    if _PLAIN_IPV4(text) is not None:
        return text
    return str(ipaddress.ip_address(text))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Unchecked:
    """A credential that could not be looked for: no credentials directory, and none required."""


class _Reader:
    def __init__(self, file: str, base: Path, credentials_dir: str | Path | None = None,
                 require_credentials: bool = True):
        self.file = file
        self.base = base  # relative paths in the file are relative to its folder
        self.issues: list[str] = []
        self.unchecked: list[str] = []
        self.warnings: list[str] = []
        self.require_credentials = require_credentials
        given = credentials_dir if credentials_dir is not None else os.environ.get("CREDENTIALS_DIRECTORY")
        self.credentials_dir = Path(given) if given else None
        self._own: dict[str, str] = {}

    def own(self, text: str) -> str:
        """`text` (a node's string) as a string of the config's own, one per distinct value.

        The config must not keep the node tree's strings: each would keep its 16 KB pymalloc
        pool mapped after the tree is freed (~80 MB at 10,000 servers, bench/scale.py). A copy
        made now sits with the config's other objects; equal values share one copy."""
        kept = self._own.get(text)
        if kept is None:
            kept = self._own[text] = text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
        return kept

    def error(self, node: yaml.Node | None, key: str, reason: str) -> None:
        self.issues.append(f"{self.file}:{self._line(node)} {key}: {reason}")

    @staticmethod
    def _line(node: yaml.Node | None) -> int:
        return node.start_mark.line + 1 if node is not None else 0

    def credential(self, node: yaml.Node, key: str, name: str) -> Path | _Unchecked | None:
        """Where `{credential: NAME}` is; _Unchecked when there is no directory to look in and
        none is required (listed in self.unchecked); None when that is an error (listed)."""
        if self.credentials_dir is None:
            if self.require_credentials:
                self.error(node, key, "credential given but $CREDENTIALS_DIRECTORY is not set"
                           " (systemd sets it with LoadCredential=; or give --credentials-dir DIR)")
                return None
            self.unchecked.append(f"{self.file}:{self._line(node)} {key}: not checked: credential '{name}'"
                                  " ($CREDENTIALS_DIRECTORY is not set)")
            return _Unchecked()
        return self.credentials_dir / name

    def wrong_type(self, node: yaml.Node, key: str, expected: str) -> None:
        if isinstance(node, yaml.ScalarNode) and node.style is None and node.value.lower() in AMBIGUOUS:
            self.error(node, key, f"ambiguous value '{node.value}': {expected}")
        else:
            self.error(node, key, expected)

    def mapping(
        self, node: yaml.Node, key: str, required: tuple[str, ...], optional: tuple[str, ...],
        hints: Mapping[str, str] | None = None,
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.wrong_type(node, key, "expected a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        kept = self._own
        for k_node, v_node in node.value:
            k = kept.get(k_node.value) if type(k_node.value) is str else None
            if k is None:
                k = self.own(str(k_node.value))
            if k in out:
                self.error(k_node, _join(key, k), "duplicate key")
            elif k not in required and k not in optional:
                allowed = ", ".join(sorted(required + optional))
                self.error(k_node, _join(key, k), f"unknown key (allowed: {allowed})")
            else:
                out[k] = v_node
        for r in required:
            if r not in out:
                hint = (hints or {}).get(r)
                self.error(node, _join(key, r), f"required key missing: {hint}" if hint else "required key missing")
        return out

    def section(self, node: yaml.Node, path: str, sec: Section) -> dict[str, yaml.Node] | None:
        """The mapping at `path` with the keys `sec` declares; a missing choice names its values."""
        plan = _plan(sec)
        return self.mapping(node, path, plan.required, plan.optional, plan.hints)

    def settings(
        self, m: Mapping[str, yaml.Node], path: str, sec: Section, skip: tuple[str, ...] = (), **inherited: Any
    ) -> dict[str, Any]:
        """Every scalar setting of `sec` by its attribute name: the value read, else its default.

        A required key that is missing or invalid is None (the error is already listed); a
        From(...) default is the caller's, passed by attribute name in `inherited`.
        """
        out: dict[str, Any] = {}
        for s, key, name, how in _plan(sec).scalars:
            if key in skip:
                continue
            if how == _INHERITED:
                default = inherited[name]
            elif how == _PATH:
                default = self.path(s.default)
            else:
                default = s.default if how == _CONSTANT else None
            value = self.setting(m[key], f"{path}.{key}" if path else key, s) if key in m else None
            out[name] = default if value is None else value
        return out

    def setting(self, node: yaml.Node, key: str, s: Setting) -> Any:
        """One value of a declared kind; None (and an error listed) when it is not one."""
        if s.kind == "text":
            v = self.string(node, key, s.pattern)
            if v == "" and s.required:
                self.error(node, key, "value missing")
                return None
            return v
        if s.kind == "int":
            return self.integer(node, key, _int_or_none(s.lo), _int_or_none(s.hi))
        if s.kind == "number":
            return self.number(node, key, s.lo, s.hi)
        if s.kind == "bool":
            return self.boolean(node, key)
        if s.kind == "choice":
            return self.choice(node, key, s.choices)
        if s.kind == "timezone":
            return self.timezone(node, key)
        if s.kind == "secret":
            return self.secret(node, key)
        if s.kind == "path":
            v = self.string(node, key)
            if v == "":
                self.error(node, key, "value missing")
            return self.path(v) if v else None
        if s.kind == "file":
            return self.existing_file(node, key)
        if s.kind == "int_list":
            ns = (self.integer(n, key, _int_or_none(s.lo), _int_or_none(s.hi)) for n in self.seq(node, key))
            return tuple(n for n in ns if n is not None)
        if s.kind == "text_list":
            ts = (self.string(n, key, s.pattern) for n in self.seq(node, key))
            return tuple(t for t in ts if t is not None)
        raise AssertionError(f"{key}: kind {s.kind} is read by its section's own code")

    def scalar(self, node: yaml.Node, key: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, "expected a single value")
            return None
        value = node.value
        if node.style is None:
            if len(value) <= _AMBIGUOUS_LEN and value.lower() in AMBIGUOUS:
                self.error(node, key, f"ambiguous value '{value}': write true/false or quote it")
                return None
            if value in _NULLS:
                self.error(node, key, "value missing")
                return None
        kept = self._own.get(value)  # own(), inlined: the readers' most frequent call
        return kept if kept is not None else self.own(str(value))

    def string(self, node: yaml.Node, key: str, pattern: str | None = None) -> str | None:
        v = self.scalar(node, key)
        if v is not None and pattern and not _fullmatch(pattern)(v):
            self.error(node, key, f"'{v}' does not match {pattern}")
            return None
        return v

    def integer(self, node: yaml.Node, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.scalar(node, key)
        if v is None:
            return None
        if not _WHOLE_NUMBER(v):
            self.error(node, key, f"'{v}' is not a whole number")
            return None
        n = int(v.replace("_", ""))
        return n if self._in_range(node, key, n, lo, hi) else None

    def number(self, node: yaml.Node, key: str, lo: float | None = None, hi: float | None = None) -> float | None:
        v = self.scalar(node, key)
        if v is None:
            return None
        try:
            n = float(v.replace("_", ""))
        except ValueError:
            self.error(node, key, f"'{v}' is not a number")
            return None
        return n if self._in_range(node, key, n, lo, hi) else None

    def _in_range(self, node: yaml.Node, key: str, n: float, lo: float | None, hi: float | None) -> bool:
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            self.error(node, key, f"{n:g} is outside {lo:g}..{hi:g}" if hi is not None and lo is not None
                       else f"{n:g} must be at least {lo:g}" if lo is not None else f"{n:g} must be at most {hi:g}")
            return False
        return True

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            if node.value in ("true", "True", "false", "False"):
                return str(node.value).lower() == "true"
        self.wrong_type(node, key, f"expected true or false, got '{getattr(node, 'value', '?')}'")
        return None

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str | None:
        v = self.scalar(node, key)
        if v is not None and v not in choices:
            self.error(node, key, f"'{v}' is not one of {', '.join(choices)}")
            return None
        return v

    def seq(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.wrong_type(node, key, "expected a list")
            return []
        return list(node.value)

    def timezone(self, node: yaml.Node, key: str) -> str | None:
        v = self.scalar(node, key)
        if v is None:
            return None
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(node, key, f"unknown timezone '{v}'")
            return None
        return v

    def path(self, name: str) -> Path:
        return Path(name) if os.path.isabs(name) else self.base / name

    def existing_file(self, node: yaml.Node, key: str) -> Path | None:
        """An existing file: a path, or {credential: NAME} in $CREDENTIALS_DIRECTORY."""
        if isinstance(node, yaml.MappingNode):
            # A file systemd hands over with LoadCredential= (ProtectHome hides /root/.ssh).
            c = self.mapping(node, key, ("credential",), ())
            name = self.string(c["credential"], f"{key}.credential") if c and "credential" in c else None
            if name is None:
                return None
            where = self.credential(node, key, name)
            if where is None:
                return None
            if isinstance(where, _Unchecked):
                return Path("$CREDENTIALS_DIRECTORY") / name  # for the report; never opened
            if not where.exists():
                self.error(node, key, f"credential file {where} does not exist")
            return where
        v = self.string(node, key)
        if v is None:
            return None
        path = self.path(v)
        if not path.exists():
            self.error(node, key, f"file {path} does not exist")
        return path

    def secret(self, node: yaml.Node, key: str) -> Secret | None:
        """A secret is inline text, {file: PATH} or {credential: NAME} ($CREDENTIALS_DIRECTORY)."""
        if isinstance(node, yaml.ScalarNode):
            v = self.scalar(node, key)
            return Secret(v, f"inline {key}") if v is not None else None
        m = self.mapping(node, key, (), ("file", "credential"))
        if m is None:
            return None
        if len(m) != 1:
            self.error(node, key, "give exactly one of file or credential")
            return None
        if "file" in m:
            name = self.scalar(m["file"], f"{key}.file")
            if name is None:
                return None
            path = self.path(name)
        else:
            name = self.scalar(m["credential"], f"{key}.credential")
            if name is None:
                return None
            where = self.credential(node, key, name)
            if where is None:
                return None
            if isinstance(where, _Unchecked):
                return Secret("", f"credential {name}, not checked")
            path = where
        try:
            value = read_text(path).strip()
        except OSError as e:
            self.error(node, key, f"cannot read secret file {path}: {e.strerror}")
            return None
        except TextFileError as e:
            self.error(node, key, f"secret file {e}")
            return None
        if not value:
            self.error(node, key, f"secret file {path} is empty")
            return None
        return Secret(value, str(path))


def _int_or_none(x: float | None) -> int | None:
    return None if x is None else int(x)


def _complete(values: Mapping[str, Any], sec: Section) -> bool:
    """Whether every required setting read generically has a value (a missing or bad one is an error already)."""
    return all(values[n] is not None for n in _plan(sec).required_names if n in values)


# How _Reader.settings finds a scalar setting's default.
_CONSTANT, _REQUIRED_KEY, _INHERITED, _PATH = range(4)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the readers ask of a Section on every mapping, worked out once per Section: the
    properties were recomputed for every server (cProfile of a 10,000-server load)."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    hints: Mapping[str, str]
    scalars: tuple[tuple[Setting, str, str, int], ...]  # (setting, key, attribute name, _CONSTANT...)
    required_names: tuple[str, ...]


_PLANS: dict[int, tuple[Section, _Plan]] = {}


def _plan(sec: Section) -> _Plan:
    hit = _PLANS.get(id(sec))
    if hit is not None and hit[0] is sec:  # Sections are frozen: a plan never goes stale
        return hit[1]
    scalars = []
    for s in sec:
        if s.kind not in SCALAR_KINDS:
            continue
        how = (_INHERITED if isinstance(s.default, From) else _REQUIRED_KEY if s.required
               else _PATH if s.kind == "path" and isinstance(s.default, str) else _CONSTANT)
        scalars.append((s, s.key, s.name, how))
    plan = _Plan(
        required=sec.required, optional=sec.optional,
        hints={s.key: "one of " + ", ".join(s.choices) for s in sec if s.required and s.choices},
        scalars=tuple(scalars), required_names=tuple(s.name for s in sec if s.required),
    )
    _PLANS[id(sec)] = (sec, plan)
    return plan


def _names(node: yaml.Node) -> tuple[str, ...]:
    """The keys of a mapping whose keys the author chooses (switch names, template names)."""
    return tuple(str(k.value) for k, _ in getattr(node, "value", []))


def expand_ports(spec: str) -> list[str]:
    """`Gi0/[1-48]` → Gi0/1 … Gi0/48; a name without a range is itself."""
    m = _RANGE.match(spec)
    if not m:
        return [spec]
    lo, hi = int(m["lo"]), int(m["hi"])
    return [f"{m['prefix']}{i}{m['suffix']}" for i in range(lo, hi + 1)]


def _parse_when(text: str, tz: str) -> datetime | None:
    """A date means midnight in the contract's timezone; a datetime must carry an offset."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), time(0), ZoneInfo(tz))
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _when(r: _Reader, node: yaml.Node, key: str, tz: str) -> datetime | None:
    text = r.scalar(node, key)
    when = _parse_when(text, tz) if text else None
    if text and when is None:
        r.error(node, key, f"'{text}' is not a date or an ISO time with offset")
    return when


# ---------------------------------------------------------------------------------------------


def load(path: str | Path, *, credentials_dir: str | Path | None = None,
         require_credentials: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem.

    `{credential: NAME}` values are read from `credentials_dir`, else $CREDENTIALS_DIRECTORY.
    With neither, they are an error, unless `require_credentials` is False (check-config on a
    workstation): then each is listed in Config.unchecked and holds a placeholder, so such a
    Config is only for reporting, never for running.
    """
    path = Path(path)
    try:
        text = read_text(path)
    except OSError as e:
        raise ConfigError([f"{path}:0 (file): cannot read: {e.strerror}"]) from e
    except TextFileError as e:
        raise ConfigError([f"{path}:{e.line} (file): {e.reason}"]) from None
    return loads(text, str(path), base=path.parent, credentials_dir=credentials_dir,
                 require_credentials=require_credentials)


class _MemoResolver(yaml.resolver.Resolver):
    """PyYAML's resolver with its answers for plain scalars remembered per load: a fleet's
    files repeat the same keys and values thousands of times, and resolving each is a regex
    walk. While no path resolver is registered (none is: path resolvers are what descend and
    ascend track), PyYAML's answer for a plain scalar depends on its text alone (its implicit
    flags matter only to path resolvers), and for anything else it is the kind's default tag
    without a regex, so that is asked of PyYAML every time."""

    _plain_tags: dict[Any, Any]  # made on the first plain scalar of a load (text -> tag)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode or not implicit[0] or self.yaml_path_resolvers:
            return _RESOLVE(self, kind, value, implicit)
        # Keyed by the text only: a (kind, value, implicit) key would be one small tuple per
        # distinct value, made between the tree's nodes and all freed with the loader, and the
        # holes they leave are where the config's own objects then go, which keeps the whole
        # tree's memory mapped after the load (bench/scale.py, issue 10).
        try:
            plain = self._plain_tags
        except AttributeError:
            plain = self._plain_tags = {}
        tag = plain.get(value)
        if tag is None:
            tag = plain[value] = _RESOLVE(self, kind, value, implicit)
        return tag


_RESOLVE: Callable[..., Any] = yaml.resolver.BaseResolver.resolve  # (PyYAML has no annotations)


# Text libyaml takes where PyYAML refuses it: a tab ("a\t" at the end of a line), a comment
# right after a block scalar's header ("|#"), tag handles PyYAML does not ("!?!"; a config has
# no use for tags). A file with any of them anywhere (even quoted) gets the reference composer's
# answer, error or not. Found by tests/unit/test_config_loader_equivalence.py. Each pattern is
# looked for only when its first character is in the text (a regex over 2 MB costs 20-100 ms).
_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")
_TAG = re.compile(r"[\s\[{,]!")


def _libyaml_lenient(text: str) -> bool:
    return ("\t" in text
            or (("|" in text or ">" in text) and _BLOCK_HEADER_COMMENT.search(text) is not None)
            or ("!" in text and (text.startswith("!") or _TAG.search(text) is not None)))


# PyYAML's binding of libyaml, when it was built with it: None on an install without.
_C_LOADER: type[Any] | None = (
    type("_CLoader", (yaml.CSafeLoader, _MemoResolver), {}) if hasattr(yaml, "CSafeLoader") else None)


def _plain_style_none(root: yaml.Node) -> bool:
    """libyaml's composer marks plain scalars with style '' where the pure-Python one gives
    None, and the readers tell a plain `yes` or `~` from a quoted one by `style is None`.

    False when the tree has an empty plain scalar (`key:` with no value): the two composers
    place its mark differently (libyaml at the next token, sometimes the next line), and an
    error about it names that line, so such a file is composed by the pure-Python one.
    """
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.style == "":
                if not node.value:
                    return False
                node.style = None
            continue
        if id(node) in seen:  # an alias repeats a node (or, `&a [*a]`, contains itself)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append(k)
                stack.append(v)
        else:
            stack.extend(node.value)
    return True


# agent/_yamlcompose.c, built with libyaml-dev (pyproject's ext-modules); without it, PyYAML's
# own libyaml binding composes (then, for what libyaml refuses, the pure-Python composer).
try:
    from ._yamlcompose_c import compose as _yaml_c_compose
except ImportError as exc:  # pragma: no cover - depends on the build
    _yaml_c_compose = None
    YAML_C_ERROR: str | None = f"the C YAML composer is not built ({exc})"
else:
    YAML_C_ERROR = None
_told_no_c = False  # whether the first load without it said so (a warning, once)

# PyYAML's resolver, as its composers ask it; the C composer remembers its answers per load.
_RESOLVER = yaml.resolver.Resolver()


def _compose(text: str) -> yaml.Node | None:
    """The node tree of `text`, with a libyaml composer when there is one (bench/scale.py has
    the before/after) and the same tree: the same values, styles, tags (all use PyYAML's own
    resolver) and start marks. First choice is agent/_yamlcompose.c (libyaml's events straight
    to PyYAML's node classes); without its build, PyYAML's libyaml binding. Whatever libyaml
    refuses, or cannot take (a lone surrogate in `text`), is composed again by the
    pure-Python composer, so an error is the one it always gave, with its line
    (tests/unit/test_config_loader_equivalence.py)."""
    if _libyaml_lenient(text) or _RESOLVER.yaml_path_resolvers:
        return yaml.compose(text)
    if _yaml_c_compose is not None:
        got = _yaml_c_compose(text, _RESOLVER.resolve, yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode,
                              MAX_DEPTH)
        return got[0] if got is not None else yaml.compose(text)
    global _told_no_c
    if not _told_no_c:
        _told_no_c = True
        logging.getLogger(__name__).warning(
            "%s: config loads compose with PyYAML's libyaml binding, about 1.2x slower",
            YAML_C_ERROR or "the C YAML composer is not in use")
    if _C_LOADER is not None:
        try:
            root: yaml.Node | None = yaml.compose(text, Loader=_C_LOADER)
        except Exception:  # noqa: BLE001 - any refusal: the reference composer says why
            pass
        else:
            if root is None or _plain_style_none(root):
                return root
    return yaml.compose(text)


def loads(text: str, file: str = "<config>", base: Path | None = None, *,
          credentials_dir: str | Path | None = None, require_credentials: bool = True) -> Config:
    # The cyclic GC would run full collections over and over while the node tree and the
    # config grow, and find nothing: neither has reference cycles. One collection after the
    # load releases whatever a failed load left (a traceback's frames); the node tree itself
    # goes by reference counting on return, and malloc_trim hands glibc's freed pages back.
    # pymalloc hands an arena back only when no object in it lives: the config keeps none of
    # the tree's objects (_Reader.own) and the composer leaves no holes between the tree's
    # nodes for the config's objects to fill (_MemoResolver), so the tree's arenas go back.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _loads(text, file, base, credentials_dir=credentials_dir, require_credentials=require_credentials)
    finally:
        if enabled:
            gc.enable()
        gc.collect()
        _release_heap()


def _release_heap() -> None:
    """glibc keeps freed heap pages mapped; malloc_trim hands them back. Elsewhere, nothing."""
    trim = _MALLOC_TRIM
    if trim is not None:
        trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _loads(text: str, file: str, base: Path | None, *,
           credentials_dir: str | Path | None, require_credentials: bool) -> Config:
    r = _Reader(file, base or Path.cwd(), credentials_dir, require_credentials)
    try:
        root = _compose(text)
    except yaml.reader.ReaderError as e:
        # A character YAML refuses (NUL, other control bytes): its error has only an offset.
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError([f"{file}:{line} (file): character {e.character!r} is not allowed"
                           " in a config file (a binary file?)"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError([f"{file}:{line} (syntax): {getattr(e, 'problem', e)}"]) from e
    except RecursionError:
        line, reason = too_deep(text)
        raise ConfigError([f"{file}:{line} (syntax): {reason}"]) from None
    if root is None:
        raise ConfigError([f"{file}:1 (file): empty configuration"])
    top = r.section(root, "", TOP)
    if top is None:
        raise ConfigError(r.issues)
    version = r.settings(top, "", TOP)["version"]
    if version != 1:
        r.error(top["version"], "version", f"unsupported version {version} (this agent reads 1)")
    agent = _agent(r, top.get("agent"))
    agent_tz = agent.timezone if agent else AGENT.default("timezone")
    defaults = _snmp_defaults(r, top.get("snmp_defaults"))
    templates = _templates(r, top["templates"], agent_tz) if "templates" in top else {}
    declared = _Declared()
    pins = agent.state_dir / "ssh_host_keys" if agent else None
    switches = _switches(r, top["switches"], defaults, declared, pins) if "switches" in top else {}
    # Names declared but invalid were reported already; their servers must not cascade.
    declared.names = set(_names(top["switches"])) if "switches" in top else set()
    declared.names |= set(_names(top["templates"])) if "templates" in top else set()
    servers = _servers(r, top["servers"], switches, templates, declared, agent_tz) if "servers" in top else []
    enforcement = _enforcement(r, top.get("enforcement"))
    notify = _notify(r, top.get("notify"))
    detection = _detection(r, top.get("detection"), switches, templates)
    if agent is not None and (agent.console_web_config or agent.customers_web_config):
        _web_logins(r, top["agent"], agent, frozenset(s.customer for s in servers))
    if r.issues or agent is None:
        raise ConfigError(r.issues)
    by_port = {(s.switch, s.port): s for s in servers}
    return Config(
        path=Path(file),
        agent=agent,
        templates=MappingProxyType(templates),
        switches=MappingProxyType(switches),
        servers=tuple(servers),
        enforcement=enforcement,
        notify=notify,
        detection=detection,
        _by_port=MappingProxyType(by_port),
        unchecked=tuple(r.unchecked),
        warnings=tuple(r.warnings),
    )


def _web_logins(r: _Reader, node: yaml.Node, agent: AgentSettings, customers: frozenset[str]) -> None:
    """The console's and the customer page's login files load as the daemon will load them."""
    from .web.auth import CustomersConfigError, load_customers_config, operator_users
    from .webauth import WebConfigError, load_web_config

    where = {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
    if agent.console_web_config is not None:
        try:
            if not operator_users(load_web_config(agent.console_web_config)):
                raise WebConfigError(f"{agent.console_web_config}: no basic_auth_users: nobody could log in")
        except WebConfigError as e:
            r.error(where.get("console_web_config", node), "agent.console_web_config", str(e))
    if agent.customers_web_config is not None:
        try:
            load_customers_config(agent.customers_web_config, customers)
        except CustomersConfigError as e:
            r.error(where.get("customers_web_config", node), "agent.customers_web_config", str(e))


def _agent(r: _Reader, node: yaml.Node | None) -> AgentSettings | None:
    m = r.section(node, "agent", AGENT) if node is not None else {}
    if m is None:
        return None
    v = r.settings(m, "agent", AGENT)
    from .webauth import WebConfigError, validate_api
    from .webauth import validate as validate_web  # the exporter-style web config and bind policy

    try:
        validate_web(v["metrics_listen"], v["metrics_web_config"])  # warnings (auth without TLS) are the daemon's
    except WebConfigError as e:
        r.error(m.get("metrics_web_config", m.get("metrics_listen", node)), "agent.metrics_web_config", str(e))
    if v["api_listen"] is not None:
        try:
            validate_api(v["api_listen"], v["api_web_config"])
        except WebConfigError as e:
            key = "api_web_config" if "api_web_config" in m else "api_listen"
            r.error(m.get(key, node), f"agent.{key}", str(e))
    ha = None
    if "ha" in m:
        h = r.section(m["ha"], "agent.ha", AGENT_HA)
        hv = r.settings(h, "agent.ha", AGENT_HA) if h is not None else None
        if hv is not None and _complete(hv, AGENT_HA):
            ha = HaSettings(**hv)
        url = v["ledger_url"]
        if url is None or not url.reveal().startswith("postgresql"):
            r.error(m["ha"], "agent.ha", "needs agent.ledger_url on PostgreSQL (postgresql+psycopg://...):"
                    " the leases live in the shared ledger's database")
    return AgentSettings(**v, ha=ha)


def _snmp_defaults(r: _Reader, node: yaml.Node | None) -> dict[str, Any]:
    """snmp_defaults by key; a switch's own keys override them."""
    m = r.section(node, "snmp_defaults", SNMP_DEFAULTS) if node is not None else {}
    return r.settings(m or {}, "snmp_defaults", SNMP_DEFAULTS)


def _templates(r: _Reader, node: yaml.Node, default_tz: str) -> dict[str, TemplateConfig]:
    out: dict[str, TemplateConfig] = {}
    tm = r.mapping(node, "templates", (), _names(node))
    for name, tnode in (tm or {}).items():
        p = f"templates.{name}"
        m = r.section(tnode, p, TEMPLATE)
        if m is None:
            continue
        v = r.settings(m, p, TEMPLATE, timezone=default_tz)
        if _complete(v, TEMPLATE):
            out[name] = TemplateConfig(name=name, **v)
    return out


def _snmp_auth(r: _Reader, node: yaml.Node, p: str) -> SnmpAuth | None:
    m = r.section(node, p, SWITCH_SNMP)
    if m is None or "version" not in m:
        return None
    v = r.settings(m, p, SWITCH_SNMP)
    if v["version"] == "2c":
        if "community" not in m:
            r.error(node, f"{p}.community", "SNMP v2c needs a community")
            return None
        for k in m:
            if k not in ("version", "community"):
                r.error(m[k], f"{p}.{k}", "only for SNMP version 3")
        return SnmpAuth("2c", community=v["community"]) if v["community"] else None
    if v["version"] == "3":
        # authPriv only: a metering feed that decides shutdowns must not be spoofable.
        missing = [k for k in ("user", "auth_key", "priv_key") if k not in m]
        for k in missing:
            r.error(node, f"{p}.{k}", "SNMPv3 needs user, auth_key and priv_key (authPriv)")
        if "community" in m:
            r.error(m["community"], f"{p}.community", "not used with SNMP version 3")
        if missing:
            return None
        return SnmpAuth("3", user=v["user"], auth_protocol=v["auth_protocol"], auth_key=v["auth_key"],
                        priv_protocol=v["priv_protocol"], priv_key=v["priv_key"])
    return None


@dataclass
class _Declared:
    """What the file declares even where a part is invalid, so later checks still run."""

    names: set[str] = field(default_factory=set)
    ports: dict[str, tuple[tuple[str, ...], frozenset[str], int]] = field(default_factory=dict)


def _switches(r: _Reader, node: yaml.Node, d: Mapping[str, Any], declared: _Declared,
              pins: Path | None) -> dict[str, SwitchConfig]:
    out: dict[str, SwitchConfig] = {}
    sm = r.mapping(node, "switches", (), _names(node))
    # Every switch of a fleet spells the same ports: ask the driver once per (vendor, name).
    problems: dict[tuple[str, str], str | None] = {}
    for name, snode in (sm or {}).items():
        p = f"switches.{name}"
        m = r.section(snode, p, SWITCH)
        if m is None:
            continue
        v = r.settings(m, p, SWITCH, snmp_port=d["port"], interval_s=d["interval_s"], timeout_s=d["timeout_s"],
                       retries=d["retries"], max_repetitions=d["max_repetitions"])
        address = v["address"]
        if address is not None:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9.-]+", address):
                    r.error(m["address"], f"{p}.address", f"'{address}' is not an IP address or host name")
        snmp = _snmp_auth(r, m["snmp"], f"{p}.snmp") if "snmp" in m else None
        ports: list[str] = []
        port_nodes: dict[str, yaml.Node] = {}
        for pn in r.seq(m["ports"], f"{p}.ports") if "ports" in m else []:
            spec = r.string(pn, f"{p}.ports")
            for port in expand_ports(spec) if spec else []:
                if port in ports:
                    r.error(pn, f"{p}.ports", f"duplicate port '{port}'")
                else:
                    ports.append(port)
                    port_nodes[port] = pn
        protected: set[str] = set()
        for pn in r.seq(m["protected_ports"], f"{p}.protected_ports") if "protected_ports" in m else []:
            spec = r.string(pn, f"{p}.protected_ports")
            for port in expand_ports(spec) if spec else []:
                if port not in ports:
                    r.error(pn, f"{p}.protected_ports", f"port '{port}' is not in {p}.ports")
                protected.add(port)
        declared.ports[name] = (tuple(ports), frozenset(protected), v["port_speed_mbps"])
        ssh = _ssh(r, m["ssh"], f"{p}.ssh", pins / name if pins else None) if "ssh" in m else None
        cli_names: dict[str, str] = {}
        cli_nodes: dict[str, yaml.Node] = {}
        if "cli_names" in m:
            cm = r.mapping(m["cli_names"], f"{p}.cli_names", (), _names(m["cli_names"])) or {}
            for port, cn in cm.items():
                if port not in ports:
                    r.error(cn, f"{p}.cli_names.{port}", f"port '{port}' is not in {p}.ports")
                spelled = r.string(cn, f"{p}.cli_names.{port}")
                if spelled:
                    cli_names[port] = spelled
                    cli_nodes[port] = cn
        if "ssh" in m and v["vendor"] is not None:
            # The enforcer's driver is built with every managed port's CLI name and refuses the
            # whole switch at start-up if one is not the vendor's: refuse it here instead, with
            # the driver's own check (drivers/switch/<vendor>.py INTERFACE_PATTERN).
            for port in ports:
                if port in protected:
                    continue  # uplinks never reach the CLI
                spelled = cli_names.get(port, port)
                asked = (v["vendor"], spelled)
                if asked not in problems:
                    problems[asked] = port_name_problem(*asked)
                problem = problems[asked]
                if problem is None:
                    continue
                if port in cli_nodes:
                    r.error(cli_nodes[port], f"{p}.cli_names.{port}",
                            f"the {v['vendor']} driver would refuse this interface name: {problem}")
                else:
                    r.error(port_nodes[port], f"{p}.ports",
                            f"the {v['vendor']} driver would refuse port '{port}': {problem}; spell it as"
                            f" the switch CLI does, or map it under {p}.cli_names")
        if not _complete(v, SWITCH) or snmp is None:
            continue
        out[name] = SwitchConfig(name=name, snmp=snmp, ports=tuple(ports), protected_ports=frozenset(protected),
                                 ssh=ssh, cli_names=MappingProxyType(cli_names), **v)
    return out


def _ssh(r: _Reader, node: yaml.Node, p: str, pin_file: Path | None) -> SshConfig | None:
    m = r.section(node, p, SWITCH_SSH)
    if m is None or "username" not in m:
        return None
    if "key_file" not in m and "password" not in m:
        r.error(node, p, "give key_file or password")
        return None
    v = r.settings(m, p, SWITCH_SSH, host_key=None)
    if v["host_key"] is None:  # the default: the file when there is one, else trust on first use
        v["host_key"] = "known_hosts" if "known_hosts" in m else "pin"
    mode = v["host_key"]
    if mode == "known_hosts" and "known_hosts" not in m:
        r.error(m["host_key"], f"{p}.host_key", "host_key known_hosts needs a known_hosts file")
        return None
    if mode != "known_hosts" and "known_hosts" in m:
        r.error(m["known_hosts"], f"{p}.known_hosts", f"not used with host_key: {mode}; drop one of them")
        return None
    if mode == "insecure-accept-any":
        r.warnings.append(f"{r.file}:{m['host_key'].start_mark.line + 1} {p}.host_key: WARNING insecure-accept-any:"
                          " any SSH host key is accepted, so a spoofed management address would receive this"
                          " switch's credentials (rackwarden_switch_ssh_host_key_insecure is 1)")
    return SshConfig(**v, pin_file=pin_file if mode == "pin" else None) if _complete(v, SWITCH_SSH) else None


def _servers(
    r: _Reader,
    node: yaml.Node,
    switches: Mapping[str, SwitchConfig],
    templates: Mapping[str, TemplateConfig],
    declared: _Declared,
    agent_tz: str,
) -> list[ServerConfig]:
    out: list[ServerConfig] = []
    seen_ids: set[str] = set()
    seen_ports: dict[tuple[str, str], str] = {}
    seen_ips: dict[str, str] = {}
    for i, snode in enumerate(r.seq(node, "servers")):
        p = f"servers[{i}]"
        m = r.section(snode, p, SERVER)
        if m is None:
            continue
        sid = r.setting(m["id"], f"{p}.id", SERVER["id"]) if "id" in m else None
        if sid is not None:
            p = f"servers[{sid}]"
            if sid in seen_ids:
                r.error(m["id"], f"{p}.id", "duplicate server id")
            seen_ids.add(sid)
        v = r.settings(m, p, SERVER, skip=("id",), cap_mbps=None)
        sw_name, port, template = v["switch"], v["port"], v["template"]
        sw = switches.get(sw_name) if sw_name else None
        if sw_name is not None and sw_name not in declared.names:
            r.error(m["switch"], f"{p}.switch", f"no switch named '{sw_name}'")
        sw_ports, sw_protected, speed = declared.ports.get(sw_name or "", ((), frozenset(), None))
        if sw_name in declared.ports and port is not None:
            if port not in sw_ports:
                r.error(m["port"], f"{p}.port", f"port '{port}' does not exist on switch '{sw_name}'")
            elif port in sw_protected:
                r.error(m["port"], f"{p}.port", f"port '{port}' is protected on switch '{sw_name}'")
            key = (sw_name, port)
            if key in seen_ports:
                r.error(m["port"], f"{p}.port", f"{sw_name} {port} is already used by server '{seen_ports[key]}'")
            seen_ports[key] = sid or p
        tmpl = templates.get(template) if template else None
        if template is not None and tmpl is None and template not in declared.names:
            r.error(m["template"], f"{p}.template", f"no template named '{template}'")
        ips: list[str] = []
        for ipn in r.seq(m["ips"], f"{p}.ips") if "ips" in m else []:
            ip = r.string(ipn, f"{p}.ips")
            if ip is None:
                continue
            try:
                ip = _canonical_ip(ip)
            except ValueError:
                r.error(ipn, f"{p}.ips", f"'{ip}' is not an IP address")
                continue
            if ip in seen_ips:
                r.error(ipn, f"{p}.ips", f"{ip} is already assigned to server '{seen_ips[ip]}'")
            seen_ips[ip] = sid or p
            ips.append(ip)
        tz = tmpl.timezone if tmpl else agent_tz
        cap = v["cap_mbps"]
        effective_cap = cap if cap is not None else (tmpl.cap_mbps if tmpl else None)
        if effective_cap is not None and speed is not None and effective_cap > speed:
            where = m.get("cap_mbps", snode)
            r.error(where, f"{p}.cap_mbps", f"cap {effective_cap:g} Mbps is above the port speed {speed} Mbps")
        changes = _cap_changes(r, m, p, tz, speed)
        whitelist: list[str] = []
        for wn in r.seq(m["whitelist"], f"{p}.whitelist") if "whitelist" in m else []:
            net = r.string(wn, f"{p}.whitelist")
            if net is None:
                continue
            try:
                whitelist.append(str(ipaddress.ip_network(net, strict=False)))
            except ValueError:
                r.error(wn, f"{p}.whitelist", f"'{net}' is not an IP network")
        exemptions = _exemptions(r, m, p, tz)
        if sid is None or sw is None or tmpl is None or not _complete(v, SERVER) or port not in sw.ports:
            continue
        out.append(ServerConfig(
            id=sid, customer=v["customer"], switch=sw.name, port=port, ips=tuple(ips), template=tmpl.name,
            monthly_fee_fen=v["monthly_fee_fen"], cap_mbps=cap, cap_changes=tuple(changes),
            contacts=v["contacts"], mail_server=v["mail_server"], declared_ports=v["declared_ports"],
            whitelist=tuple(whitelist), exemptions=tuple(exemptions),
        ))
    return out


def _cap_changes(r: _Reader, m: Mapping[str, yaml.Node], p: str, tz: str,
                 speed: int | None) -> list[tuple[datetime, float]]:
    changes: list[tuple[datetime, float]] = []
    for j, cn in enumerate(r.seq(m["cap_changes"], f"{p}.cap_changes") if "cap_changes" in m else []):
        cp = f"{p}.cap_changes[{j}]"
        cm = r.section(cn, cp, CAP_CHANGE)
        if cm is None or len(cm) < len(CAP_CHANGE.required):
            continue
        c = r.settings(cm, cp, CAP_CHANGE)["cap_mbps"]
        when = _when(r, cm["effective"], f"{cp}.effective", tz)
        if c is None or when is None:
            continue
        if speed is not None and c > speed:
            r.error(cm["cap_mbps"], f"{cp}.cap_mbps", f"cap {c:g} Mbps is above the port speed {speed} Mbps")
        if changes and when <= changes[-1][0]:
            r.error(cm["effective"], f"{cp}.effective", "cap changes must be in increasing date order")
        changes.append((when, c))
    return changes


def _exemptions(r: _Reader, m: Mapping[str, yaml.Node], p: str, tz: str) -> list[tuple[str | None, datetime, str]]:
    """servers[].exemptions: [{detectors: [scan, …] | all, until: T, reason: TEXT}]."""
    out: list[tuple[str | None, datetime, str]] = []
    for j, en in enumerate(r.seq(m["exemptions"], f"{p}.exemptions") if "exemptions" in m else []):
        ep = f"{p}.exemptions[{j}]"
        em = r.section(en, ep, EXEMPTION)
        if em is None or len(em) < len(EXEMPTION.required):
            continue
        reason = r.settings(em, ep, EXEMPTION)["reason"]
        if reason is not None and not reason.strip():
            r.error(em["reason"], f"{ep}.reason", "say why (it goes into the audit record)")
            reason = None
        until = _when(r, em["until"], f"{ep}.until", tz)
        dets: list[str | None] = []
        dnode = em["detectors"]
        if isinstance(dnode, yaml.ScalarNode) and dnode.value == "all":
            dets = [None]
        else:
            for dn in r.seq(dnode, f"{ep}.detectors"):
                d = r.string(dn, f"{ep}.detectors")
                if d is not None and d not in DETECTORS:
                    r.error(dn, f"{ep}.detectors", f"unknown detector '{d}'; known: all, {', '.join(DETECTORS)}")
                elif d is not None:
                    dets.append(d)
        if until is not None and reason is not None:
            out += [(d, until, reason) for d in dets]
    return out


def _detection(r: _Reader, node: yaml.Node | None, switches: Mapping[str, SwitchConfig],
               templates: Mapping[str, TemplateConfig]) -> DetectionConfig:
    if node is None:
        return DetectionConfig()
    m = r.section(node, "detection", DETECTION)
    if m is None:
        return DetectionConfig()
    x = (r.section(m["sflow"], "detection.sflow", SFLOW) or {}) if "sflow" in m else {}
    sflow = r.settings(x, "detection.sflow", SFLOW)
    if "sflow" in m and sflow["sflow_listen"] is not None and not any(sw.sflow_agent for sw in switches.values()):
        r.error(m["sflow"], "detection.sflow", "no switch has sflow_agent: nothing would be accepted")
    mirrors: list[MirrorConfig] = []
    x = (r.section(m["span"], "detection.span", SPAN) or {}) if "span" in m else {}
    span = r.settings(x, "detection.span", SPAN)
    for i, mn in enumerate(r.seq(x["mirrors"], "detection.span.mirrors") if "mirrors" in x else []):
        p = f"detection.span.mirrors[{i}]"
        y = r.section(mn, p, MIRROR)
        if y is None:
            continue
        mv = r.settings(y, p, MIRROR)
        sw, port_name = mv["switch"], mv["port"]
        if sw is not None and sw not in switches:
            r.error(y["switch"], f"{p}.switch", f"no switch named '{sw}'")
        elif sw is not None and port_name is not None and port_name not in switches[sw].ports:
            r.error(y["port"], f"{p}.port", f"port '{port_name}' is not on switch '{sw}'")
        if mv["ingress"] is None and mv["egress"] is None:
            r.error(mn, p, "give ingress, egress or both")
        if _complete(mv, MIRROR):
            mirrors.append(MirrorConfig(**mv))
    thresholds: dict[str, dict[str, Any]] = {}
    if "thresholds" in m:
        from rackwarden.policies.detect import DetectThresholds

        tm = r.mapping(m["thresholds"], "detection.thresholds", (), tuple(templates)) or {}
        for tname, tn in tm.items():
            p = f"detection.thresholds.{tname}"
            y = r.section(tn, p, THRESHOLDS) or {}
            tv = r.settings(y, p, THRESHOLDS)
            # Only what the file sets: the rest stays DetectThresholds' own default.
            values: dict[str, Any] = {k: frozenset(tv[k]) if THRESHOLDS[k].kind == "int_list" else tv[k] for k in y}
            try:
                DetectThresholds(**values)
            except (TypeError, ValueError) as e:
                r.error(tn, p, f"invalid thresholds: {e}")
            thresholds[tname] = values
    return DetectionConfig(
        span_mirrors=tuple(mirrors), thresholds=MappingProxyType(thresholds),
        **sflow, **span, **r.settings(m, "detection", DETECTION),
    )


def _enforcement(r: _Reader, node: yaml.Node | None) -> EnforcementConfig:
    d = _default_enforcement()
    if node is None:
        return d
    m = r.section(node, "enforcement", ENFORCEMENT)
    if m is None:
        return d
    rules = dict(d.rules)
    if "rules" in m:
        rm = r.mapping(m["rules"], "enforcement.rules", (), REASONS) or {}
        for reason, rnode in rm.items():
            p = f"enforcement.rules.{reason}"
            x = r.section(rnode, p, RULE)
            if x is None:
                continue
            built_in = DEFAULT_RULES[reason]  # type: ignore[index]
            v = r.settings(x, p, RULE, mode=None, **{
                s.name: getattr(built_in, s.name) for s in RULE if s.name != "mode"})
            if "term_s" in x:
                tn = x["term_s"]
                if isinstance(tn, yaml.ScalarNode) and tn.style is None and tn.value == "until_restored":
                    v["term_s"] = None
                else:
                    term = r.number(tn, f"{p}.term_s", RULE["term_s"].lo, RULE["term_s"].hi)
                    v["term_s"] = built_in.term_s if term is None else term
            else:
                v["term_s"] = built_in.term_s
            v["restrict"] = _restrict(r, x["restrict"], p, reason, built_in) if "restrict" in x else built_in.restrict
            mode = v.pop("mode")
            rules[reason] = RuleConfig(mode=mode, rule=dataclasses.replace(built_in, **v))
    safety = d.safety
    if "safety" in m:
        x = r.section(m["safety"], "enforcement.safety", SAFETY) or {}
        safety = SafetyConfig(**r.settings(x, "enforcement.safety", SAFETY))
    return EnforcementConfig(MappingProxyType(rules), safety)


# What each reason's findings are, and what may answer them instead of a shut (issue 12).
RESTRICT_CHOICES: tuple[str, ...] = ("throttle", "block_smtp", "shut")


def _restrict(r: _Reader, node: yaml.Node, p: str, reason: str,
              built_in: LadderRule) -> tuple[tuple[str, str], ...]:
    """`restrict:` over the built-in: each finding named is answered as given; others as built in."""
    from rackwarden.policies.detect import DETECTORS

    findings = {"overage": ("overage",), "abuse": DETECTORS}.get(reason, ())
    if not findings:
        r.error(node, f"{p}.restrict", f"a {reason} suspension is asked for, not judged: it has no gentler rung")
        return built_in.restrict
    m = r.mapping(node, f"{p}.restrict", (), findings)
    if m is None:
        return built_in.restrict
    out = dict(built_in.restrict)
    for finding, vnode in m.items():
        choice = r.choice(vnode, f"{p}.restrict.{finding}", RESTRICT_CHOICES)
        if choice is None:
            continue
        if choice == "block_smtp" and finding != "spam":
            r.error(vnode, f"{p}.restrict.{finding}", "block_smtp answers spam only (it drops outbound SMTP)")
            continue
        out[finding] = choice
    return tuple(sorted(out.items()))


def _notify(r: _Reader, node: yaml.Node | None) -> NotifyConfig:
    if node is None:
        return NotifyConfig()
    m = r.section(node, "notify", NOTIFY)
    if m is None:
        return NotifyConfig()
    smtp = None
    if "smtp" in m:
        x = r.section(m["smtp"], "notify.smtp", SMTP)
        if x is not None and "host" in x and "from" in x:
            v = r.settings(x, "notify.smtp", SMTP)
            smtp = SmtpConfig(**v) if _complete(v, SMTP) else None
    return NotifyConfig(smtp=smtp, **r.settings(m, "notify", NOTIFY))
