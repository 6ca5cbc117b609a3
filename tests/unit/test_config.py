"""Strict config: each error class of issue 2 is reported as file:line key: reason, and secrets never print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rackwarden.agent import config as configmod

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
templates:
  rental: {cap_mbps: 10, credit: rental}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {version: "2c", community: "s3cret-community"}
    ports: ["Gi0/[1-4]", "Te0/1"]
    protected_ports: [Te0/1]
servers:
  - id: a
    customer: c1
    switch: sw1
    port: Gi0/1
    ips: [192.0.2.1]
    template: rental
    monthly_fee_fen: 80000
  - id: b
    customer: c2
    switch: sw1
    port: Gi0/2
    ips: [192.0.2.2]
    template: rental
    monthly_fee_fen: 80000
"""


def errors(text: str) -> list[str]:
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(text, "inv.yaml")
    return e.value.issues


def test_good_config_loads_frozen() -> None:
    cfg = configmod.loads(GOOD, "inv.yaml")
    assert [s.id for s in cfg.servers] == ["a", "b"]
    assert cfg.switches["sw1"].ports == ("Gi0/1", "Gi0/2", "Gi0/3", "Gi0/4", "Te0/1")
    assert cfg.server_on("sw1", "Gi0/2") is cfg.servers[1]
    with pytest.raises(AttributeError):  # frozen dataclass
        cfg.servers[0].port = "Gi0/3"  # type: ignore[misc]


@pytest.mark.parametrize("old,new,expected", [
    ("    ports: [\"Gi0/[1-4]\", \"Te0/1\"]", "    ports: [\"Gi0/[1-4]\", \"Te0/1\"]\n    colour: red",
     "inv.yaml:10 switches.sw1.colour: unknown key"),
    ("template: rental\n    monthly_fee_fen: 80000\n  - id: b",
     "template: rental\n    monthly_fee_fen: 80000\n    cap_changes: yes\n  - id: b",
     "inv.yaml:19 servers[a].cap_changes: ambiguous value 'yes'"),
    ("port: Gi0/2", "port: Gi0/9", "inv.yaml:22 servers[b].port: port 'Gi0/9' does not exist on switch 'sw1'"),
    ("port: Gi0/2", "port: Gi0/1", "inv.yaml:22 servers[b].port: sw1 Gi0/1 is already used by server 'a'"),
    ("ips: [192.0.2.2]", "ips: [192.0.2.1]", "inv.yaml:23 servers[b].ips: 192.0.2.1 is already assigned to server 'a'"),
    ("rental: {cap_mbps: 10,", "rental: {cap_mbps: 150,",
     "servers[a].cap_mbps: cap 150 Mbps is above the port speed 100 Mbps"),
    ("port: Gi0/2", "port: Te0/1", "servers[b].port: port 'Te0/1' is protected"),
    ("ports: [\"Gi0/[1-4]\", \"Te0/1\"]", "ports: [\"Gi0/[1-4]\", \"Gi0/2\", \"Te0/1\"]", "duplicate port 'Gi0/2'"),
    ("vendor: cisco_ios", "vendor: cisco", "switches.sw1.vendor: 'cisco' is not one of"),
    ("snmp: {version: \"2c\", community: \"s3cret-community\"}", "snmp: {version: \"3\", user: u}",
     "switches.sw1.snmp.auth_key: SNMPv3 needs user, auth_key and priv_key (authPriv)"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: 800.5\n  - id: b",
     "servers[a].monthly_fee_fen: '800.5' is not a whole number"),
    ("template: rental\n    monthly_fee_fen: 80000\n  - id: b", "template: gold\n    monthly_fee_fen: 80000\n  - id: b",
     "servers[a].template: no template named 'gold'"),
])
def test_each_error_names_file_line_key_and_reason(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = errors(GOOD.replace(old, new, 1))
    assert any(expected in e for e in found), found


def test_every_error_is_listed_not_just_the_first() -> None:
    bad = GOOD.replace("port: Gi0/2", "port: Gi0/9").replace("vendor: cisco_ios", "vendor: nope")
    bad = bad.replace("credit: rental}", "credit: rental, enabled: on}")
    found = errors(bad)
    assert len(found) == 3, found


def test_boolean_fields_take_only_true_or_false() -> None:
    text = "agent: {record_polls: on}\n" + GOOD
    assert any("agent.record_polls" in e and "ambiguous" in e for e in errors(text))
    cfg = configmod.loads("agent: {record_polls: true}\n" + GOOD, "inv.yaml")
    assert cfg.agent.record_polls is True


def test_secrets_come_from_files_or_credentials_and_never_print(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "comm").write_text("from-a-file\n")
    text = GOOD.replace('community: "s3cret-community"', "community: {file: comm}")
    cfg = configmod.loads(text, "inv.yaml", base=tmp_path)
    secret = cfg.switches["sw1"].snmp.community
    assert secret is not None and secret.reveal() == "from-a-file"
    assert "from-a-file" not in repr(cfg) and "from-a-file" not in str(secret)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = configmod.loads(text.replace("{file: comm}", "{credential: comm}"), "inv.yaml")
    assert cfg.switches["sw1"].snmp.community.reveal() == "from-a-file"  # type: ignore[union-attr]
    missing = errors(text.replace("{file: comm}", "{file: nope}"))
    assert any("switches.sw1.snmp.community: cannot read secret file" in e for e in missing)


def test_cap_changes_are_dated_data(tmp_path: Path) -> None:
    text = GOOD.replace("monthly_fee_fen: 80000\n  - id: b",
                        "monthly_fee_fen: 80000\n    cap_changes:\n"
                        "      - {cap_mbps: 20, effective: 2026-12-01}\n  - id: b")
    cfg = configmod.loads(text, "inv.yaml")
    sched = cfg.cap_schedule(cfg.servers[0])
    (eff, cap), = sched.changes
    assert cap == 20_000_000 and eff.isoformat() == "2026-12-01T00:00:00+08:00"
    assert sched.base_cap_bps == 10_000_000


def test_shipped_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sw1-snmp-auth", "sw1-snmp-priv", "sw2-snmp-community", "sw1-ssh-key", "known-hosts"):
        (tmp_path / name).write_text("example-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = configmod.load(ROOT / "config" / "example.yaml")
    assert len(cfg.servers) == 3 and cfg.agent.mode == "notify"
    assert cfg.switches["sw1"].ssh is not None and cfg.switches["sw1"].ssh.key_file == tmp_path / "sw1-ssh-key"
    assert cfg.enforcement.rules["nonpayment"].rule.term_s is None
    assert cfg.detection.sflow_listen == "0.0.0.0" and cfg.detection.thresholds["rental"]["flood_pps"] == 10000


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("port: Gi0/2", "port: Gi0/9"))
    cli = [sys.executable, "-m", "rackwarden.agent.cli", "check-config"]
    ok = subprocess.run(cli + [str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK (1 switches, 2 servers" in ok.stdout
    no = subprocess.run(cli + [str(bad)], capture_output=True, text=True)
    assert no.returncode != 0
    assert f"{bad}:22 servers[b].port: port 'Gi0/9' does not exist on switch 'sw1'" in no.stderr


def test_cli_names_do_not_rename_the_switch() -> None:
    # Bug: the cli_names loop reused the switch's name variable, so sw1 became "Te0/1".
    text = GOOD.replace("    protected_ports: [Te0/1]\n",
                        "    protected_ports: [Te0/1]\n"
                        "    cli_names: {Gi0/1: GigabitEthernet0/1, Te0/1: TenGigabitEthernet0/1}\n")
    cfg = configmod.loads(text, "inv.yaml")
    assert list(cfg.switches) == ["sw1"] and cfg.switches["sw1"].name == "sw1"
    assert cfg.switches["sw1"].cli_name("Gi0/1") == "GigabitEthernet0/1"
    assert cfg.switches["sw1"].cli_name("Gi0/2") == "Gi0/2"
    bad = errors(text.replace("Gi0/1: GigabitEthernet0/1", "Gi0/9: GigabitEthernet0/9"))
    assert any("switches.sw1.cli_names.Gi0/9: port 'Gi0/9' is not in switches.sw1.ports" in e for e in bad)



def test_whitelists_reach_the_detectors() -> None:
    from rackwarden.agent.abuse import server_specs

    text = GOOD.replace("    ips: [192.0.2.1]\n", "    ips: [192.0.2.1]\n    whitelist: [203.0.113.7/24]\n", 1)
    cfg = configmod.loads(text, "inv.yaml")
    specs = {s.id: s for s in server_specs(cfg, lambda sw, port: None)}
    assert specs["a"].whitelist == ("203.0.113.0/24",) and specs["b"].whitelist == ()
    bad = errors(text.replace("203.0.113.7/24", "not-a-net"))
    assert any("servers[a].whitelist: 'not-a-net' is not an IP network" in e for e in bad)


def test_a_template_names_its_credit_rule() -> None:
    from rackwarden.policies.sla import BUILTIN_TEMPLATES

    cfg = configmod.loads(GOOD, "inv.yaml")
    assert cfg.templates["rental"].credit == "rental"
    campus = GOOD.replace("  rental: {cap_mbps: 10, credit: rental}\n",
                          "  rental: {cap_mbps: 10, credit: rental}\n  campus: {cap_mbps: 10, credit: none}\n")
    assert configmod.loads(campus, "inv.yaml").templates["campus"].credit == configmod.NO_CREDIT
    assert set(configmod.CREDIT_RULES) == {*BUILTIN_TEMPLATES, "none"}


@pytest.mark.parametrize("old,new,expected", [
    # Bug: a template called `campus` silently got no credit rule because the rule was looked
    # up by the template's name; now the template must say which rule it means.
    ("rental: {cap_mbps: 10, credit: rental}", "rental: {cap_mbps: 10}",
     "inv.yaml:3 templates.rental.credit: required key missing: one of rental, colo, none"),
    ("rental: {cap_mbps: 10, credit: rental}", "rental: {cap_mbps: 10, credit: campus}",
     "inv.yaml:3 templates.rental.credit: 'campus' is not one of rental, colo, none"),
    ("rental: {cap_mbps: 10, credit: rental}", "rental: {cap_mbps: 10, credit: no}",
     "inv.yaml:3 templates.rental.credit: ambiguous value 'no'"),
])
def test_a_missing_or_unknown_credit_rule_is_refused(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = errors(GOOD.replace(old, new, 1))
    assert any(e.startswith(expected) for e in found), found
    # Its servers do not cascade into "no template named 'rental'".
    assert not any("no template named" in e for e in found), found


def test_a_template_without_credit_fails_check_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("rental: {cap_mbps: 10, credit: rental}", "rental: {cap_mbps: 10}"))
    cli = [sys.executable, "-m", "rackwarden.agent.cli", "check-config", str(bad)]
    no = subprocess.run(cli, capture_output=True, text=True)
    assert no.returncode != 0
    assert f"{bad}:3 templates.rental.credit: required key missing" in no.stderr


def test_vendors_are_the_driver_registry() -> None:
    from rackwarden.drivers.switch import DRIVERS

    assert set(configmod.VENDORS) == set(DRIVERS)
    for vendor in DRIVERS:
        cfg = configmod.loads(GOOD.replace("vendor: cisco_ios", f"vendor: {vendor}"), "inv.yaml")
        assert cfg.switches["sw1"].vendor == vendor
    found = errors(GOOD.replace("vendor: cisco_ios", "vendor: cisco"))
    assert any(e.endswith("is not one of " + ", ".join(DRIVERS)) for e in found), found


def test_required_text_may_not_be_empty() -> None:
    # Bug: `customer: ""` passed the reader and tripped an assert while building the server.
    found = errors(GOOD.replace("customer: c1", 'customer: ""'))
    assert any("inv.yaml:13 servers[a].customer: value missing" in e for e in found), found


def test_snmp_defaults_reach_switches_that_do_not_override_them() -> None:
    cfg = configmod.loads("snmp_defaults: {interval_s: 30, port: 1161}\n" + GOOD.replace(
        "    vendor: cisco_ios\n", "    vendor: cisco_ios\n    interval_s: 15\n"), "inv.yaml")
    sw = cfg.switches["sw1"]
    assert (sw.interval_s, sw.snmp_port, sw.timeout_s, sw.retries) == (15, 1161, 2.0, 1)


# --- issue 11: check-config on a fresh clone, and credentials under systemd ---------------------

EXAMPLE_CREDENTIALS = {  # name -> the line of config/example.yaml that names it
    "sw1-snmp-auth": 99, "sw1-snmp-priv": 101, "sw1-ssh-key": 109, "known-hosts": 110, "sw2-snmp-community": 117,
}


def _check_config(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from rackwarden.agent import cli

    try:
        rc = cli.main(["check-config", *argv])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def test_example_passes_check_config_on_a_fresh_clone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Bug: without $CREDENTIALS_DIRECTORY every {credential: NAME} was an error, so the
    # README's first command failed on the shipped example.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    example = "config/example.yaml"
    monkeypatch.chdir(ROOT)
    rc, out, err = _check_config([example], capsys)
    assert rc == 0, err
    for name, line in EXAMPLE_CREDENTIALS.items():
        assert f"{example}:{line} " in out and f"not checked: credential '{name}'" in out
    assert out.count(": not checked: ") == len(EXAMPLE_CREDENTIALS)
    assert f"{example}: OK (2 switches, 3 servers" in out and "5 credential(s) not checked" in out


def test_require_credentials_makes_an_unreadable_credential_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    rc, out, err = _check_config(["--require-credentials", str(ROOT / "config" / "example.yaml")], capsys)
    assert rc == 2 and "OK" not in out
    for line in EXAMPLE_CREDENTIALS.values():
        assert f"example.yaml:{line} " in err
    assert "$CREDENTIALS_DIRECTORY is not set" in err and "--credentials-dir" in err


def test_credentials_dir_is_checked_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --credentials-dir wins over the environment, and then every credential is read.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "not-this-one"))
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in EXAMPLE_CREDENTIALS:
        (creds / name).write_text("example-secret\n")
    example = str(ROOT / "config" / "example.yaml")
    for extra in ([], ["--require-credentials"]):
        rc, out, err = _check_config([*extra, "--credentials-dir", str(creds), example], capsys)
        assert rc == 0, err
        assert "not checked" not in out
    (creds / "sw2-snmp-community").unlink()
    (creds / "sw1-snmp-auth").write_bytes(b"\xff\xfe binary")
    rc, out, err = _check_config(["--credentials-dir", str(creds), example], capsys)
    assert rc == 2
    assert f"example.yaml:117 switches.sw2.snmp.community: cannot read secret file {creds}/sw2-snmp-community" in err
    assert f"example.yaml:99 switches.sw1.snmp.auth_key: secret file {creds}/sw1-snmp-auth:1: not UTF-8 text" in err


def test_only_check_config_may_leave_credentials_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Config with placeholders must never reach the daemon or the ledger commands: load()'s
    # default still requires every credential.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(configmod.ConfigError) as e:
        configmod.load(ROOT / "config" / "example.yaml")
    assert len(e.value.issues) == len(EXAMPLE_CREDENTIALS)
    cfg = configmod.load(ROOT / "config" / "example.yaml", require_credentials=False)
    assert len(cfg.unchecked) == len(EXAMPLE_CREDENTIALS)
    community = cfg.switches["sw2"].snmp.community
    assert community is not None and "not checked" in repr(community)


def test_the_unit_checks_credentials_before_start() -> None:
    unit = (ROOT / "systemd" / "rackwarden.service").read_text()
    pre = [x for x in unit.splitlines() if x.startswith("ExecStartPre=")]
    assert len(pre) == 1 and " check-config --require-credentials " in pre[0]


HASH = "$2b$04$4WwLbp8dY6m9bK5bM6y1xO7o0aYH1Y9b3nC3dY2pQ2vE8v9oJ2n9K"


def test_the_console_and_customer_logins_are_checked_with_the_config(tmp_path: Path) -> None:
    """A config that passes check-config starts the console: its login files load here first."""
    console = tmp_path / "console.yml"
    console.write_text("basic_auth_users: {}\n")
    customers = tmp_path / "customers.yml"
    customers.write_text(f"customers:\n  c9:\n    basic_auth_users: {{ops: '{HASH}'}}\n")
    text = GOOD.replace("version: 1\n", f"version: 1\nagent:\n  console_web_config: {console}\n"
                                        f"  customers_web_config: {customers}\n")
    issues = errors(text)
    assert any(i.startswith("inv.yaml:3 agent.console_web_config:") and "nobody could log in" in i for i in issues)
    assert any(i.startswith("inv.yaml:4 agent.customers_web_config:") and "c9" in i for i in issues), issues
    console.write_text(f"basic_auth_users: {{noc: '{HASH}'}}\n")
    customers.write_text(f"customers:\n  c1:\n    basic_auth_users: {{ops: '{HASH}'}}\n")
    cfg = configmod.loads(text, "inv.yaml")
    assert cfg.agent.console_web_config == console and cfg.agent.customers_web_config == customers


@pytest.mark.parametrize("key", ["spam_distinct_dsts", "scan_distinct_ports"])
def test_a_detector_limit_of_zero_is_a_config_error_not_a_crash(key: str) -> None:
    text = GOOD + f"detection:\n  thresholds:\n    rental: {{{key}: 0}}\n"
    (issue,) = errors(text)
    assert issue.startswith("inv.yaml:") and "detection.thresholds.rental" in issue
    assert f"{key} must be at least 1" in issue
