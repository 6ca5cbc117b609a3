"""Layering: policies/ stays pure (no shell, no drivers, no I/O, no clock); drivers/ never imports agent/.

Facts flow one way: drivers/ -> policies/ -> agent/ (docs/architecture.md). These tests read
each module's syntax tree, so a violation is found without importing (or running) anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Nothing in policies/ may reach the shell or the drivers, under either import spelling
# (the folders sit at the top level and install as rackwarden.<folder>).
SHELL_PACKAGES = ("rackwarden.agent", "rackwarden.drivers", "agent", "drivers")

# Top-level modules whose import alone makes a module impure. Each group says why.
IMPURE_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("socket", "ssl", "select", "selectors", "asyncio", "subprocess", "os", "sys", "signal",
         "shutil", "tempfile", "pathlib", "glob", "fcntl", "mmap", "ctypes", "threading",
         "multiprocessing", "concurrent", "sqlite3", "urllib", "http", "smtplib", "ftplib",
         "requests"),
        "I/O or process state",
    ),
    **dict.fromkeys(
        ("sqlalchemy", "psycopg", "psycopg2", "pysnmp", "netmiko", "paramiko", "scapy",
         "prometheus_client", "apscheduler", "yaml", "aiosmtpd"),
        "an I/O library (belongs in drivers/ or agent/)",
    ),
    "logging": "logging (decisions carry their reasons; agent/ logs them)",
    "time": "the clock (take `now`/`at` as a parameter)",
    # A policy must give the same answer to the same table row every time.
    **dict.fromkeys(("random", "secrets", "uuid"), "nondeterminism"),
    # A dynamic import would hide any of the above from this check.
    "importlib": "dynamic import",
}
# json, re, math, fractions, zoneinfo, ipaddress, ... are pure and allowed.

# Clock reads, by the qualified name an attribute resolves to through the module's imports,
# and by the bare spelling when the name was not imported here (conservative).
CLOCK_READS = frozenset({
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today",
    "datetime.date.today",
    "datetime.now", "datetime.utcnow", "datetime.today", "date.today",
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
    "time.perf_counter_ns", "time.process_time", "time.sleep", "time.localtime", "time.gmtime",
    "time.ctime",
})
IO_BUILTINS = {
    "open": "I/O (open)",
    "print": "I/O (print)",
    "input": "I/O (input)",
    "__import__": "dynamic import (__import__)",
}


@dataclass(frozen=True, slots=True)
class Violation:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve_relative(level: int, module: str | None, package: str) -> str | None:
    """`from ..x import y` in `package` -> the absolute name, or None if it climbs past the top."""
    parts = package.split(".")
    if level - 1 >= len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[tuple[str, str]]:
    """(absolute name, as written) of everything an import statement brings in."""
    if isinstance(node, ast.Import):
        return [(a.name, a.name) for a in node.names]
    written = "." * node.level + (node.module or "")
    if node.level:
        base = _resolve_relative(node.level, node.module, package)
        if base is None:
            return [(f"<beyond the top of {package}>", written)]
    else:
        base = node.module or ""
    # `from pkg import name` may import the submodule pkg.name: check both spellings.
    out = [(base, written)]
    out += [(f"{base}.{a.name}", f"{written}{'' if written.endswith('.') else '.'}{a.name}")
            for a in node.names if a.name != "*"]
    return out


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified origin, from the module's imports (for `dt.now()` and the like)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def check_source(
    source: str,
    module: str,
    *,
    own_package: str = "rackwarden.policies",
    forbidden_packages: tuple[str, ...] = SHELL_PACKAGES,
    impure: bool = True,
) -> list[Violation]:
    """Every layering violation in one module's source, in line order.

    `module` is the module's dotted name (rackwarden.policies.ladder), which relative imports
    are resolved against. With `impure` (the policies/ check) relative imports must also stay
    inside `own_package`, and I/O, the clock and nondeterminism are refused; without it (the
    drivers/ check) only `forbidden_packages` are.
    """
    tree = ast.parse(source, filename=module)
    package = module.removesuffix(".__init__") if module.endswith(".__init__") else module.rpartition(".")[0]
    aliases = _aliases(tree)
    found: list[Violation] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(Violation(module, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            imported = _imported(node, package)
            if imported[0][0].startswith("<beyond"):
                flag(node, f"relative import `{imported[0][1]}` climbs past the top of {package}")
                continue
            shell = [(n, w, p) for n, w in imported for p in forbidden_packages if _within(n, p)]
            if shell:
                name, written, layer = shell[0]
                shown = name if name == written else f"{name} (`{written}`)"
                flag(node, f"imports {shown}: {own_package} must not import {layer}")
                continue
            if not impure:
                continue
            base, written = imported[0]
            if isinstance(node, ast.ImportFrom) and node.level and not _within(base, own_package):
                flag(node, f"relative import `{written}` reaches outside {own_package}")
                continue
            for name, _ in imported:
                top = name.split(".")[0]
                if top in IMPURE_MODULES:
                    flag(node, f"imports {name}: {IMPURE_MODULES[top]}")
                    break
        elif impure and isinstance(node, ast.Attribute):
            parts = _dotted(node)
            if parts is None:
                continue
            raw = ".".join(parts)
            qualified = ".".join([aliases.get(parts[0], parts[0]), *parts[1:]])
            if qualified in CLOCK_READS or raw in CLOCK_READS:
                flag(node, f"reads the clock: {raw}" + (f" ({qualified})" if qualified != raw else ""))
        elif impure and isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in IO_BUILTINS:
                flag(node, f"calls {node.func.id}(): {IO_BUILTINS[node.func.id]}")
    return sorted(found, key=lambda v: (v.line, v.what))


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _dotted_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return "rackwarden." + ".".join(rel.parts)


def _check_file(path: Path, **kw: object) -> list[Violation]:
    return check_source(path.read_text(encoding="utf-8"), _dotted_name(path), **kw)  # type: ignore[arg-type]


POLICY_MODULES = _modules("policies")
DRIVER_MODULES = _modules("drivers")


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_the_layers_are_found() -> None:
    # A wrong ROOT would make every parametrized test below vanish and the suite look green.
    assert any(p.name == "ladder.py" for p in POLICY_MODULES), ROOT
    assert any(p.name == "poller.py" for p in DRIVER_MODULES), ROOT


@pytest.mark.parametrize("path", POLICY_MODULES, ids=_id)
def test_policy_module_is_pure(path: Path) -> None:
    found = _check_file(path)
    assert not found, (f"{_id(path)} must stay pure (docs/architecture.md, 'Decide once'):\n"
                       + "\n".join(f"  {_id(path)}:{v.line}: {v.what}" for v in found))


@pytest.mark.parametrize("path", DRIVER_MODULES, ids=_id)
def test_driver_module_does_not_import_the_shell(path: Path) -> None:
    found = _check_file(path, own_package="rackwarden.drivers",
                        forbidden_packages=("rackwarden.agent", "agent"), impure=False)
    assert not found, (f"{_id(path)}: facts flow from drivers/ to policies/ to agent/, never back:\n"
                       + "\n".join(f"  {_id(path)}:{v.line}: {v.what}" for v in found))


# --- the checker itself: it must be able to fail, and must not cry wolf --------------------

def test_checker_reports_a_shell_import_and_a_clock_read() -> None:
    source = (
        "from datetime import datetime\n"
        "from rackwarden.agent.config import Config\n"
        "\n"
        "def decide(config: Config) -> str:\n"
        "    return datetime.now().isoformat()\n"
    )
    found = check_source(source, "rackwarden.policies.bad")
    assert [v.line for v in found] == [2, 5], found
    assert found[0].what.startswith("imports rackwarden.agent.config:"), found
    assert found[1].what.startswith("reads the clock: datetime.now"), found
    assert str(found[0]).startswith("rackwarden.policies.bad:2: ")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..agent import config\n", "rackwarden.agent"),
        ("from .. import drivers\n", "rackwarden.drivers"),
        ("from rackwarden import agent\n", "rackwarden.agent"),
        ("import rackwarden.drivers.snmp.poller\n", "rackwarden.drivers.snmp.poller"),
        ("from drivers.switch import base\n", "drivers.switch"),
        ("from ..billing_io import x\n", "reaches outside rackwarden.policies"),
        ("from .... import x\n", "climbs past the top"),
        ("import socket\n", "imports socket"),
        ("import os.path\n", "imports os.path"),
        ("from pathlib import Path\n", "imports pathlib"),
        ("import logging\n", "imports logging"),
        ("from sqlalchemy import select\n", "imports sqlalchemy"),
        ("import yaml\n", "imports yaml"),
        ("from urllib.parse import quote\n", "imports urllib.parse"),
        ("import time\n", "imports time"),
        ("from time import monotonic\n", "imports time"),
        ("import random\n", "nondeterminism"),
        ("import importlib\n", "dynamic import"),
        ("x = open('f').read()\n", "calls open()"),
        ("print('x')\n", "calls print()"),
        ("m = __import__('socket')\n", "calls __import__()"),
        ("import datetime\nt = datetime.datetime.utcnow()\n", "datetime.datetime.utcnow"),
        ("from datetime import date\nd = date.today()\n", "date.today"),
        ("from datetime import datetime as dt\nt = dt.now()\n", "(datetime.datetime.now)"),
        ("import time as t\nx = t.monotonic()\n", "(time.monotonic)"),
        ("from dataclasses import field\nfrom datetime import datetime\n"
         "f = field(default_factory=datetime.now)\n", "reads the clock: datetime.now"),
    ],
)
def test_checker_catches(source: str, expected: str) -> None:
    found = check_source(source, "rackwarden.policies.sample")
    assert any(expected in v.what for v in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import json\nx = json.loads('{}')\n",
        "from .facts import PortPoll\nfrom . import sla\n",
        "from rackwarden.policies.facts import PortPoll\n",
        "from datetime import UTC, datetime\nx = datetime.fromtimestamp(0, tz=UTC)\n",
        "def f(poll, clock_free):\n    return poll.now - clock_free.now\n",  # fields named now
        "from zoneinfo import ZoneInfo\nimport re, math, ipaddress\nfrom fractions import Fraction\n",
        "import datetime\nd = datetime.timedelta(seconds=1)\n",
    ],
)
def test_checker_allows(source: str) -> None:
    assert check_source(source, "rackwarden.policies.sample") == []


def test_driver_check_allows_policies_and_forbids_agent() -> None:
    ok = "from rackwarden.policies.facts import PortPoll\nfrom ...policies import flowfacts\nimport socket\n"
    assert check_source(ok, "rackwarden.drivers.snmp.poller", own_package="rackwarden.drivers",
                        forbidden_packages=("rackwarden.agent", "agent"), impure=False) == []
    bad = "from ...agent.config import Config\n"
    found = check_source(bad, "rackwarden.drivers.snmp.poller", own_package="rackwarden.drivers",
                         forbidden_packages=("rackwarden.agent", "agent"), impure=False)
    assert [v.line for v in found] == [1] and "rackwarden.agent.config" in found[0].what
