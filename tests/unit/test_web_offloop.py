"""The console reads its stores off the daemon's event loop: a slow SQLite read while a page
renders never stalls metering, enforcement or the sFlow path, which share that loop.

The usage and ledger stores are wrapped so that each read blocks until a coroutine on the loop
has ticked; a read on the loop's own thread can never see that (it is the thread that would
have to run the coroutine), and is recorded as a stall. No timing figure decides anything.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.web import ConsoleParts

from tests.unit.test_web_console import World, run

USAGE_READS = ("buckets", "p95_bps")
LEDGER_READS = ("outages", "maintenance_windows", "verify", "head", "unresolved_unknown")


class Probe:
    """Counts the loop's ticks and records, for every slow read, whether the loop ticked during it."""

    def __init__(self) -> None:
        self.loop_thread = threading.get_ident()
        self.ticks = 0
        self.reads: list[tuple[str, bool]] = []  # (method, the loop ticked while it blocked)

    async def ticker(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)

    def blocking_read(self, name: str) -> None:
        if threading.get_ident() == self.loop_thread:
            self.reads.append((name, False))  # the loop is blocked in this very call: no tick can come
            return
        before = self.ticks
        deadline = time.monotonic() + 30  # a bound for a wedged test, never a pass mark
        while self.ticks <= before + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        self.reads.append((name, self.ticks > before + 1))


class SlowStore:
    """The store, with the named reads held until the loop has ticked."""

    def __init__(self, inner: Any, reads: tuple[str, ...], probe: Probe) -> None:
        self._inner, self._reads, self._probe = inner, reads, probe

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._reads:
            return attr

        def slow(*args: Any, **kwargs: Any) -> Any:
            self._probe.blocking_read(name)
            return attr(*args, **kwargs)
        return slow


@pytest.mark.parametrize("login, path", [
    ("noc", "/fleet"), ("noc", "/server/srv-1"), ("noc", "/ledger"),
    ("alice", "/customer"), ("alice", "/customer/server/srv-1"),
])
def test_the_loop_keeps_running_while_a_page_reads_a_slow_store(tmp_path: Path, login: str, path: str) -> None:
    probe = Probe()

    def slow(parts: ConsoleParts) -> ConsoleParts:
        probe.loop_thread = threading.get_ident()  # the hook runs on the agent's loop
        return replace(parts, usage=SlowStore(parts.usage, USAGE_READS, probe),
                       ledger=SlowStore(parts.ledger, LEDGER_READS, probe))

    async def body(w: World) -> None:
        assert await w.login(login, customer=login == "alice") == 303
        ticker = asyncio.create_task(probe.ticker())
        try:
            status, html = await w.page(path)
        finally:
            ticker.cancel()
        assert status == 200, html[:300]
        assert probe.reads, "the page read nothing through the wrapped stores"
        stalled = sorted({name for name, ticked in probe.reads if not ticked})
        assert not stalled, f"{path}: read on the event loop, which stood still meanwhile: {stalled}"

    run(tmp_path, body, parts_hook=slow)
