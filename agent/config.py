"""Strict, frozen configuration: loads inventory and contracts, lists every error as file:line key: reason."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from rackwarden.policies.billing import BILLING_DIRECTIONS
from rackwarden.policies.cap import DIRECTIONS, CapRule, CapSchedule
from rackwarden.policies.ladder import DEFAULT_RULES, REASONS, LadderRule
from rackwarden.policies.safety import SafetyConfig

VENDORS = ("cisco_ios", "huawei", "hp_comware", "juniper_junos", "arista_eos", "linux")
MODES = ("off", "notify", "enforce")
AUTH_PROTOCOLS = ("sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("aes", "aes192", "aes256")
# YAML 1.1 reads these as booleans; a strict config makes the author say what they mean.
AMBIGUOUS = {"yes", "no", "on", "off", "y", "n"}
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
    port: int = 22
    key_file: Path | None = None
    password: Secret | None = None
    known_hosts: Path | None = None
    save_config: bool = False
    timeout_s: float = 10.0


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
    renew_s: float = 2.0


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
    api_listen: str = "127.0.0.1"
    api_port: int = 9818
    metrics_web_config: Path | None = None  # basic auth / TLS, as the Prometheus exporters' web config
    ledger_url: Secret | None = None  # None: sqlite in state_dir; PostgreSQL for shared deployments
    ha: HaSettings | None = None

    def actions_database(self) -> str:
        """Ladder state and actions live beside the ledger when it is shared, so a standby
        that takes a switch over knows what the previous holder did there."""
        return self.ledger_url.reveal() if self.ledger_url else f"sqlite:///{self.state_dir / 'actions.sqlite'}"

    def ledger_database(self) -> str:
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
    sflow_port: int = 6343
    span_mirrors: tuple[MirrorConfig, ...] = ()
    span_netns: str | None = None  # capture inside this network namespace (the lab's switch)
    span_mode: str = "ring"
    evaluate_interval_s: float = 0.25
    thresholds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # template -> fields

    @property
    def enabled(self) -> bool:
        return self.sflow_listen is not None or bool(self.span_mirrors)


@dataclass(frozen=True)
class NotifyConfig:
    smtp: SmtpConfig | None = None
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    language: str = "both"
    operator_contact: str = ""


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

T = TypeVar("T")


class _Reader:
    def __init__(self, file: str):
        self.file = file
        self.issues: list[str] = []

    def error(self, node: yaml.Node | None, key: str, reason: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.issues.append(f"{self.file}:{line} {key}: {reason}")

    def wrong_type(self, node: yaml.Node, key: str, expected: str) -> None:
        if isinstance(node, yaml.ScalarNode) and node.style is None and node.value.lower() in AMBIGUOUS:
            self.error(node, key, f"ambiguous value '{node.value}': {expected}")
        else:
            self.error(node, key, expected)

    def mapping(
        self, node: yaml.Node, key: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.wrong_type(node, key, "expected a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for k_node, v_node in node.value:
            k = str(k_node.value)
            path = f"{key}.{k}" if key else k
            if k in out:
                self.error(k_node, path, "duplicate key")
            elif k not in required and k not in optional:
                allowed = ", ".join(sorted(required + optional))
                self.error(k_node, path, f"unknown key (allowed: {allowed})")
            else:
                out[k] = v_node
        for r in required:
            if r not in out:
                self.error(node, f"{key}.{r}" if key else r, "required key missing")
        return out

    def scalar(self, node: yaml.Node, key: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, "expected a single value")
            return None
        if node.style is None and node.value.lower() in AMBIGUOUS:
            self.error(node, key, f"ambiguous value '{node.value}': write true/false or quote it")
            return None
        if node.style is None and node.value in ("", "~", "null", "Null", "NULL"):
            self.error(node, key, "value missing")
            return None
        return str(node.value)

    def string(self, node: yaml.Node, key: str, pattern: str | None = None) -> str | None:
        v = self.scalar(node, key)
        if v is not None and pattern and not re.fullmatch(pattern, v):
            self.error(node, key, f"'{v}' does not match {pattern}")
            return None
        return v

    def integer(self, node: yaml.Node, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.scalar(node, key)
        if v is None:
            return None
        if not re.fullmatch(r"[+-]?\d+(_\d+)*", v):
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
                return node.value.lower() == "true"
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

    def secret(self, node: yaml.Node, key: str, base: Path) -> Secret | None:
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
            path = (base / name) if not os.path.isabs(name) else Path(name)
        else:
            name = self.scalar(m["credential"], f"{key}.credential")
            if name is None:
                return None
            cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
            if not cred_dir:
                self.error(node, key, "credential given but $CREDENTIALS_DIRECTORY is not set")
                return None
            path = Path(cred_dir) / name
        try:
            value = path.read_text().strip()
        except OSError as e:
            self.error(node, key, f"cannot read secret file {path}: {e.strerror}")
            return None
        if not value:
            self.error(node, key, f"secret file {path} is empty")
            return None
        return Secret(value, str(path))


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


def _exemptions(r: _Reader, m: dict[str, Any], p: str, tz: str) -> list[tuple[str | None, datetime, str]]:
    """servers[].exemptions: [{detectors: [scan, …] | all, until: T, reason: TEXT}]."""
    from rackwarden.policies.detect import DETECTORS

    out: list[tuple[str | None, datetime, str]] = []
    for j, en in enumerate(r.seq(m["exemptions"], f"{p}.exemptions") if "exemptions" in m else []):
        ep = f"{p}.exemptions[{j}]"
        em = r.mapping(en, ep, ("detectors", "until", "reason"), ())
        if em is None or len(em) < 3:
            continue
        reason = r.string(em["reason"], f"{ep}.reason")
        if reason is not None and not reason.strip():
            r.error(em["reason"], f"{ep}.reason", "say why (it goes into the audit record)")
            reason = None
        until_text = r.scalar(em["until"], f"{ep}.until")
        until = _parse_when(until_text, tz) if until_text else None
        if until_text and until is None:
            r.error(em["until"], f"{ep}.until", f"'{until_text}' is not a date or an ISO time with offset")
        dets: list[str | None] = []
        dnode = em["detectors"]
        if isinstance(dnode, yaml.ScalarNode) and dnode.value == "all":
            dets = [None]
        else:
            for dn in r.seq(em["detectors"], f"{ep}.detectors"):
                d = r.string(dn, f"{ep}.detectors")
                if d is not None and d not in DETECTORS:
                    r.error(dn, f"{ep}.detectors", f"unknown detector '{d}'; known: all, {', '.join(DETECTORS)}")
                elif d is not None:
                    dets.append(d)
        if until is not None and reason is not None:
            out += [(d, until, reason) for d in dets]
    return out


# ---------------------------------------------------------------------------------------------

_TOP_REQUIRED = ("switches", "templates", "servers")
_TOP_OPTIONAL = ("version", "agent", "snmp_defaults", "enforcement", "notify", "detection")


def load(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}:0 (file): cannot read: {e.strerror}"]) from e
    return loads(text, str(path), base=path.parent)


def loads(text: str, file: str = "<config>", base: Path | None = None) -> Config:
    r = _Reader(file)
    base = base or Path.cwd()
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError([f"{file}:{line} (syntax): {getattr(e, 'problem', e)}"]) from e
    if root is None:
        raise ConfigError([f"{file}:1 (file): empty configuration"])
    top = r.mapping(root, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    if top is None:
        raise ConfigError(r.issues)
    if "version" in top:
        v = r.integer(top["version"], "version")
        if v is not None and v != 1:
            r.error(top["version"], "version", f"unsupported version {v} (this agent reads 1)")
    agent = _agent(r, top.get("agent"), base)
    defaults = _snmp_defaults(r, top.get("snmp_defaults"))
    templates = _templates(r, top["templates"], agent.timezone if agent else "Asia/Shanghai")
    declared = _Declared()
    switches = _switches(r, top["switches"], defaults, base, declared)
    # Names declared but invalid were reported already; their servers must not cascade.
    declared.names = {str(k.value) for k, _ in getattr(top["switches"], "value", [])}
    declared.names |= {str(k.value) for k, _ in getattr(top["templates"], "value", [])}
    servers = _servers(r, top["servers"], switches, templates, declared,
                       agent.timezone if agent else "Asia/Shanghai")
    enforcement = _enforcement(r, top.get("enforcement"))
    notify = _notify(r, top.get("notify"), base)
    detection = _detection(r, top.get("detection"), switches, templates)
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
    )


def _detection(r: _Reader, node: yaml.Node | None, switches: Mapping[str, SwitchConfig],
               templates: Mapping[str, TemplateConfig]) -> DetectionConfig:
    if node is None:
        return DetectionConfig()
    m = r.mapping(node, "detection", (), ("sflow", "span", "evaluate_interval_s", "thresholds"))
    if m is None:
        return DetectionConfig()
    listen, port = None, 6343
    if "sflow" in m:
        x = r.mapping(m["sflow"], "detection.sflow", ("listen",), ("port",)) or {}
        listen = r.string(x["listen"], "detection.sflow.listen") if "listen" in x else None
        port = _get(r, x, "port", "detection.sflow", r.integer, 6343, 0, 65535)
        if listen is not None and not any(sw.sflow_agent for sw in switches.values()):
            r.error(m["sflow"], "detection.sflow", "no switch has sflow_agent: nothing would be accepted")
    mirrors: list[MirrorConfig] = []
    netns, mode = None, "ring"
    if "span" in m:
        x = r.mapping(m["span"], "detection.span", ("mirrors",), ("netns", "mode")) or {}
        netns = _get(r, x, "netns", "detection.span", r.string, None)  # type: ignore[arg-type]
        mode = _get(r, x, "mode", "detection.span", r.choice, "ring", ("ring", "recv"))
        for i, mn in enumerate(r.seq(x["mirrors"], "detection.span.mirrors") if "mirrors" in x else []):
            p = f"detection.span.mirrors[{i}]"
            y = r.mapping(mn, p, ("switch", "port"), ("ingress", "egress"))
            if y is None or "switch" not in y or "port" not in y:
                continue
            sw, port_name = r.string(y["switch"], f"{p}.switch"), r.string(y["port"], f"{p}.port")
            if sw not in switches:
                r.error(y["switch"], f"{p}.switch", f"no switch named '{sw}'")
            elif port_name not in switches[sw].ports:
                r.error(y["port"], f"{p}.port", f"port '{port_name}' is not on switch '{sw}'")
            ing = _get(r, y, "ingress", p, r.string, None)
            eg = _get(r, y, "egress", p, r.string, None)
            if ing is None and eg is None:
                r.error(mn, p, "give ingress, egress or both")
            if sw and port_name:
                mirrors.append(MirrorConfig(sw, port_name, ing, eg))  # type: ignore[arg-type]
    thresholds: dict[str, dict[str, Any]] = {}
    if "thresholds" in m:
        from rackwarden.policies.detect import DetectThresholds  # its fields are the vocabulary

        known = {f.name: f for f in dataclasses.fields(DetectThresholds)}
        tm = r.mapping(m["thresholds"], "detection.thresholds", (), tuple(templates)) or {}
        for tname, tn in tm.items():
            p = f"detection.thresholds.{tname}"
            y = r.mapping(tn, p, (), tuple(known)) or {}
            values: dict[str, Any] = {}
            for k, vn in y.items():
                if isinstance(vn, yaml.SequenceNode):
                    values[k] = frozenset(v for v in (r.integer(e, f"{p}.{k}", 0, 65535) for e in vn.value)
                                          if v is not None)
                elif isinstance(vn, yaml.ScalarNode) and vn.style is None and vn.value in ("true", "false"):
                    values[k] = vn.value == "true"
                else:
                    v = r.number(vn, f"{p}.{k}", 0)
                    if v is not None:
                        values[k] = int(v) if v == int(v) and "." not in vn.value else v
            try:
                DetectThresholds(**values)
            except (TypeError, ValueError) as e:
                r.error(tn, p, f"invalid thresholds: {e}")
            thresholds[tname] = values
    return DetectionConfig(
        sflow_listen=listen, sflow_port=port, span_mirrors=tuple(mirrors), span_netns=netns, span_mode=mode,
        evaluate_interval_s=_get(r, m, "evaluate_interval_s", "detection", r.number, 0.25, 0.01, 60),
        thresholds=MappingProxyType(thresholds),
    )


def _enforcement(r: _Reader, node: yaml.Node | None) -> EnforcementConfig:
    d = _default_enforcement()
    if node is None:
        return d
    m = r.mapping(node, "enforcement", (), ("rules", "safety"))
    if m is None:
        return d
    rules = dict(d.rules)
    if "rules" in m:
        rm = r.mapping(m["rules"], "enforcement.rules", (), REASONS) or {}
        for reason, rnode in rm.items():
            p = f"enforcement.rules.{reason}"
            x = r.mapping(rnode, p, (), ("mode", "grace_s", "term_s", "shut_at_once_if_unreachable",
                                         "repeat_multiplier", "max_term_s"))
            if x is None:
                continue
            base_rule = DEFAULT_RULES[reason]  # type: ignore[index]
            term: float | None = base_rule.term_s
            if "term_s" in x:
                tn = x["term_s"]
                if isinstance(tn, yaml.ScalarNode) and tn.style is None and tn.value == "until_restored":
                    term = None
                else:
                    term = r.number(tn, f"{p}.term_s", 1, 365 * 86400)
            rules[reason] = RuleConfig(
                mode=_get(r, x, "mode", p, r.choice, None, MODES),  # type: ignore[arg-type]
                rule=LadderRule(
                    grace_s=_get(r, x, "grace_s", p, r.number, base_rule.grace_s, 0, 30 * 86400),
                    term_s=term,
                    shut_at_once_if_unreachable=_get(r, x, "shut_at_once_if_unreachable", p, r.boolean,
                                                     base_rule.shut_at_once_if_unreachable),
                    repeat_multiplier=_get(r, x, "repeat_multiplier", p, r.number, base_rule.repeat_multiplier, 1, 100),
                    max_term_s=_get(r, x, "max_term_s", p, r.number, base_rule.max_term_s, 1, 365 * 86400),
                ),
            )
    safety = d.safety
    if "safety" in m:
        sp = "enforcement.safety"
        x = r.mapping(m["safety"], sp, (), ("max_shuts_per_switch", "max_shuts_total", "budget_window_s",
                                             "breaker_fraction", "breaker_min_servers")) or {}
        safety = SafetyConfig(
            max_shuts_per_switch=_get(r, x, "max_shuts_per_switch", sp, r.integer,
                                      safety.max_shuts_per_switch, 0, 10_000),
            max_shuts_total=_get(r, x, "max_shuts_total", sp, r.integer, safety.max_shuts_total, 0, 100_000),
            budget_window_s=_get(r, x, "budget_window_s", sp, r.number, safety.budget_window_s, 1, 30 * 86400),
            breaker_fraction=_get(r, x, "breaker_fraction", sp, r.number, safety.breaker_fraction, 0.01, 1),
            breaker_min_servers=_get(r, x, "breaker_min_servers", sp, r.integer, safety.breaker_min_servers, 1, 10_000),
        )
    return EnforcementConfig(MappingProxyType(rules), safety)


def _notify(r: _Reader, node: yaml.Node | None, base: Path) -> NotifyConfig:
    if node is None:
        return NotifyConfig()
    m = r.mapping(node, "notify", (), ("smtp", "alertmanager_url", "webhook_url", "language", "operator_contact"))
    if m is None:
        return NotifyConfig()
    smtp = None
    if "smtp" in m:
        p = "notify.smtp"
        x = r.mapping(m["smtp"], p, ("host", "from"), ("port", "starttls", "username", "password"))
        if x is not None and "host" in x and "from" in x:
            host = r.string(x["host"], f"{p}.host")
            sender = r.string(x["from"], f"{p}.from", r"[^@\s]+@[^@\s]+")
            if host and sender:
                smtp = SmtpConfig(
                    host=host, sender=sender,
                    port=_get(r, x, "port", p, r.integer, 25, 1, 65535),
                    starttls=_get(r, x, "starttls", p, r.boolean, False),
                    username=_get(r, x, "username", p, r.string, None),  # type: ignore[arg-type]
                    password=r.secret(x["password"], f"{p}.password", base) if "password" in x else None,
                )
    url = r"https?://[^\s]+"
    return NotifyConfig(
        smtp=smtp,
        alertmanager_url=_get(r, m, "alertmanager_url", "notify", r.string, None, url),  # type: ignore[arg-type]
        webhook_url=_get(r, m, "webhook_url", "notify", r.string, None, url),  # type: ignore[arg-type]
        language=_get(r, m, "language", "notify", r.choice, "both", ("zh", "en", "both")),
        operator_contact=_get(r, m, "operator_contact", "notify", r.string, ""),
    )


def _get(r: _Reader, m: dict[str, yaml.Node], key: str, path: str, fn: Callable[..., T | None],
         default: T, *args: Any) -> T:
    if key not in m:
        return default
    v = fn(m[key], f"{path}.{key}", *args)
    return default if v is None else v


def _agent(r: _Reader, node: yaml.Node | None, base: Path) -> AgentSettings | None:
    keys = ("state_dir", "timezone", "mode", "metrics_listen", "metrics_port", "record_polls",
            "max_gap_s", "snmp_max_concurrency", "api_listen", "api_port", "metrics_web_config",
            "ledger_url", "ha")
    m = r.mapping(node, "agent", (), keys) if node is not None else {}
    if m is None:
        return None
    state_dir = _get(r, m, "state_dir", "agent", r.string, "/var/lib/rackwarden")
    web: Path | None = None
    if "metrics_web_config" in m:
        w = r.string(m["metrics_web_config"], "agent.metrics_web_config")
        web = (Path(w) if os.path.isabs(w) else base / w) if w else None
    listen = _get(r, m, "metrics_listen", "agent", r.string, "127.0.0.1")
    from .webauth import WebConfigError
    from .webauth import validate as validate_web  # the exporter-style web config and bind policy

    try:
        validate_web(listen, web)  # warnings (auth without TLS) are the daemon's to log
    except WebConfigError as e:
        r.error(m.get("metrics_web_config", m.get("metrics_listen", node)), "agent.metrics_web_config", str(e))
    ledger_url = r.secret(m["ledger_url"], "agent.ledger_url", base) if "ledger_url" in m else None
    ha = None
    if "ha" in m:
        h = r.mapping(m["ha"], "agent.ha", ("holder",), ("renew_s",))
        if h is not None and "holder" in h:
            holder = r.string(h["holder"], "agent.ha.holder", r"[A-Za-z0-9_.:@-]{1,48}")
            if holder:
                ha = HaSettings(holder, _get(r, h, "renew_s", "agent.ha", r.number, 2.0, 0.2, 60))
        if ledger_url is None or not ledger_url.reveal().startswith("postgresql"):
            r.error(m["ha"], "agent.ha", "needs agent.ledger_url on PostgreSQL (postgresql+psycopg://...):"
                    " the leases live in the shared ledger's database")
    return AgentSettings(
        state_dir=(base / state_dir) if not os.path.isabs(state_dir) else Path(state_dir),
        timezone=_get(r, m, "timezone", "agent", r.timezone, "Asia/Shanghai"),
        mode=_get(r, m, "mode", "agent", r.choice, "notify", MODES),
        metrics_listen=listen,
        metrics_port=_get(r, m, "metrics_port", "agent", r.integer, 9817, 0, 65535),
        record_polls=_get(r, m, "record_polls", "agent", r.boolean, False),
        max_gap_s=_get(r, m, "max_gap_s", "agent", r.number, 300.0, 1, 86400),
        snmp_max_concurrency=_get(r, m, "snmp_max_concurrency", "agent", r.integer, 32, 1, 1024),
        api_listen=_get(r, m, "api_listen", "agent", r.string, "127.0.0.1"),
        api_port=_get(r, m, "api_port", "agent", r.integer, 9818, 0, 65535),
        metrics_web_config=web,
        ledger_url=ledger_url,
        ha=ha,
    )


@dataclass(frozen=True)
class _SnmpDefaults:
    interval_s: float = 60.0
    timeout_s: float = 2.0
    retries: int = 1
    max_repetitions: int = 50
    port: int = 161


def _snmp_defaults(r: _Reader, node: yaml.Node | None) -> _SnmpDefaults:
    d = _SnmpDefaults()
    if node is None:
        return d
    m = r.mapping(node, "snmp_defaults", (), ("interval_s", "timeout_s", "retries", "max_repetitions", "port"))
    if m is None:
        return d
    p = "snmp_defaults"
    return _SnmpDefaults(
        interval_s=_get(r, m, "interval_s", p, r.number, d.interval_s, 1, 3600),
        timeout_s=_get(r, m, "timeout_s", p, r.number, d.timeout_s, 0.1, 60),
        retries=_get(r, m, "retries", p, r.integer, d.retries, 0, 10),
        max_repetitions=_get(r, m, "max_repetitions", p, r.integer, d.max_repetitions, 1, 1000),
        port=_get(r, m, "port", p, r.integer, d.port, 1, 65535),
    )


def _templates(r: _Reader, node: yaml.Node, default_tz: str) -> dict[str, TemplateConfig]:
    out: dict[str, TemplateConfig] = {}
    tm = r.mapping(node, "templates", (), tuple(str(k.value) for k, _ in getattr(node, "value", [])))
    for name, tnode in (tm or {}).items():
        p = f"templates.{name}"
        m = r.mapping(tnode, p, ("cap_mbps",), ("window_s", "direction", "billing_direction", "timezone"))
        if m is None:
            continue
        cap = r.number(m["cap_mbps"], f"{p}.cap_mbps", 0.001, 100_000) if "cap_mbps" in m else None
        if cap is None:
            continue
        out[name] = TemplateConfig(
            name=name,
            cap_mbps=cap,
            window_s=_get(r, m, "window_s", p, r.number, 300.0, 1, 86400),
            direction=_get(r, m, "direction", p, r.choice, "out", DIRECTIONS),
            billing_direction=_get(r, m, "billing_direction", p, r.choice, "max", BILLING_DIRECTIONS),
            timezone=_get(r, m, "timezone", p, r.timezone, default_tz),
        )
    return out


def _snmp_auth(r: _Reader, node: yaml.Node, p: str, base: Path) -> SnmpAuth | None:
    m = r.mapping(node, p, ("version",), ("community", "user", "auth_protocol", "auth_key",
                                          "priv_protocol", "priv_key"))
    if m is None or "version" not in m:
        return None
    version = r.choice(m["version"], f"{p}.version", ("2c", "3"))
    if version == "2c":
        if "community" not in m:
            r.error(node, f"{p}.community", "SNMP v2c needs a community")
            return None
        extra = [k for k in m if k not in ("version", "community")]
        for k in extra:
            r.error(m[k], f"{p}.{k}", "only for SNMP version 3")
        c = r.secret(m["community"], f"{p}.community", base)
        return SnmpAuth("2c", community=c) if c else None
    if version == "3":
        # authPriv only: a metering feed that decides shutdowns must not be spoofable.
        missing = [k for k in ("user", "auth_key", "priv_key") if k not in m]
        for k in missing:
            r.error(node, f"{p}.{k}", "SNMPv3 needs user, auth_key and priv_key (authPriv)")
        if "community" in m:
            r.error(m["community"], f"{p}.community", "not used with SNMP version 3")
        if missing:
            return None
        return SnmpAuth(
            "3",
            user=r.string(m["user"], f"{p}.user"),
            auth_protocol=_get(r, m, "auth_protocol", p, r.choice, "sha", AUTH_PROTOCOLS),
            auth_key=r.secret(m["auth_key"], f"{p}.auth_key", base),
            priv_protocol=_get(r, m, "priv_protocol", p, r.choice, "aes", PRIV_PROTOCOLS),
            priv_key=r.secret(m["priv_key"], f"{p}.priv_key", base),
        )
    return None


@dataclass
class _Declared:
    """What the file declares even where a part is invalid, so later checks still run."""

    names: set[str] = field(default_factory=set)
    ports: dict[str, tuple[tuple[str, ...], frozenset[str], int]] = field(default_factory=dict)


def _switches(
    r: _Reader, node: yaml.Node, d: _SnmpDefaults, base: Path, declared: _Declared
) -> dict[str, SwitchConfig]:
    out: dict[str, SwitchConfig] = {}
    sm = r.mapping(node, "switches", (), tuple(str(k.value) for k, _ in getattr(node, "value", [])))
    for name, snode in (sm or {}).items():
        p = f"switches.{name}"
        m = r.mapping(snode, p, ("address", "vendor", "snmp", "ports"),
                      ("snmp_port", "interval_s", "timeout_s", "retries", "max_repetitions",
                       "port_speed_mbps", "protected_ports", "ssh", "cli_names", "sflow_agent"))
        if m is None:
            continue
        address = r.string(m["address"], f"{p}.address") if "address" in m else None
        if address is not None:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9.-]+", address):
                    r.error(m["address"], f"{p}.address", f"'{address}' is not an IP address or host name")
        vendor = r.choice(m["vendor"], f"{p}.vendor", VENDORS) if "vendor" in m else None
        snmp = _snmp_auth(r, m["snmp"], f"{p}.snmp", base) if "snmp" in m else None
        ports: list[str] = []
        for pn in r.seq(m["ports"], f"{p}.ports") if "ports" in m else []:
            spec = r.string(pn, f"{p}.ports")
            for port in expand_ports(spec) if spec else []:
                if port in ports:
                    r.error(pn, f"{p}.ports", f"duplicate port '{port}'")
                else:
                    ports.append(port)
        protected: set[str] = set()
        for pn in r.seq(m["protected_ports"], f"{p}.protected_ports") if "protected_ports" in m else []:
            spec = r.string(pn, f"{p}.protected_ports")
            for port in expand_ports(spec) if spec else []:
                if port not in ports:
                    r.error(pn, f"{p}.protected_ports", f"port '{port}' is not in {p}.ports")
                protected.add(port)
        speed = _get(r, m, "port_speed_mbps", p, r.integer, 100, 1, 1_000_000)
        declared.ports[name] = (tuple(ports), frozenset(protected), speed)
        ssh = _ssh(r, m["ssh"], f"{p}.ssh", base) if "ssh" in m else None
        cli_names: dict[str, str] = {}
        if "cli_names" in m:
            cm = r.mapping(m["cli_names"], f"{p}.cli_names", (),
                           tuple(str(k.value) for k, _ in getattr(m["cli_names"], "value", []))) or {}
            for port, cn in cm.items():
                if port not in ports:
                    r.error(cn, f"{p}.cli_names.{port}", f"port '{port}' is not in {p}.ports")
                spelled = r.string(cn, f"{p}.cli_names.{port}")
                if spelled:
                    cli_names[port] = spelled
        if address is None or vendor is None or snmp is None:
            continue
        out[name] = SwitchConfig(
            name=name,
            address=address,
            vendor=vendor,
            snmp=snmp,
            snmp_port=_get(r, m, "snmp_port", p, r.integer, d.port, 1, 65535),
            interval_s=_get(r, m, "interval_s", p, r.number, d.interval_s, 1, 3600),
            timeout_s=_get(r, m, "timeout_s", p, r.number, d.timeout_s, 0.1, 60),
            retries=_get(r, m, "retries", p, r.integer, d.retries, 0, 10),
            max_repetitions=_get(r, m, "max_repetitions", p, r.integer, d.max_repetitions, 1, 1000),
            port_speed_mbps=speed,
            ports=tuple(ports),
            protected_ports=frozenset(protected),
            ssh=ssh,
            cli_names=MappingProxyType(cli_names),
            sflow_agent=_get(r, m, "sflow_agent", p, r.string, None),  # type: ignore[arg-type]
        )
    return out


def _ssh(r: _Reader, node: yaml.Node, p: str, base: Path) -> SshConfig | None:
    m = r.mapping(node, p, ("username",), ("port", "key_file", "password", "known_hosts", "save_config", "timeout_s"))
    if m is None or "username" not in m:
        return None
    if "key_file" not in m and "password" not in m:
        r.error(node, p, "give key_file or password")
        return None
    user = r.string(m["username"], f"{p}.username")

    def path_of(key: str) -> Path | None:
        if key not in m:
            return None
        node_ = m[key]
        if isinstance(node_, yaml.MappingNode):
            # {credential: NAME}: a file systemd hands over with LoadCredential= (ProtectHome
            # hides /root/.ssh from the service).
            c = r.mapping(node_, f"{p}.{key}", ("credential",), ())
            name = r.string(c["credential"], f"{p}.{key}.credential") if c and "credential" in c else None
            cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
            if name is None:
                return None
            if not cred_dir:
                r.error(node_, f"{p}.{key}", "credential given but $CREDENTIALS_DIRECTORY is not set")
                return None
            path = Path(cred_dir) / name
            if not path.exists():
                r.error(node_, f"{p}.{key}", f"credential file {path} does not exist")
            return path
        v = r.string(node_, f"{p}.{key}")
        if v is None:
            return None
        path = Path(v) if os.path.isabs(v) else base / v
        if not path.exists():
            r.error(m[key], f"{p}.{key}", f"file {path} does not exist")
        return path

    if user is None:
        return None
    return SshConfig(
        username=user,
        port=_get(r, m, "port", p, r.integer, 22, 1, 65535),
        key_file=path_of("key_file"),
        password=r.secret(m["password"], f"{p}.password", base) if "password" in m else None,
        known_hosts=path_of("known_hosts"),
        save_config=_get(r, m, "save_config", p, r.boolean, False),
        timeout_s=_get(r, m, "timeout_s", p, r.number, 10.0, 0.5, 300),
    )


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
        m = r.mapping(snode, p, ("id", "customer", "switch", "port", "ips", "template", "monthly_fee_fen"),
                      ("cap_mbps", "cap_changes", "contacts", "mail_server", "declared_ports", "whitelist",
                       "exemptions"))
        if m is None:
            continue
        sid = r.string(m["id"], f"{p}.id", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}") if "id" in m else None
        if sid is not None:
            p = f"servers[{sid}]"
            if sid in seen_ids:
                r.error(m["id"], f"{p}.id", "duplicate server id")
            seen_ids.add(sid)
        customer = r.string(m["customer"], f"{p}.customer") if "customer" in m else None
        sw_name = r.string(m["switch"], f"{p}.switch") if "switch" in m else None
        port = r.string(m["port"], f"{p}.port") if "port" in m else None
        template = r.string(m["template"], f"{p}.template") if "template" in m else None
        fee = r.integer(m["monthly_fee_fen"], f"{p}.monthly_fee_fen", 0) if "monthly_fee_fen" in m else None
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
                ip = str(ipaddress.ip_address(ip))
            except ValueError:
                r.error(ipn, f"{p}.ips", f"'{ip}' is not an IP address")
                continue
            if ip in seen_ips:
                r.error(ipn, f"{p}.ips", f"{ip} is already assigned to server '{seen_ips[ip]}'")
            seen_ips[ip] = sid or p
            ips.append(ip)
        tz = tmpl.timezone if tmpl else agent_tz
        cap = r.number(m["cap_mbps"], f"{p}.cap_mbps", 0.001, 100_000) if "cap_mbps" in m else None
        effective_cap = cap if cap is not None else (tmpl.cap_mbps if tmpl else None)
        if effective_cap is not None and speed is not None and effective_cap > speed:
            where = m.get("cap_mbps", snode)
            r.error(where, f"{p}.cap_mbps", f"cap {effective_cap:g} Mbps is above the port speed {speed} Mbps")
        changes: list[tuple[datetime, float]] = []
        for j, cn in enumerate(r.seq(m["cap_changes"], f"{p}.cap_changes") if "cap_changes" in m else []):
            cp = f"{p}.cap_changes[{j}]"
            cm = r.mapping(cn, cp, ("cap_mbps", "effective"), ())
            if cm is None or len(cm) < 2:
                continue
            c = r.number(cm["cap_mbps"], f"{cp}.cap_mbps", 0.001, 100_000)
            when_text = r.scalar(cm["effective"], f"{cp}.effective")
            when = _parse_when(when_text, tz) if when_text else None
            if when_text and when is None:
                r.error(cm["effective"], f"{cp}.effective", f"'{when_text}' is not a date or an ISO time with offset")
            if c is None or when is None:
                continue
            if speed is not None and c > speed:
                r.error(cm["cap_mbps"], f"{cp}.cap_mbps", f"cap {c:g} Mbps is above the port speed {speed} Mbps")
            if changes and when <= changes[-1][0]:
                r.error(cm["effective"], f"{cp}.effective", "cap changes must be in increasing date order")
            changes.append((when, c))
        contacts: list[str] = []
        for cn in r.seq(m["contacts"], f"{p}.contacts") if "contacts" in m else []:
            c = r.string(cn, f"{p}.contacts", r"[^@\s]+@[^@\s]+\.[^@\s]+")
            if c:
                contacts.append(c)
        declared_ports: list[int] = []
        for dn in r.seq(m["declared_ports"], f"{p}.declared_ports") if "declared_ports" in m else []:
            d = r.integer(dn, f"{p}.declared_ports", 1, 65535)
            if d is not None:
                declared_ports.append(d)
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
        mail = _get(r, m, "mail_server", p, r.boolean, False)
        if None in (sid, customer, sw, port, tmpl, fee) or port not in (sw.ports if sw else ()):
            continue
        assert sid and customer and sw and port and tmpl and fee is not None
        out.append(ServerConfig(sid, customer, sw.name, port, tuple(ips), tmpl.name, fee, cap, tuple(changes),
                                tuple(contacts), mail, tuple(declared_ports), tuple(whitelist),
                                tuple(exemptions)))
    return out
