"""The config loader composes with libyaml and gives exactly the pure-Python composer's answers.

agent/config.py reads YAML node trees (values, styles, start lines), never constructed
objects. The fast path composes with libyaml (yaml.CSafeLoader's composer, the same PyYAML
resolver) and normalises the one thing it spells differently (plain scalars' style '' for
None); anything libyaml refuses goes to the pure-Python composer, so errors keep their text
and line. Held here to the reference (yaml.compose with the pure-Python SafeLoader):

- the node trees of every YAML file in config/ and tests/, of tricky scalars (timestamps,
  0x/0o/sexagesimal ints, yes/no/on/off, nulls, tags, anchors, merge keys, line breaks of
  every kind) and of generated YAML-ish text: same kinds, tags, values, styles and start
  marks (line and column), or the same error;
- loads() on those configs and on broken ones: the same Config, or the same error list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.agent import config as configmod

ROOT = Path(__file__).resolve().parents[2]
YAML_FILES = sorted(p for d in ("config", "tests") for p in (ROOT / d).rglob("*")
                    if p.suffix in (".yaml", ".yml") and p.is_file())


def shape(node: Any) -> Any:
    """Everything config.py could read off a node tree, as plain data."""
    if node is None:
        return None
    seen: dict[int, int] = {}

    def walk(n: Any) -> Any:
        if id(n) in seen:  # an alias: the same node again (or a recursive one)
            return ("alias", seen[id(n)])
        marks = (n.start_mark.line, n.start_mark.column)  # end marks: see the test below
        if isinstance(n, yaml.ScalarNode):
            return ("scalar", n.tag, n.value, n.style, marks)
        seen[id(n)] = len(seen)
        # flow_style: see the test below (libyaml calls an indentless sequence block style)
        if isinstance(n, yaml.MappingNode):
            return ("map", n.tag, marks, [(walk(k), walk(v)) for k, v in n.value])
        return ("seq", n.tag, marks, [walk(x) for x in n.value])

    return walk(node)


def outcome(compose: Any, text: str) -> Any:
    try:
        return ("tree", shape(compose(text)))
    except yaml.YAMLError as e:
        return ("error", type(e).__name__, str(e))


def reference(text: str) -> Any:
    return yaml.compose(text, Loader=yaml.SafeLoader)


def assert_same_tree(text: str) -> None:
    assert outcome(configmod._compose, text) == outcome(reference, text), text


# Every test here runs with each fast composer: agent/_yamlcompose.c ("c", the first choice),
# and PyYAML's libyaml binding, which the loader takes when the C module is not built.
COMPOSERS = ["c", "pyyaml-libyaml"]


@pytest.fixture(autouse=True, params=COMPOSERS)
def composer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pyyaml-libyaml":
        monkeypatch.setattr(configmod, "_yaml_c_compose", None)
    return str(request.param)


def test_the_fast_composers_are_built(composer: str) -> None:
    # The goal is the speed: a loader without libyaml would pass every equality below, and
    # make test builds agent/_yamlcompose.c (libyaml-dev is in the Makefile's Debian step).
    assert yaml.__with_libyaml__ and configmod._C_LOADER is not None
    assert issubclass(configmod._C_LOADER, yaml.CSafeLoader)
    from rackwarden.agent import _yamlcompose_c

    assert composer != "c" or configmod._yaml_c_compose is _yamlcompose_c.compose


def test_libyaml_alone_would_change_answers() -> None:
    """What undid the first attempt: libyaml marks plain scalars with style '' and the
    readers tell `yes` from "yes" by style None; the harness above must see that."""
    text = "a: yes\nb: 'yes'\n"
    raw = shape(yaml.compose(text, Loader=yaml.CSafeLoader))
    assert raw != shape(reference(text))
    assert shape(configmod._compose(text)) == shape(reference(text))


def test_a_config_without_empty_values_takes_libyaml(monkeypatch: pytest.MonkeyPatch, composer: str) -> None:
    """The fast path must be the one taken (a refusal falls back silently, and every
    equality here would still hold): a config with no empty plain scalar never reaches the
    pure-Python composer, and one with `key:` does."""
    calls: list[str] = []
    real = yaml.compose
    monkeypatch.setattr(configmod.yaml, "compose", lambda *a, **k: calls.append(
        "pure" if k.get("Loader") in (None, yaml.SafeLoader) else "libyaml") or real(*a, **k))
    real_c = configmod._yaml_c_compose
    if real_c is not None:
        monkeypatch.setattr(configmod, "_yaml_c_compose", lambda *a: calls.append("c") or real_c(*a))
    fast = "c" if composer == "c" else "libyaml"
    root = configmod._compose(GOOD)
    assert calls == [fast] and root is not None
    calls.clear()
    configmod._compose(GOOD + "\nextra:\n")
    assert calls == [fast, "pure"]


def test_config_reads_no_end_marks_and_no_flow_styles() -> None:
    """End marks differ (libyaml ends a collection at the next token, a line later at the end
    of the text); the readers place errors by start marks only, which are held equal. Flow
    styles differ too: libyaml calls a sequence written at its key's indentation (`k:` then
    `- x` on the next line) block style, False, where PyYAML's parser leaves None (found by
    fuzz/yaml_compose_fuzz.py); the readers never ask whether a collection was written in
    flow or block style."""
    source = (ROOT / "agent" / "config.py").read_text(encoding="utf-8")
    assert "end_mark" not in source and "start_mark" in source
    assert "flow_style" not in source


def test_libyaml_and_pyyaml_differ_on_an_indentless_sequences_flow_style() -> None:
    """What the test above leaves out, so that a composer keeping PyYAML's None would be seen."""
    text = "k:\n- x\n"
    ours = configmod._compose(text)
    assert ours is not None and ours.value[0][1].flow_style in (False, None)
    assert reference(text).value[0][1].flow_style is None


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_in_the_repo(path: Path) -> None:
    assert_same_tree(path.read_text(encoding="utf-8"))


SCALARS = [
    # timestamps and dates
    "2026-12-01", "2026-12-01T00:00:00+08:00", "2001-12-14 21:59:43.10 -5", "2001-12-14t21:59:43.10-05:00",
    "2026-1-1", "2026-13-45", "12:30", "1:20:30",
    # ints and floats in YAML 1.1 spellings
    "0x1F", "0X1f", "0o17", "017", "0b1011", "1_000", "+12", "-0", "190:20:30", "0", "00", "08",
    ".5", "1e3", "1.0e+3", "6.8523015e+5", "685.230_15e+03", ".inf", "-.Inf", "+.INF", ".NaN", ".nan", "1.",
    "1_0.5", "0.1.2", "1e", "--1",
    # booleans and nulls
    "yes", "no", "on", "off", "y", "n", "Y", "N", "Yes", "NO", "On", "OFF", "true", "True", "TRUE",
    "false", "False", "FALSE", "~", "null", "Null", "NULL", "", "nULL",
    # quoted and tagged
    "'yes'", '"no"', "'0x1F'", '"2026-12-01"', "!!str 1", "!!int '7'", "!!bool yes", "!custom x",
    "!!timestamp 2026-12-01", "!!binary aGVsbG8=",
    # odd plain text
    "=", "<<", "a b  c", "ü 中文", "http://x:80/y", "x: y", "-", "- x", "{a: 1}", "[1, 2]", "'' ''",
    "'it''s'", '"tab\\there"', '"\\u00e9\\x41\\N"', "a #comment", "#", "%", "@x", "`x",
]


@pytest.mark.parametrize("scalar", SCALARS)
def test_tricky_scalars_in_block_and_flow(scalar: str) -> None:
    for text in (f"k: {scalar}\n", f"- {scalar}\n", f"{{k: {scalar}}}\n", f"[{scalar}]\n",
                 f"k:\n  - {scalar}\n  - x\n", f"{scalar}\n"):
        assert_same_tree(text)


STRUCTURES = [
    "base: &b {cap_mbps: 10, window_s: 300}\nrental:\n  <<: *b\n  credit: rental\n",
    "a: &x [1, 2]\nb: *x\nc: *x\n",
    "a: &r [*r]\n",  # an alias inside its own anchor
    "a: *undefined\n",
    "k: |\n  line 1\n   line 2\n\n",
    "k: >-\n  folded\n  text\n\n  kept\n",
    "k: |+\n  keep\n\n\n",
    "k: plain\n  continued\n  lines\n",
    "? complex key\n: value\n",
    "? [a, b]\n: seq key\n",
    "k: 'multi\n  line'\n",
    "k: \"esc\\\n  aped\"\n",
    "a: 1\r\nb: 2\r\n",
    "a: 1\rb: 2\r",
    "a: 1\x85b: 2\n",
    "a: 1\u2028b: 2\u2029c: 3\n",
    "\ufeffa: 1\n",
    "a: 1\n---\nb: 2\n",
    "--- \na: 1\n...\n",
    "%YAML 1.1\n---\na: 1\n",
    "%YAML 1.2\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n",
    "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "a:\n\t- 1\n",
    "a: [1, 2\n",
    "a: {b: 1\n",
    "a: 'unclosed\n",
    "a: \"bad \\q escape\"\n",
    "a: 1\n b: 2\n",
    "- a\nb: 1\n",
    "a: b: c\n",
    "a: 1\x00\n",
    "a: \x01\n",
    "a: \x7f\n",
    "a: \ud800\n",
    "a: \ufffe\n",
    "a: 😀\n",
    "{a: 1, a: 2}\n",
    "[a, b, ]\n",
    "{? a, b: }\n",
    "!!map {a: 1}\n",
    "!!seq [1]\n",
    "!!str\n",
    "&a\n",
    "",
    "# only a comment\n",
    "   \n\n",
    "k: " + "x" * 2000 + "\n",
    ("k" * 1100) + ": v\n",
]


@pytest.mark.parametrize("text", STRUCTURES)
def test_structures_and_broken_text(text: str) -> None:
    assert_same_tree(text)


_PIECES = [*"ab01 :-,[]{}?!&*|>'\"#%@`~.\n\t\r\\", "\x85", "\u2028", "é", "中", "\x00", "yes", "0x",
           ": ", "- ", "\n  ", "\n    ", "<<", "---", "..."]
_YAMLISH = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@given(_YAMLISH)
@settings(max_examples=int(os.environ.get("RW_YAML_EXAMPLES", "1500")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_generated_yamlish_text(text: str) -> None:
    assert_same_tree(text)


# -- loads(): the same Config, or the same errors, both ways ----------------------------------

def load_both(text: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[Any, Any]:
    def run() -> Any:
        try:
            return ("config", configmod.loads(text, "inv.yaml", **kw))
        except configmod.ConfigError as e:
            return ("errors", e.issues)

    fast = run()
    with monkeypatch.context() as m:
        m.setattr(configmod, "_yaml_c_compose", None)  # the pure-Python composer, as before
        m.setattr(configmod, "_C_LOADER", None)
        slow = run()
    return fast, slow


CONFIGS = [p for p in YAML_FILES if p.parts[-2] in ("config", "replay")
           or p.name.startswith("example")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_loads_gives_the_same_config(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fast, slow = load_both(text, monkeypatch, base=path.parent, require_credentials=False)
    assert fast == slow


GOOD = (ROOT / "tests" / "unit" / "test_config.py").read_text(encoding="utf-8").split('GOOD = """\\\n', 1)[1]
GOOD = GOOD.split('"""', 1)[0]
BROKEN = [
    ("vendor: cisco_ios", "vendor: yes"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: 0x10\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: ~\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: '80000'\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b",
     "monthly_fee_fen: 80000\n    cap_changes: [{cap_mbps: 20, effective: 2026-12-01}]\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: 80000\n    mail_server: on\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: 80000\n    mail_server: True\n  - id: b"),
    ("monthly_fee_fen: 80000\n  - id: b", "monthly_fee_fen: 80000\n    mail_server: 'true'\n  - id: b"),
    ("port: Gi0/2", "port: Gi0/9"),
    ("ips: [192.0.2.2]", "ips: [192.0.2.1]"),
    ("ips: [192.0.2.2]", "ips: 192.0.2.2"),
    ("address: 127.0.0.1", "address: [1, 2]"),
    ("version: 1", "version: 0o1"),
    ("version: 1", "version: 2"),
    ("switches:", "switches: &s"),
    ("  sw1:", "  sw1: \"unclosed"),
    ("    ports:", "\tports:"),
    ("templates:", "templates:\n  rental: {cap_mbps: 10, credit: rental}\n  rental: {}\ntemplates:"),
    ("version: 1", "version: 1\x00"),
    ("version: 1", "version: 1\n---\nversion: 1"),
    ("version: 1", ""),
]


@pytest.mark.parametrize("old,new", BROKEN)
def test_broken_configs_give_the_same_errors(old: str, new: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert old in GOOD
    fast, slow = load_both(GOOD.replace(old, new, 1), monkeypatch)
    assert fast == slow
    if fast[0] == "errors":
        assert fast[1] and all(e.startswith("inv.yaml:") for e in fast[1]), fast


def test_a_good_config_is_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = load_both(GOOD, monkeypatch)
    assert fast[0] == "config" and fast == slow


_OCTETS = st.one_of(st.integers(0, 300).map(str), st.from_regex(r"0[0-9]{1,3}", fullmatch=True),
                    st.sampled_from(["", "a", "\u0663", "1 ", "+1", "-0", "0x1"]))


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.lists(_OCTETS, min_size=3, max_size=5).map(".".join),
                 st.ip_addresses().map(str), st.text(max_size=20)))
def test_the_plain_ipv4_shortcut_is_ipaddress(text: str) -> None:
    """servers[].ips: a dotted quad already as ipaddress writes it skips the parse; anything
    else (leading zeros, other digits, IPv6, junk) goes through ipaddress, same answer."""
    import ipaddress

    try:
        want: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        want = None
    try:
        got: str | None = configmod._canonical_ip(text)
    except ValueError:
        got = None
    assert got == want
