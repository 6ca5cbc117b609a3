"""One test per scenario file: the whole agent on simulated switches, no root, no network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from .runner import run_scenario

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the scenario (the event loop's own socketpair is fine)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the sim must not use the network: {args[1:] if len(args) > 1 else args}")

    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyaddr", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, tmp_path: Path, no_network: None) -> None:
    report = None
    try:
        run_scenario(path, tmp_path)
    except AssertionError as e:  # the runner's report says it all; its traceback would not
        report = str(e)
    if report is not None:
        pytest.fail(report, pytrace=False)
