"""Who may use the console: operators, customers, their sessions and the login rate limit.

Operators come from a web config file in the exporter-toolkit format (`basic_auth_users`, the
same file format as `agent.metrics_web_config`, read with webauth.load_web_config). Customers
come from `customers_web_config` (format below, parsed here). Every password is a bcrypt hash;
a check against an unknown login costs the same as a wrong password, so timing does not tell
which logins exist.

customers_web_config::

    customers:
      cust-1:                    # a customer id of servers[].customer in the inventory
        basic_auth_users:        # login: bcrypt hash (htpasswd -nBC 10 LOGIN)
          alice: $2b$10$...
      cust-2:
        basic_auth_users: {ops@cust-2.example: $2b$10$...}

A login belongs to exactly one customer; the same login under two customers is an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import bcrypt
import yaml

from ..webauth import WebConfig, WebConfigError, read_config_text
from ..yamldepth import too_deep

_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# bcrypt takes every core it is given; two at a time keep a guessing flood from starving the
# daemon's own work (the same bound as webauth's metrics checker).
_MAX_CONCURRENT_BCRYPT = 2

SESSION_IDLE_S = 8 * 3600.0  # a NOC shift
LOGIN_WINDOW_S = 300.0
LOGIN_MAX_FAILURES = 5  # per login name and per client address within LOGIN_WINDOW_S


class CustomersConfigError(WebConfigError):
    """customers_web_config cannot be used; str() is `file:line: reason`."""


@dataclass(frozen=True)
class CustomerLogins:
    """login -> (customer, bcrypt hash); hashes stay out of repr so they never reach a log."""

    logins: Mapping[str, tuple[str, bytes]] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    source: str = "<customers web config>"

    def customer_of(self, login: str) -> str | None:
        entry = self.logins.get(login)
        return entry[0] if entry is not None else None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _map_items(node: yaml.Node, source: str, where: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise CustomersConfigError(f"{source}:{_line(node)}: {where}: expected a mapping")
    return list(node.value)


def _scalar(node: yaml.Node, source: str, where: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value):
        raise CustomersConfigError(f"{source}:{_line(node)}: {where}: expected non-empty text")
    return str(node.value)


def parse_customers_config(text: str, source: str = "<customers web config>",
                           known_customers: frozenset[str] | None = None) -> CustomerLogins:
    """Parse customers_web_config; every error names the file, the line and the key."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise CustomersConfigError(f"{source}:{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        line, reason = too_deep(text)
        raise CustomersConfigError(f"{source}:{line}: not valid YAML: {reason}") from None
    if root is None:
        return CustomerLogins(source=source)
    logins: dict[str, tuple[str, bytes]] = {}
    for k, v in _map_items(root, source, "top level"):
        key = _scalar(k, source, "key")
        if key != "customers":
            raise CustomersConfigError(f"{source}:{_line(k)}: {key}: unknown key (allowed: customers)")
        for ck, cv in _map_items(v, source, "customers"):
            customer = _scalar(ck, source, "customers key")
            where = f"customers.{customer}"
            if known_customers is not None and customer not in known_customers:
                raise CustomersConfigError(f"{source}:{_line(ck)}: {where}: no server of the inventory has "
                                           "this customer")
            for uk, uv in _map_items(cv, source, where):
                ukey = _scalar(uk, source, f"{where} key")
                if ukey != "basic_auth_users":
                    raise CustomersConfigError(f"{source}:{_line(uk)}: {where}.{ukey}: unknown key "
                                               "(allowed: basic_auth_users)")
                for lk, lv in _map_items(uv, source, f"{where}.basic_auth_users"):
                    login = _scalar(lk, source, f"{where}.basic_auth_users key")
                    lw = f"{where}.basic_auth_users.{login}"
                    if ":" in login:
                        raise CustomersConfigError(f"{source}:{_line(lk)}: {lw}: a login must not contain ':'")
                    if login in logins:
                        raise CustomersConfigError(f"{source}:{_line(lk)}: {lw}: this login is already "
                                                   f"given to customer {logins[login][0]}")
                    h = lv.value if isinstance(lv, yaml.ScalarNode) else None
                    if not isinstance(h, str) or not _BCRYPT_HASH.match(h):
                        raise CustomersConfigError(f"{source}:{_line(lv)}: {lw}: not a bcrypt hash (make one "
                                                   f"with `htpasswd -nBC 10 {login}`)")
                    logins[login] = (customer, h.encode())
    return CustomerLogins(MappingProxyType(logins), source)


def load_customers_config(path: str | Path, known_customers: frozenset[str] | None = None) -> CustomerLogins:
    path = Path(path)
    return parse_customers_config(read_config_text(path, CustomersConfigError), str(path), known_customers)


def operator_users(web_config: WebConfig) -> Mapping[str, bytes]:
    """The operators of a console web config; its TLS belongs to the listener's own web config."""
    if web_config.tls is not None:
        raise WebConfigError(f"{web_config.source}: tls_server_config: the console is served on the local "
                             "API's listener; put TLS in agent.api_web_config")
    return web_config.basic_auth_users


class PasswordChecker:
    """bcrypt checks off the event loop; unknown logins cost the same as a wrong password."""

    def __init__(self, users: Mapping[str, bytes]):
        self._users = dict(users)
        cost = int(next(iter(self._users.values()))[4:6]) if self._users else 4
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))
        self._slots = threading.BoundedSemaphore(_MAX_CONCURRENT_BCRYPT)

    def _check(self, login: str, password: str) -> bool:
        hashed = self._users.get(login)
        with self._slots:
            try:
                ok = bcrypt.checkpw(password.encode(), hashed or self._dummy)
            except ValueError:  # over 72 bytes: bcrypt refuses, nothing can match
                ok = False
        return ok and hashed is not None

    async def check(self, login: str, password: str) -> bool:
        return await asyncio.to_thread(self._check, login, password)


class LoginLimiter:
    """At most LOGIN_MAX_FAILURES failed logins per login name and per client address within
    LOGIN_WINDOW_S; then every attempt is refused, right password or not, until the oldest
    failure leaves the window. Times are the clock's monotonic seconds."""

    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES, window_s: float = LOGIN_WINDOW_S):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def retry_after(self, keys: tuple[str, ...], now: float) -> float | None:
        """Seconds until a login may be tried again, or None when it may be tried now."""
        waits = [q[0] + self.window_s - now for k in keys
                 if len(q := self._recent(k, now)) >= self.max_failures]
        return max(waits) if waits else None

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        for k in keys:
            self._recent(k, now).append(now)
        # Forget idle keys so a scan of many names cannot grow the table without bound.
        if len(self._failures) > 10_000:
            for k in [k for k, q in self._failures.items() if not self._recent(k, now)]:
                del self._failures[k]


Kind = Literal["operator", "customer"]


@dataclass
class Session:
    kind: Kind
    login: str
    customer: str | None  # the customer of a customer login; None for operators
    csrf: str
    last_seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown on the next page

    @property
    def actor(self) -> str:
        """The name audit records carry: who did it, and through which door."""
        return f"{self.kind}:{self.login}"


class Sessions:
    """Server-side sessions keyed by a random cookie value; nothing about the user is in the cookie."""

    def __init__(self, idle_s: float = SESSION_IDLE_S):
        self.idle_s = idle_s
        self._by_id: dict[str, Session] = {}

    def new(self, kind: Kind, login: str, customer: str | None, now: float) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = Session(kind, login, customer, secrets.token_urlsafe(32), now)
        self._by_id[_digest(sid)] = s
        return sid, s

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        key = _digest(sid)
        s = self._by_id.get(key)
        if s is None:
            return None
        if now - s.last_seen > self.idle_s:
            del self._by_id[key]
            return None
        s.last_seen = now
        return s

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(_digest(sid), None)


def _digest(sid: str) -> str:
    # Stored by hash: a dict lookup by the raw value would compare it in variable time.
    return hashlib.sha256(sid.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
