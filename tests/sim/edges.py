"""The agent's edges in the sim: customers' mailboxes, the on-call pager and a shared enforcement lease.

Each fake stands where wiring.py puts a real part, behind the same seam:
- `SimSmtp` is a NoticeSender (drivers/notify/base.py) under the real `CustomerNotices`, so the
  notice each customer gets (stage, deadline, figures, rendered e-mail) is built by the agent's
  own code. Delivery mirrors SmtpNotifier: a notice with no address is undeliverable ("no
  contact address", R9: unreachable); an address the scenario made bounce is refused; one
  accepted address is enough. Like wiring.customer_notices, a config without `notify.smtp`
  gets no notifier at all.
- `SimPager` is an on-call Notifier behind the real `OnCall` fan-out; like wiring.oncall there
  is a sink only for a configured `alertmanager_url` / `webhook_url`.
- `LeaseTable` + `SimLease`: the Lease protocol of agent/ha.py over a table shared by every
  agent of a scenario, standing in for PostgreSQL advisory locks. A key outside the lease's key
  set is never held (`set_keys` matters), `confirm` asks the table, and a scenario can make
  another holder take a switch without this agent noticing for a while (its session is gone
  but its renewal has not run yet).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from rackwarden.agent.clock import FakeClock
from rackwarden.agent.config import Config
from rackwarden.agent.notices import CustomerNotices
from rackwarden.drivers.notify import Delivery, Notice, OnCall, message_id_for, render_email


@dataclass(frozen=True)
class SentNotice:
    """One delivery attempt as the relay saw it."""

    notice: Notice
    delivery: Delivery
    at: datetime


class Mailboxes:
    """The relay and the customers' inboxes: every attempt is kept; chosen servers' mail bounces."""

    def __init__(self) -> None:
        self.sent: list[SentNotice] = []
        self.bouncing: set[str] = set()  # server ids or addresses whose mail is refused


class SimSmtp:
    """A NoticeSender with SmtpNotifier's delivery rules and no network."""

    def __init__(self, box: Mailboxes, host: str, port: int, sender: str):
        self.box = box
        self.host = host
        self.port = port
        self.sender = sender

    async def send(self, notice: Notice, *, at: datetime | None = None) -> Delivery:
        msg_id = message_id_for(notice.key, self.sender)
        render_email(notice, self.sender, date=at)  # a notice that cannot be rendered fails here, as in SMTP
        where = f"{self.host}:{self.port}"
        refused = tuple(a for a in notice.to if a in self.box.bouncing or notice.server in self.box.bouncing)
        if not notice.to:
            d = Delivery(False, "no contact address", at, msg_id)
        elif len(refused) == len(notice.to):
            listing = "; ".join(f"{a}: 550 5.1.1 mailbox unavailable" for a in refused)
            d = Delivery(False, f"all recipients refused by {where}: {listing}", at, msg_id, refused, False)
        elif refused:
            d = Delivery(True, f"accepted for {len(notice.to) - len(refused)} of {len(notice.to)} recipients",
                         at, msg_id, refused)
        else:
            d = Delivery(True, f"accepted by {where} for {len(notice.to)} recipient(s)", at, msg_id)
        self.box.sent.append(SentNotice(notice, d, at or notice.at))
        return d


def notices_factory(box: Mailboxes) -> Callable[[Config], CustomerNotices | None]:
    def make(config: Config) -> CustomerNotices | None:
        n = config.notify.smtp
        if n is None:
            return None
        # CustomerNotices is typed for SmtpNotifier; it only needs a NoticeSender (send(notice, at=)).
        return CustomerNotices(config, SimSmtp(box, n.host, n.port, n.sender))  # type: ignore[arg-type]
    return make


@dataclass(frozen=True)
class Page:
    sink: str
    name: str
    severity: str
    labels: Mapping[str, str]
    summary: str
    at: datetime
    resolved: bool = False


class SimPager:
    """One on-call sink (the Notifier protocol) that records what it is sent."""

    def __init__(self, log: list[Page], sink: str):
        self.log = log
        self.sink = sink
        self.last_detail = ""

    async def alert(self, name: str, severity: str, labels: Mapping[str, str], summary: str, description: str,
                    at: datetime) -> bool:
        self.log.append(Page(self.sink, name, severity, dict(labels), summary, at))
        return True

    async def resolve_alert(self, name: str, severity: str, labels: Mapping[str, str], at: datetime) -> bool:
        self.log.append(Page(self.sink, name, severity, dict(labels), "", at, resolved=True))
        return True


def oncall_factory(log: list[Page]) -> Callable[[Config], OnCall | None]:
    def make(config: Config) -> OnCall | None:
        sinks = {}
        if config.notify.alertmanager_url:
            sinks["alertmanager"] = SimPager(log, "alertmanager")
        if config.notify.webhook_url:
            sinks["webhook"] = SimPager(log, "webhook")
        return OnCall(sinks) if sinks else None
    return make


class LeaseTable:
    """Who holds which switch: what the advisory locks in the shared database are to the real lease."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.last_holder: dict[str, str] = {}

    def holder(self, key: str) -> str | None:
        return self.holders.get(key)

    def try_take(self, key: str, holder: str) -> bool:
        now = self.holders.get(key)
        if now is None:
            self.holders[key] = holder
            return True
        return now == holder

    def release(self, key: str, holder: str) -> None:
        if self.holders.get(key) == holder:
            del self.holders[key]
            self.last_holder[key] = holder

    def force(self, key: str, holder: str | None) -> None:
        """A fault: the key goes to `holder` (or is freed) whatever its holder believes."""
        prev = self.holders.pop(key, None)
        if prev is not None:
            self.last_holder[key] = prev
        if holder is not None:
            self.holders[key] = holder


class SimLease:
    """The Lease protocol (agent/ha.py) over a shared LeaseTable.

    `refresh()` is what EnforcementLease's renewal loop does every renew_s (the runner calls it
    on that schedule): notice keys lost, take free keys of the key set, call `on_acquired` for
    each new one. `blind_until` (a monotonic time) models a holder whose session is already gone
    while its next renewal has not yet run: until then it still believes what it believed.
    """

    def __init__(self, table: LeaseTable, *, holder: str, clock: FakeClock, keys: Iterable[str] = ()):
        self.table = table
        self.holder = holder
        self.clock = clock
        self.keys = frozenset(keys)
        self.on_acquired: Callable[[str], Awaitable[None]] | None = None
        self.takeovers_total = self.lost_total = self.reconnects_total = 0
        self.collisions: tuple[str, ...] = ()
        self.blind_until: float | None = None
        self._held: set[str] = set()
        self._pending: list[str] = []
        self._started = False

    async def start(self) -> None:
        # Hooks queued here run at flush(), after the enforcer has started: EnforcementLease
        # runs them as tasks, which get their turn only once start-up has finished.
        self._started = True
        self._renew()

    async def stop(self) -> None:
        for k in sorted(self._held):
            self.table.release(k, self.holder)
        self._held.clear()
        self._started = False

    async def refresh(self) -> None:
        if self.blind_until is not None and self.clock.now() < self.blind_until:
            return
        self.blind_until = None
        self._renew()
        await self.flush()

    def _renew(self) -> None:
        for k in sorted(self._held):
            if self.table.holder(k) != self.holder:
                self._held.discard(k)
                self.lost_total += 1
        for k in sorted(self.keys):
            if k in self._held:
                continue
            prev = self.table.holder(k) or self.table.last_holder.get(k)
            if self.table.try_take(k, self.holder):
                self._held.add(k)
                if prev is not None and prev != self.holder:
                    self.takeovers_total += 1
                self._pending.append(k)

    async def flush(self) -> None:
        while self._pending:
            k = self._pending.pop(0)
            if self.on_acquired is not None and k in self._held:
                await self.on_acquired(k)

    def held(self, key: str) -> bool:
        return key in self._held

    async def confirm(self, key: str) -> bool:
        return key in self._held and self.table.holder(key) == self.holder

    def set_keys(self, keys: Iterable[str]) -> None:
        new = frozenset(keys)
        for k in self._held - new:
            self.table.release(k, self.holder)
        self._held &= new
        self.keys = new

    @property
    def held_keys(self) -> frozenset[str]:
        return frozenset(self._held)

    @property
    def connected(self) -> bool:
        return self._started
