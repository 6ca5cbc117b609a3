"""After a SIGHUP reload only the new config is in memory (issue 10: RSS at 10,000 servers).

`rackwarden run` loaded the config into a local and kept it there while the daemon ran, so
the first config stayed alive beside every reloaded one.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent import cli, wiring

from bench.scale import write_fleet


class _Runtime:
    """Takes the config as Runtime does and, while "running", looks whether anyone else still
    holds it (a reload would have replaced it in every part of the real runtime)."""

    seen: list[bool] = []

    def __init__(self, config: Any, config_path: Path) -> None:
        self.config = weakref.ref(config)

    async def run(self) -> None:
        gc.collect()
        _Runtime.seen.append(self.config() is not None)


def test_run_keeps_no_reference_to_the_first_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, creds = write_fleet(tmp_path, switches=1, ports=2)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setattr(wiring, "Runtime", _Runtime)
    _Runtime.seen.clear()
    assert cli.main(["run", "--config", str(path)]) == 0
    assert _Runtime.seen == [False]
