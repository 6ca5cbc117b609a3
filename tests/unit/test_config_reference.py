"""Config settings are declared once: the reference, the loader's bounds and the dataclasses agree with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from rackwarden.agent import config as configmod
from rackwarden.agent import config_schema as schema
from rackwarden.policies.safety import SafetyConfig

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
REGENERATE = ".venv/bin/python -m rackwarden.agent.config_schema > docs/configuration.md"

BASE: dict[str, Any] = {
    "version": 1,
    "templates": {"rental": {"cap_mbps": 10, "credit": "rental"}},
    "switches": {"sw1": {"address": "127.0.0.1", "vendor": "cisco_ios",
                         "snmp": {"version": "2c", "community": "c"}, "ports": ["Gi0/[1-4]"],
                         "ssh": {"username": "rw", "password": "p"}, "sflow_agent": "127.0.0.1"}},
    "servers": [{"id": "a", "customer": "c1", "switch": "sw1", "port": "Gi0/1", "ips": ["192.0.2.1"],
                 "template": "rental", "monthly_fee_fen": 80000}],
    "notify": {"smtp": {"host": "127.0.0.1", "from": "noc@idc.example"}},
}


def _at(doc: dict[str, Any], section: schema.Section) -> tuple[dict[str, Any], str]:
    """Where a section's keys go in a copy of BASE, and how errors spell that place."""
    sw1 = doc["switches"]["sw1"]
    detection = doc.setdefault("detection", {})
    server = doc["servers"][0]
    where: dict[str, tuple[dict[str, Any], str]] = {
        "": (doc, ""),
        "agent": (doc.setdefault("agent", {}), "agent"),
        "agent.ha": (doc.setdefault("agent", {}).setdefault("ha", {"holder": "noc-a"}), "agent.ha"),
        "snmp_defaults": (doc.setdefault("snmp_defaults", {}), "snmp_defaults"),
        "templates.<name>": (doc["templates"]["rental"], "templates.rental"),
        "switches.<name>": (sw1, "switches.sw1"),
        "switches.<name>.snmp": (sw1["snmp"], "switches.sw1.snmp"),
        "switches.<name>.ssh": (sw1["ssh"], "switches.sw1.ssh"),
        "servers[]": (server, "servers[a]"),
        "servers[].cap_changes[]": (server.setdefault("cap_changes", [{"cap_mbps": 20, "effective": "2026-12-01"}])[0],
                                    "servers[a].cap_changes[0]"),
        "enforcement.rules.<reason>": (doc.setdefault("enforcement", {}).setdefault("rules", {}).setdefault(
            "overage", {}), "enforcement.rules.overage"),
        "enforcement.safety": (doc.setdefault("enforcement", {}).setdefault("safety", {}), "enforcement.safety"),
        "notify": (doc["notify"], "notify"),
        "notify.smtp": (doc["notify"]["smtp"], "notify.smtp"),
        "detection": (detection, "detection"),
        "detection.sflow": (detection.setdefault("sflow", {"listen": "127.0.0.1"}), "detection.sflow"),
        "detection.span": (detection.setdefault("span", {"mirrors": [{"switch": "sw1", "port": "Gi0/1",
                                                                      "ingress": "span1"}]}), "detection.span"),
        "detection.thresholds.<template>": (detection.setdefault("thresholds", {}).setdefault("rental", {}),
                                            "detection.thresholds.rental"),
    }
    if section.path not in where:
        pytest.fail(f"{section.path} has bounded or choice settings but no place in this test: add it to `where`")
    return where[section.path]


def _bounded() -> list[tuple[schema.Section, schema.Setting]]:
    return [(sec, s) for sec in schema.SECTIONS for s in sec
            if s.kind in ("int", "number") and (s.lo is not None or s.hi is not None)]


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == schema.reference(), f"docs/configuration.md is stale: run {REGENERATE}"


def test_reference_says_how_to_regenerate_it() -> None:
    assert REGENERATE.removeprefix(".venv/bin/") in schema.reference().splitlines()[1]


def test_base_document_loads() -> None:
    cfg = configmod.loads(yaml.safe_dump(BASE), "inv.yaml")
    assert cfg.servers[0].id == "a"


@pytest.mark.parametrize("sec,setting", _bounded(), ids=lambda x: getattr(x, "key", None) or getattr(x, "path", ""))
def test_every_declared_bound_is_enforced(sec: schema.Section, setting: schema.Setting) -> None:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    where, path = _at(doc, sec)
    beyond = setting.hi + 1 if setting.hi is not None else (setting.lo or 0) - 1
    where[setting.key] = int(beyond) if setting.kind == "int" else beyond
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(yaml.safe_dump(doc), "inv.yaml")
    key = f"{path}.{setting.key}" if path else setting.key
    assert any(f" {key}: " in i and ("outside" in i or "at least" in i or "at most" in i)
               for i in e.value.issues), e.value.issues


@pytest.mark.parametrize("sec,setting", [(sec, s) for sec in schema.SECTIONS for s in sec if s.kind == "choice"],
                         ids=lambda x: getattr(x, "key", None) or getattr(x, "path", ""))
def test_every_declared_choice_is_enforced(sec: schema.Section, setting: schema.Setting) -> None:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    where, _ = _at(doc, sec)
    where[setting.key] = "nonsense"
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(yaml.safe_dump(doc), "inv.yaml")
    assert any(i.endswith(f"'nonsense' is not one of {', '.join(setting.choices)}") for i in e.value.issues)


def test_declared_defaults_obey_their_own_declarations() -> None:
    for sec in schema.SECTIONS:
        for s in sec:
            d = s.default
            if s.required or isinstance(d, schema.From) or d is None:
                continue
            where = f"{sec.path}.{s.key}"
            if s.kind == "choice":
                assert d in s.choices, where
            if s.kind in ("int", "number"):
                assert (s.lo is None or d >= s.lo) and (s.hi is None or d <= s.hi), where
            if s.kind == "int":
                assert isinstance(d, int) and not isinstance(d, bool), where


# Section -> the dataclass its generically read settings become (attribute = Setting.name).
MODELS: list[tuple[schema.Section, type[Any]]] = [
    (schema.AGENT, configmod.AgentSettings),
    (schema.AGENT_HA, configmod.HaSettings),
    (schema.TEMPLATE, configmod.TemplateConfig),
    (schema.SWITCH, configmod.SwitchConfig),
    (schema.SWITCH_SNMP, configmod.SnmpAuth),
    (schema.SWITCH_SSH, configmod.SshConfig),
    (schema.SERVER, configmod.ServerConfig),
    (schema.SAFETY, SafetyConfig),
    (schema.NOTIFY, configmod.NotifyConfig),
    (schema.SMTP, configmod.SmtpConfig),
    (schema.SFLOW, configmod.DetectionConfig),
    (schema.SPAN, configmod.DetectionConfig),
    (schema.DETECTION, configmod.DetectionConfig),
    (schema.MIRROR, configmod.MirrorConfig),
]


@pytest.mark.parametrize("sec,model", MODELS, ids=lambda x: getattr(x, "path", None) or getattr(x, "__name__", ""))
def test_declarations_match_the_dataclasses(sec: schema.Section, model: type[Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(model)}
    for s in sec:
        if s.kind not in schema.SCALAR_KINDS:
            continue
        assert s.name in fields, f"{sec.path}.{s.key} has no attribute {model.__name__}.{s.name}"
        f = fields[s.name]
        if f.default is not dataclasses.MISSING and f.default is not None:
            # A dataclass default is the declared one, not a second copy that can drift.
            assert f.default == s.default, f"{model.__name__}.{s.name}"


def test_vendor_choices_are_the_driver_registry() -> None:
    from rackwarden.drivers.switch import DRIVERS

    assert schema.SWITCH["vendor"].choices == tuple(DRIVERS)


def test_credit_choices_are_the_built_in_rules_and_none() -> None:
    from rackwarden.policies.sla import BUILTIN_TEMPLATES

    assert schema.TEMPLATE["credit"].choices == (*BUILTIN_TEMPLATES, "none")
    assert schema.TEMPLATE["credit"].required


def test_every_template_in_the_example_names_its_credit_rule() -> None:
    doc = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    assert {n: t["credit"] for n, t in doc["templates"].items()} == {
        "rental": "rental", "colo": "colo", "campus": "none"}
