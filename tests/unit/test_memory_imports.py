"""The daemon's imports leave out what it needs only later (issue 10: RSS at 10,000 servers)."""

from __future__ import annotations

import subprocess
import sys


def test_daemon_imports_leave_ssh_libraries_unloaded() -> None:
    """netmiko and paramiko (~12 MB) load with the first SSH session, not with the daemon."""
    code = ("import sys, rackwarden.agent.wiring, rackwarden.agent.cli;"
            "print(sorted(m for m in ('netmiko', 'paramiko') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
