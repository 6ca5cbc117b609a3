"""The daemon's imports leave out what it needs only later (issue 10: RSS at 10,000 servers)."""

from __future__ import annotations

import ast
import subprocess
import sys


def test_daemon_imports_leave_ssh_libraries_unloaded() -> None:
    """netmiko and paramiko (~12 MB) load with the first SSH session, not with the daemon."""
    code = ("import sys, rackwarden.agent.wiring, rackwarden.agent.cli;"
            "print(sorted(m for m in ('netmiko', 'paramiko') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(sorted({m.split('.')[0] for m in"
                          " sys.modules if m.startswith(('pysnmp.hlapi', 'pysmi', 'requests', 'jinja2', 'lark'))}))"],
                         check=True, capture_output=True, text=True)
    return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


def test_daemon_imports_leave_pysnmp_hlapi_unloaded() -> None:
    """pysnmp's hlapi pulls in pysmi (a MIB compiler) with requests, jinja2 and lark: ~20 MB
    that only a switch the fast SNMP paths cannot read needs."""
    assert _modules_after("import rackwarden.agent.wiring, rackwarden.agent.cli") == []


def test_started_poller_builds_pysnmp_only_when_a_fast_path_is_off() -> None:
    start = ("import asyncio, time\nfrom datetime import datetime, UTC\n"
             "from rackwarden.drivers.snmp.poller import SnmpPoller\n"
             "async def main():\n"
             "    p = SnmpPoller(wall=lambda: datetime.now(UTC), mono=time.monotonic,"
             " local_address=('127.0.0.1', 0){})\n"
             "    await p.start()\n"
             "    await p.close()\n"
             "asyncio.run(main())")
    assert _modules_after(start.format("")) == []
    assert "pysnmp" in _modules_after(start.format(", fast_v2c=False"))


def test_protocol_identifiers_are_pysnmps() -> None:
    from pysnmp.hlapi.v3arch import asyncio as hlapi
    from rackwarden.drivers.snmp.poller import AUTH_PROTOCOLS, PRIV_PROTOCOLS

    names = {"md5": "usmHMACMD5AuthProtocol", "sha": "usmHMACSHAAuthProtocol",
             "sha224": "usmHMAC128SHA224AuthProtocol", "sha256": "usmHMAC192SHA256AuthProtocol",
             "sha384": "usmHMAC256SHA384AuthProtocol", "sha512": "usmHMAC384SHA512AuthProtocol",
             "des": "usmDESPrivProtocol", "3des": "usm3DESEDEPrivProtocol", "aes": "usmAesCfb128Protocol",
             "aes128": "usmAesCfb128Protocol", "aes192": "usmAesCfb192Protocol",
             "aes256": "usmAesCfb256Protocol", "aes192blmt": "usmAesBlumenthalCfb192Protocol",
             "aes256blmt": "usmAesBlumenthalCfb256Protocol"}
    ours = {**AUTH_PROTOCOLS, **PRIV_PROTOCOLS}
    assert set(ours) == set(names)
    for name, attr in names.items():
        assert tuple(ours[name]) == tuple(getattr(hlapi, attr)), name


def test_daemon_imports_leave_the_postgresql_dialect_unloaded() -> None:
    """SQLAlchemy's PostgreSQL dialect (~2 MB) loads when a store connects to PostgreSQL."""
    code = ("import sys, rackwarden.agent.wiring, rackwarden.agent.cli;"
            "print(sorted(m for m in sys.modules if m.startswith('sqlalchemy.dialects.postgresql')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
