"""Every configuration setting declared once: the loader, its errors and docs/configuration.md derive from here.

Regenerate the reference after changing a declaration:

    .venv/bin/python -m rackwarden.agent.config_schema > docs/configuration.md

A unit test (tests/unit/test_config_reference.py) fails while the file is out of date.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from rackwarden.drivers.switch import DRIVERS, HOST_KEY_MODES
from rackwarden.policies.billing import BILLING_DIRECTIONS
from rackwarden.policies.cap import DIRECTIONS
from rackwarden.policies.detect import DETECTORS, DetectThresholds
from rackwarden.policies.ladder import DEFAULT_RULES, REASONS
from rackwarden.policies.safety import SafetyConfig
from rackwarden.policies.sla import BUILTIN_TEMPLATES, NO_CREDIT

# The loader reads these kinds generically (config._Reader.settings); the others are
# declared for the reference and their errors, and read by the section's own code.
Kind = Literal[
    "text", "int", "number", "bool", "choice", "timezone", "secret", "path", "file", "int_list", "text_list",
    "list", "mapping", "when", "term",
]
SCALAR_KINDS: frozenset[str] = frozenset(
    {"text", "int", "number", "bool", "choice", "timezone", "secret", "path", "file", "int_list", "text_list"}
)

VENDORS: tuple[str, ...] = tuple(DRIVERS)  # vendor name = module name = config value (STYLE.md 4)
MODES: tuple[str, ...] = ("off", "notify", "enforce")
AUTH_PROTOCOLS: tuple[str, ...] = ("sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS: tuple[str, ...] = ("aes", "aes192", "aes256")
# A template names its credit rule: a contract whose rule is missing must be a decision, not a
# template name that happens not to match a built-in one.
CREDIT_RULES: tuple[str, ...] = (*BUILTIN_TEMPLATES, NO_CREDIT)
URL_PATTERN: Final = r"https?://[^\s]+"
EMAIL_PATTERN: Final = r"[^@\s]+@[^@\s]+\.[^@\s]+"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


@dataclass(frozen=True)
class From:
    """A default taken from elsewhere at load time (another setting, a built-in rule)."""

    source: str


@dataclass(frozen=True)
class Setting:
    """One key: what it holds, its default (REQUIRED, From(...) or a value) and one line of meaning."""

    key: str
    kind: Kind
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    attr: str | None = None  # the dataclass attribute, where it is not spelled like the key

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def name(self) -> str:
        return self.attr or self.key

    def type_text(self) -> str:
        bounds = _bounds(self.lo, self.hi)
        if self.kind == "text":
            return f"text matching `{self.pattern}`" if self.pattern else "text"
        if self.kind == "int":
            return f"whole number{bounds}"
        if self.kind == "number":
            return f"number{bounds}"
        if self.kind == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.kind == "int_list":
            return f"list of whole numbers{bounds}"
        if self.kind == "text_list":
            return f"list of text matching `{self.pattern}`" if self.pattern else "list of text"
        return _KIND_TEXT[self.kind]

    def default_text(self) -> str:
        d = self.default
        if d is REQUIRED:
            return "**required**"
        if isinstance(d, From):
            return f"from {d.source}"
        if d is None:
            return "none"
        if isinstance(d, bool):
            return f"`{str(d).lower()}`"
        if isinstance(d, float) and d == int(d):
            return f"`{int(d)}`"
        if isinstance(d, (frozenset, tuple)):
            return "`[" + ", ".join(str(x) for x in sorted(d)) + "]`"
        return f"`{d}`" if d != "" else '`""`'


_KIND_TEXT: dict[str, str] = {
    "bool": "`true` or `false`",
    "timezone": "IANA timezone",
    "secret": "secret: text, `{file: PATH}` or `{credential: NAME}`",
    "path": "path (relative: to the config file's folder)",
    "file": "existing file: path or `{credential: NAME}`",
    "list": "list",
    "mapping": "mapping",
    "when": "date (midnight, contract timezone) or ISO time with offset",
    "term": "seconds or `until_restored`",
}


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f", {_num(lo)}..{_num(hi)}"
    if lo is not None:
        return f", at least {_num(lo)}"
    if hi is not None:
        return f", at most {_num(hi)}"
    return ""


@dataclass(frozen=True)
class Section:
    """The keys of one mapping; `path` spells it as errors do (`<name>` where the author chooses)."""

    path: str
    doc: str
    settings: tuple[Setting, ...]
    notes: str = ""

    def __post_init__(self) -> None:
        keys = [s.key for s in self.settings]
        assert len(keys) == len(set(keys)), f"{self.path}: a key is declared twice"

    def __getitem__(self, key: str) -> Setting:
        for s in self.settings:
            if s.key == key:
                return s
        raise KeyError(f"{self.path}.{key}")

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings if s.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings if not s.required)

    def default(self, key: str) -> Any:
        """The declared constant default, for the section's dataclass fields."""
        d = self[key].default
        assert d is not REQUIRED and not isinstance(d, From), f"{self.path}.{key} has no constant default"
        return d


S = Setting
_DAY = 86400
_SAFETY = SafetyConfig()

TOP = Section("", "The file's top level.", (
    S("version", "int", 1, "config format version; this agent reads 1"),
    S("agent", "mapping", None, "the agent itself (see `agent`)"),
    S("snmp_defaults", "mapping", None, "SNMP polling defaults for every switch (see `snmp_defaults`)"),
    S("templates", "mapping", REQUIRED, "contract templates by name (see `templates.<name>`)"),
    S("switches", "mapping", REQUIRED, "switches by name (see `switches.<name>`)"),
    S("servers", "list", REQUIRED, "the customers' servers (see `servers[]`)"),
    S("enforcement", "mapping", None, "ladder per reason and safety rails (see `enforcement`)"),
    S("notify", "mapping", None, "customer notices and on-call alerts (see `notify`)"),
    S("detection", "mapping", None, "abuse detection: sFlow, SPAN, thresholds (see `detection`)"),
))

AGENT = Section("agent", "The agent process: state, clock, mode and listeners.", (
    S("state_dir", "path", "/var/lib/rackwarden", "ledger, usage buckets and recorded polls"),
    S("timezone", "timezone", "Asia/Shanghai", "default contract timezone (templates without their own)"),
    S("mode", "choice", "notify", "what a breach leads to; `enforcement.rules.<reason>.mode` overrides it",
      choices=MODES),
    S("metrics_listen", "text", "127.0.0.1",
      "Prometheus exposition address; beyond loopback it needs `metrics_web_config` with basic auth"),
    S("metrics_port", "int", 9817, "Prometheus exposition port", lo=0, hi=65535),
    S("record_polls", "bool", False, "append every poll to `state_dir/polls/<switch>.jsonl` (replayable)"),
    S("max_gap_s", "number", 300.0, "a longer interval between two readings has no rate", lo=1, hi=_DAY),
    S("snmp_max_concurrency", "int", 32, "SNMP polls in flight at once", lo=1, hi=1024),
    S("api_listen", "text", "127.0.0.1", "local API for operators and billing (bearer token in state_dir); "
      "beyond loopback it needs `api_web_config` with TLS"),
    S("api_port", "int", 9818, "local API port", lo=0, hi=65535),
    S("api_web_config", "path", None, "exporter-style web config with `tls_server_config`: the local API "
      "over HTTPS (no `basic_auth_users`: the API takes its bearer token)"),
    S("metrics_web_config", "path", None, "exporter-style web config: basic auth (bcrypt) and TLS"),
    S("console_web_config", "path", None, "the web console's operators: an exporter-style web config with "
      "`basic_auth_users` (bcrypt), served on the API's listener; none: no console"),
    S("customers_web_config", "path", None, "the customer page's logins: `customers: {CUSTOMER: "
      "{basic_auth_users: {LOGIN: BCRYPT}}}`; none: no customer page"),
    S("ledger_url", "secret", None, "shared PostgreSQL ledger (`postgresql+psycopg://...`); none: sqlite in "
      "state_dir"),
    S("ha", "mapping", None, "shared deployment: this agent's lease holder name (see `agent.ha`)"),
))

AGENT_HA = Section("agent.ha", "Several agents sharing one PostgreSQL ledger; one enforces per switch.", (
    S("holder", "text", REQUIRED, "this agent's unique name in enforcement_leases",
      pattern=r"[A-Za-z0-9_.:@-]{1,48}"),
    S("renew_s", "number", 2.0, "lease renewal interval", lo=0.2, hi=60),
))

SNMP_DEFAULTS = Section("snmp_defaults", "Polling defaults; a switch's key of the same name overrides them.", (
    S("interval_s", "number", 60.0, "seconds between two polls of a switch", lo=1, hi=3600),
    S("timeout_s", "number", 2.0, "SNMP request timeout", lo=0.1, hi=60),
    S("retries", "int", 1, "SNMP retries after a timeout", lo=0, hi=10),
    S("max_repetitions", "int", 50,
      "GETBULK max-repetitions (v2c: the first poll's; later polls ask for the last row count + 1, halved on tooBig)",
      lo=1, hi=1000),
    S("port", "int", 161, "SNMP UDP port", lo=1, hi=65535),
))

TEMPLATE = Section("templates.<name>", "A contract template (CONTRACT_RULES.md); servers name it.", (
    S("cap_mbps", "number", REQUIRED, "bandwidth cap in Mbps (R1)", lo=0.001, hi=100_000),
    S("credit", "choice", REQUIRED, "a credit rule of `policies.sla.BUILTIN_TEMPLATES` (rental: R14, colo: R15), "
      "or `none`: outage seconds are reported, nothing is credited", choices=CREDIT_RULES),
    S("window_s", "number", 300.0, "consecutive seconds above the cap that make a breach", lo=1, hi=_DAY),
    S("direction", "choice", "out", "the server's traffic judged against the cap (out: what it sends)",
      choices=DIRECTIONS),
    S("billing_direction", "choice", "max", "direction of the 95th-percentile billing figure",
      choices=BILLING_DIRECTIONS),
    S("timezone", "timezone", From("agent.timezone"), "contract timezone: months, dates of cap changes"),
))


def _inherited(key: str, attr: str | None = None) -> Setting:
    # A switch's polling keys take the bounds of snmp_defaults and default to its value.
    return dataclasses.replace(SNMP_DEFAULTS[key], key=attr or key, default=From(f"snmp_defaults.{key}"))


SWITCH = Section("switches.<name>", "One access switch: how to poll it, its ports, how to log in.", (
    S("address", "text", REQUIRED, "IP address or host name"),
    S("vendor", "choice", REQUIRED, "driver, also the netmiko device_type (drivers/switch)", choices=VENDORS),
    S("snmp", "mapping", REQUIRED, "SNMP credentials (see `switches.<name>.snmp`)"),
    S("ports", "list", REQUIRED, "metered ports (ifName); `Gi0/[1-48]` expands to a range"),
    _inherited("port", "snmp_port"),
    _inherited("interval_s"),
    _inherited("timeout_s"),
    _inherited("retries"),
    _inherited("max_repetitions"),
    S("port_speed_mbps", "int", 100, "speed of its server ports; no cap may exceed it", lo=1, hi=1_000_000),
    S("protected_ports", "list", (), "uplinks: never metered against a server, never shut"),
    S("ssh", "mapping", None, "how the enforcer logs in (see `switches.<name>.ssh`); none: it cannot shut"),
    S("cli_names", "mapping", None, "port (ifName) -> the CLI's spelling, where they differ"),
    S("sflow_agent", "text", None, "agent address in this switch's sFlow datagrams"),
))

SWITCH_SNMP = Section("switches.<name>.snmp", "SNMP v2c (community) or v3 authPriv (user, auth_key, priv_key).", (
    S("version", "choice", REQUIRED, "SNMP version (quote it: \"2c\", \"3\")", choices=("2c", "3")),
    S("community", "secret", None, "v2c community (required for 2c)"),
    S("user", "text", None, "v3 user (required for 3)"),
    S("auth_protocol", "choice", "sha", "v3 authentication protocol", choices=AUTH_PROTOCOLS),
    S("auth_key", "secret", None, "v3 authentication key (required for 3)"),
    S("priv_protocol", "choice", "aes", "v3 privacy protocol", choices=PRIV_PROTOCOLS),
    S("priv_key", "secret", None, "v3 privacy key (required for 3: authPriv only)"),
))

SWITCH_SSH = Section("switches.<name>.ssh", "The enforcer's SSH login (netmiko); give key_file or password.", (
    S("username", "text", REQUIRED, "login name"),
    S("port", "int", 22, "SSH port", lo=1, hi=65535),
    S("key_file", "file", None, "private key"),
    S("password", "secret", None, "password"),
    S("known_hosts", "file", None, "known_hosts for strict host-key checking"),
    S("host_key", "choice", From("known_hosts if given, else pin"),
      "host-key check: `known_hosts` (strict, that file), `pin` (trust on first use: the first key is"
      " pinned in `state_dir/ssh_host_keys/<switch>`, a changed key is refused and paged) or"
      " `insecure-accept-any` (no check: check-config warns, a metric shows it)", choices=HOST_KEY_MODES),
    S("save_config", "bool", False, "write memory after each change"),
    S("timeout_s", "number", 10.0, "connect and command timeout", lo=0.5, hi=300),
))

SERVER = Section("servers[]", "One customer server on one switch port; errors name it `servers[<id>]`.", (
    S("id", "text", REQUIRED, "unique server id", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
    S("customer", "text", REQUIRED, "customer name"),
    S("switch", "text", REQUIRED, "a name under `switches`"),
    S("port", "text", REQUIRED, "one of that switch's ports, not a protected one"),
    S("ips", "list", REQUIRED, "its IP addresses (R4), each on one server only"),
    S("template", "text", REQUIRED, "a name under `templates`"),
    S("monthly_fee_fen", "int", REQUIRED, "monthly fee in integer fen (0.01 CNY)", lo=0),
    S("cap_mbps", "number", From("its template"), "override of the template's cap", lo=0.001, hi=100_000),
    S("cap_changes", "list", (), "dated cap changes (R3, see `servers[].cap_changes[]`), ascending"),
    S("contacts", "text_list", (), "notice addresses (R9); none means unreachable", pattern=EMAIL_PATTERN),
    S("mail_server", "bool", False, "a declared mail server: exempt from the spam detector"),
    S("declared_ports", "int_list", (), "service ports the customer declared open (R8)", lo=1, hi=65535),
    S("whitelist", "list", (), "destination networks the detectors never count against it"),
    S("exemptions", "list", (), "time-limited detector waivers (see `servers[].exemptions[]`)"),
))

CAP_CHANGE = Section("servers[].cap_changes[]", "A new cap from a date on (R3).", (
    S("cap_mbps", "number", REQUIRED, "the new cap in Mbps", lo=0.001, hi=100_000),
    S("effective", "when", REQUIRED, "when it takes effect"),
))

EXEMPTION = Section("servers[].exemptions[]", "A waiver of detectors until a time, e.g. a booked pentest.", (
    S("detectors", "list", REQUIRED, "`all` or a list of: " + ", ".join(f"`{d}`" for d in DETECTORS)),
    S("until", "when", REQUIRED, "end of the waiver"),
    S("reason", "text", REQUIRED, "why (it goes into the audit record)"),
))

ENFORCEMENT = Section("enforcement", "The enforcement ladder per reason and the rails that fail closed.", (
    S("rules", "mapping", None, "per reason: " + ", ".join(f"`{r}`" for r in REASONS)
      + " (see `enforcement.rules.<reason>`)"),
    S("safety", "mapping", None, "shutdown budgets and breaker (see `enforcement.safety`)"),
))

_BUILT_IN = From("the reason's built-in rule")
RULE = Section("enforcement.rules.<reason>", "How one reason climbs observe -> notify -> grace -> shut -> restore.", (
    S("mode", "choice", From("agent.mode"), "this reason's mode", choices=MODES),
    S("grace_s", "number", _BUILT_IN, "from the notice to the shut", lo=0, hi=30 * _DAY),
    S("term_s", "term", _BUILT_IN, "how long a shut lasts; `until_restored`: until someone restores it",
      lo=1, hi=365 * _DAY),
    S("shut_at_once_if_unreachable", "bool", _BUILT_IN, "R9: shut without grace when the notice failed"),
    S("repeat_multiplier", "number", _BUILT_IN, "each repeat multiplies the term", lo=1, hi=100),
    S("max_term_s", "number", _BUILT_IN, "longest term after repeats", lo=1, hi=365 * _DAY),
    S("restrict", "mapping", _BUILT_IN,
      "finding -> `throttle` | `block_smtp` | `shut`: the rung at the end of the grace period"
      " (findings: `overage`; abuse detectors `spam`, `flood`, `scan`, ...; `block_smtp` for `spam` only;"
      " a throttle answers a cap judged on `out` only)"),
), notes="\n".join(
    ["Built-in rules (policies/ladder.py):", "",
     "| reason | grace_s | term_s | shut_at_once_if_unreachable | repeat_multiplier | max_term_s |",
     "|---|---|---|---|---|---|"]
    + [f"| `{r}` | {x.grace_s:g} | {'until_restored' if x.term_s is None else f'{x.term_s:g}'} | "
       f"{str(x.shut_at_once_if_unreachable).lower()} | {x.repeat_multiplier:g} | {x.max_term_s:g} |"
       for r, x in DEFAULT_RULES.items()]
    + ["", "Built-in `restrict`: "
       + "; ".join(f"`{r}`: " + (", ".join(f"{k} -> {v}" for k, v in x.restrict) or "shut")
                   for r, x in DEFAULT_RULES.items()) + "."]))

SAFETY = Section("enforcement.safety", "Rails: shutdown budgets and the per-switch breaker.", (
    S("max_shuts_per_switch", "int", _SAFETY.max_shuts_per_switch, "shuts per switch per budget window",
      lo=0, hi=10_000),
    S("max_shuts_total", "int", _SAFETY.max_shuts_total, "shuts over all switches per budget window",
      lo=0, hi=100_000),
    S("budget_window_s", "number", _SAFETY.budget_window_s, "the budgets' window", lo=1, hi=30 * _DAY),
    S("breaker_fraction", "number", _SAFETY.breaker_fraction,
      "more than this share of a switch's servers breaching at once opens its breaker", lo=0.01, hi=1),
    S("breaker_min_servers", "int", _SAFETY.breaker_min_servers, "the breaker needs at least this many servers",
      lo=1, hi=10_000),
))

NOTIFY = Section("notify", "Customer notices (zh/en) and on-call alerts.", (
    S("smtp", "mapping", None, "mail relay for customer notices (see `notify.smtp`)"),
    S("alertmanager_url", "text", None, "Alertmanager for on-call alerts", pattern=URL_PATTERN),
    S("webhook_url", "text", None, "webhook for every notice", pattern=URL_PATTERN),
    S("language", "choice", "both", "notice language", choices=("zh", "en", "both")),
    S("operator_contact", "text", "", "how customers reach the NOC, printed in notices"),
))

SMTP = Section("notify.smtp", "The mail relay.", (
    S("host", "text", REQUIRED, "relay host"),
    S("from", "text", REQUIRED, "sender address", pattern=r"[^@\s]+@[^@\s]+", attr="sender"),
    S("port", "int", 25, "relay port", lo=1, hi=65535),
    S("starttls", "bool", False, "STARTTLS before login"),
    S("username", "text", None, "login; none: no authentication"),
    S("password", "secret", None, "login password"),
))

DETECTION = Section("detection", "Abuse detection (R4-R8): an sFlow collector and/or SPAN mirror ports.", (
    S("sflow", "mapping", None, "sFlow collector (see `detection.sflow`)"),
    S("span", "mapping", None, "SPAN mirror capture (see `detection.span`)"),
    S("evaluate_interval_s", "number", 0.25, "how often the detectors are evaluated", lo=0.01, hi=60),
    S("engine", "choice", "vector", "detector state in arrays fed by columnar sFlow decoding (`vector`), "
      "or one object per server fed one sample at a time (`object`): the same detections",
      choices=("vector", "object"), attr="detector_engine"),
    S("thresholds", "mapping", None, "per template name (see `detection.thresholds.<template>`)"),
))

SFLOW = Section("detection.sflow", "Accepts datagrams only from switches' `sflow_agent` addresses.", (
    S("listen", "text", REQUIRED, "listen address", attr="sflow_listen"),
    S("port", "int", 6343, "UDP port", lo=0, hi=65535, attr="sflow_port"),
))

SPAN = Section("detection.span", "Capture from SPAN/mirror ports.", (
    S("mirrors", "list", REQUIRED, "mirror pairs (see `detection.span.mirrors[]`)"),
    S("netns", "text", None, "capture inside this network namespace", attr="span_netns"),
    S("mode", "choice", "ring", "capture socket: packet ring or plain recv", choices=("ring", "recv"),
      attr="span_mode"),
))

MIRROR = Section("detection.span.mirrors[]", "Where one switch port's mirrored traffic arrives.", (
    S("switch", "text", REQUIRED, "a name under `switches`"),
    S("port", "text", REQUIRED, "one of that switch's ports"),
    S("ingress", "text", None, "interface receiving the port's ingress copy"),
    S("egress", "text", None, "interface receiving the port's egress copy (give at least one of the two)"),
))


def _threshold(f: dataclasses.Field[Any]) -> Setting:
    # DetectThresholds (policies/detect.py) owns the names, types and defaults; its comments the meaning.
    kinds: dict[str, Kind] = {"int": "int", "bool": "bool", "frozenset[int]": "int_list"}
    kind = kinds.get(str(f.type), "number")
    hi = 65535 if kind == "int_list" else None
    return S(f.name, kind, f.default, "", lo=0, hi=hi)


THRESHOLDS = Section(
    "detection.thresholds.<template>",
    "Detector settings for one template's servers; unset keys keep the default. `DetectThresholds` in\n"
    "policies/detect.py declares them and says what each means.",
    tuple(_threshold(f) for f in dataclasses.fields(DetectThresholds)),
)

SECTIONS: tuple[Section, ...] = (
    TOP, AGENT, AGENT_HA, SNMP_DEFAULTS, TEMPLATE, SWITCH, SWITCH_SNMP, SWITCH_SSH, SERVER, CAP_CHANGE, EXEMPTION,
    ENFORCEMENT, RULE, SAFETY, NOTIFY, SMTP, DETECTION, SFLOW, SPAN, MIRROR, THRESHOLDS,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """docs/configuration.md: one table per section, from the declarations above."""
    out = [
        "<!-- Generated from agent/config_schema.py: do not edit by hand. Regenerate with",
        "     .venv/bin/python -m rackwarden.agent.config_schema > docs/configuration.md -->",
        "# Configuration reference",
        "",
        "Every key RackWarden's config file accepts. `config/example.yaml` is a commented example;",
        "`rackwarden check-config FILE` validates a file offline. Unknown keys, ambiguous values",
        "(`yes`, `no`, `on`, `off`) and values outside the bounds below are errors, each reported as",
        "`file:line key: reason`.",
    ]
    for sec in SECTIONS:
        out += ["", f"## `{sec.path}`" if sec.path else "## Top level", "", sec.doc, "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{s.key}` | {_cell(s.type_text())} | {_cell(s.default_text())} | {_cell(s.doc)} |" for s in sec]
        if sec.notes:
            out += ["", sec.notes]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
