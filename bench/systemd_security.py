"""The unit's `systemd-analyze security` exposure score, with and without SPAN, beside an unhardened unit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def score(unit: Path) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                       capture_output=True, text=True, check=False)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    if not m:
        raise RuntimeError(f"no exposure score in:\n{r.stdout}{r.stderr}")
    return float(m.group(1))


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rw-bench-systemd-"))
    unit = work / "rackwarden.service"
    rendered = subprocess.run([str(REPO / "scripts/install.sh"), "--render-unit", "--venv", str(REPO / ".venv")],
                              capture_output=True, text=True, check=True).stdout
    unit.write_text(rendered)
    base = score(unit)
    # The SPAN drop-in folded in: what a capture host runs with.
    span = work / "span" / "rackwarden.service"
    span.parent.mkdir()
    span.write_text(rendered + "\n" + (REPO / "systemd/rackwarden-span.conf").read_text())
    with_span = score(span)
    bare = work / "bare" / "rackwarden.service"
    bare.parent.mkdir()
    bare.write_text(f"[Service]\nExecStart={REPO / '.venv/bin/rackwarden'} run -c /etc/rackwarden/rackwarden.yaml\n")
    unhardened = score(bare)
    print(f"exposure: rackwarden.service {base} ; with SPAN drop-in {with_span} ; unhardened unit {unhardened}"
          " (systemd scale 0 = locked down .. 10 = exposed)")
    print(json.dumps({"exposure_unit": base, "exposure_unit_with_span": with_span,
                      "exposure_unhardened_baseline": unhardened}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
