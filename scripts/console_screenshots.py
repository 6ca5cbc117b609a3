#!/usr/bin/env python3
"""Regenerate the README's console screenshots from the browser test on the simulated agent.

    .venv/bin/python scripts/console_screenshots.py

Runs tests/integration/test_console_browser.py (no root, no network: tests/sim's whole agent, a
fake clock, Debian's chromium) with RW_SCREENSHOT_DIR pointing at a scratch directory, then
copies its fleet and server pages to docs/screenshots/console-fleet.png and console-server.png.
The pictures are what the test asserted on; a failing test writes none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"console-fleet.png": "console-fleet.png", "console-server.png": "console-server.png"}


def main() -> int:
    out = ROOT / "docs" / "screenshots"
    with tempfile.TemporaryDirectory(prefix="rw-screenshots-") as scratch:
        env = os.environ | {"RW_SCREENSHOT_DIR": scratch}
        test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/integration/test_console_browser.py"]
        if subprocess.run(test, cwd=ROOT, env=env).returncode != 0:
            print("the browser test failed: no screenshots written", file=sys.stderr)
            return 1
        out.mkdir(parents=True, exist_ok=True)
        for src, dst in PAGES.items():
            shutil.copyfile(Path(scratch) / src, out / dst)
            print(out / dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
