"""The operator console and the customer page: server-rendered HTML, no script, nothing fetched.

Every state-changing form is a POST carrying the session's CSRF token and runs the code the CLI
and the API run: Enforcer.suspend/restore/hold (the ladder's step, with its rails and audit
record) and LedgerStore.reclassify (a new ledger entry, as `rackwarden ledger reclassify`).
Who did it is the session's `operator:LOGIN` or `customer:LOGIN`.

A customer session sees only servers whose `customer` is its own; any other server id, real or
not, gets the same 404, so guessing ids tells nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from rackwarden.drivers.notify.notice import Reason
from rackwarden.policies import ladder as L
from rackwarden.policies.billing import BILLING_DIRECTIONS, percentile_95
from rackwarden.policies.sla import (
    CAUSES,
    RECLASS_TARGETS,
    WINDOW_KINDS,
    contract_timezone,
    duration_text,
    fraction_text,
    month_bounds,
)
from sqlalchemy import select

from ..actions import notices as notices_table
from ..config import Config, ServerConfig
from ..enforcer import REASONS as REQUEST_REASONS
from ..enforcer import EnforcementError, Enforcer
from ..ledger import LedgerError, LedgerStore, ServerSla, server_sla
from ..ledger.cli_common import verify_text
from ..ledger.views import throttled_periods
from ..notices import recheck_notice
from ..usage import UsageStore
from .auth import CustomerLogins, LoginLimiter, PasswordChecker, Session, Sessions, same_secret
from .i18n import local_time, mbps, pick_lang, t, yuan
from .recheck import Measured, RecheckAnswer, answer, still_over
from .svg import RatePoint, rate_chart

SESSION_COOKIE = "rw_session"
LOGIN_CSRF_COOKIE = "rw_login_csrf"
LANG_COOKIE = "rw_lang"
# What a customer may ask to have re-checked: the restrictions its own fix can end. A
# nonpayment or an operator's suspension is lifted by the operator, not by "it's fixed".
CUSTOMER_FIXABLE = ("overage", "abuse")
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

CSS = """
body{font-family:sans-serif;margin:0;color:#222}
header{background:#234;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}
header a,header button{color:#fff;background:none;border:0;font:inherit;cursor:pointer;text-decoration:underline}
main{padding:1em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top;font-size:90%}
.flash-ok{background:#dfd;padding:.5em}.flash-error{background:#fdd;padding:.5em}
.shut{background:#fdd}.restricted{background:#fec}.noticed{background:#ffd}.held{background:#def}
pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}
form.inline{display:inline}
"""


Rungs = dict[tuple[str, str], L.Rung]
P = ParamSpec("P")
R = TypeVar("R")


async def off_loop(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a page's store reads (SQLite: usage, ledger, actions) in a worker thread: a slow read
    must never stall the daemon's loop, which meters, enforces and takes sFlow meanwhile. What
    the thread reads of the loop's state is a snapshot taken before (`ladder_snapshot`)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


BUCKET_S = 300  # the usage store's bucket: usage_5m
# No projection before one day of buckets: a day is one cycle of the daily traffic curve, and
# less than that (a night alone, a busy afternoon alone) says nothing about the month.
PROJECTION_MIN_BUCKETS = 24 * 3600 // BUCKET_S
# Evidence pcaps live in state_dir/evidence/<server>/ with names made of these characters only
# (drivers/capture/evidence.py evidence_path); a download name must be one of them, no more.
_EVIDENCE_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_EVIDENCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.pcap")
_EVIDENCE_PARTS = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)-([A-Za-z0-9_.]+)-(.+)\.pcap")


@dataclass(frozen=True)
class P95Projection:
    """The month's 95th percentile so far, its month-end projection and its floor (bit/s)."""

    so_far: float | None  # nearest-rank 95th of the buckets measured so far
    buckets: int  # measured so far
    month_buckets: int  # 5-minute buckets in the whole contract month
    discard: int  # how many of the month's buckets the month-end 95th drops (its top 5 %)
    floor: float | None  # the month-end 95th cannot end lower than this, whatever comes
    projected: float | None  # None: too early (fewer than min_buckets)
    min_buckets: int


def project_p95(rates: Sequence[float], month_buckets: int,
                min_buckets: int = PROJECTION_MIN_BUCKETS) -> P95Projection:
    """Project the month-end 95th percentile from the month's bucket rates so far. Pure.

    The month-end figure is the nearest-rank 95th over all `month_buckets`: it drops the top
    `discard = month_buckets - ceil(0.95 * month_buckets)` buckets and takes the highest left.
    - Projection: the rest of the month is assumed to repeat the mix of rates seen so far, so
      the projection is the 95th percentile of the buckets so far; with fewer than
      `min_buckets` (a day) there is none. Once the month is measured it is the month's 95th.
    - Floor: the (discard + 1)-th highest bucket so far. Only `discard` buckets can be dropped
      at month end, so the final 95th is at least this even if the rest of the month is idle;
      it exists once more than `discard` buckets are measured.
    """
    if month_buckets <= 0:
        raise ValueError(f"month_buckets must be positive, not {month_buckets}")
    discard = month_buckets - math.ceil(0.95 * month_buckets)
    ordered = sorted(rates, reverse=True)
    so_far = percentile_95(ordered)
    floor = ordered[discard] if len(ordered) > discard else None
    projected = None
    if so_far is not None and len(ordered) >= min_buckets:
        # so_far >= floor always (it drops fewer buckets); max() keeps that true by construction.
        projected = max(so_far, floor) if floor is not None else so_far
    return P95Projection(so_far, len(ordered), month_buckets, discard, floor, projected, min_buckets)


@dataclass(frozen=True)
class EvidenceFile:
    name: str
    path: Path
    size: int
    detected_at: datetime | None  # from the name's stamp (the detection's last sample)
    detector: str
    kind: str


def evidence_dir(state_dir: Path, server_id: str) -> Path:
    return state_dir / "evidence" / _EVIDENCE_SAFE.sub("_", server_id)


def evidence_files(state_dir: Path, server_id: str) -> list[EvidenceFile]:
    """The server's evidence pcaps, newest first; anything not a plain pcap file is left out."""
    d = evidence_dir(state_dir, server_id)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for name in names:
        path = d / name
        if not _EVIDENCE_NAME.fullmatch(name) or path.is_symlink() or not path.is_file():
            continue
        m = _EVIDENCE_PARTS.fullmatch(name)
        at = None
        if m:
            try:
                at = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
            except ValueError:
                at = None
        out.append(EvidenceFile(name, path, path.stat().st_size, at, m.group(2) if m else "-",
                                m.group(3) if m else "-"))
    return sorted(out, key=lambda f: (f.detected_at or datetime.min.replace(tzinfo=UTC), f.name), reverse=True)


def safe_evidence_file(state_dir: Path, server_id: str, name: str) -> Path | None:
    """The file to send for a download request, or None. The name from the URL is never joined
    into a path until it is one of the names the server's evidence directory lists, and the
    result must still resolve inside the evidence directory (no symlink out)."""
    if not _EVIDENCE_NAME.fullmatch(name) or ".." in name:
        return None
    d = evidence_dir(state_dir, server_id)
    try:
        if name not in os.listdir(d):
            return None
        path = d / name
        root = (state_dir / "evidence").resolve(strict=True)
        if path.is_symlink() or not path.resolve(strict=True).is_relative_to(root) or not path.is_file():
            return None
    except OSError:
        return None
    return path


@dataclass
class ConsoleParts:
    """What the pages read and act through; the config is the enforcer's current snapshot."""

    enforcer: Enforcer
    ledger: LedgerStore
    usage: UsageStore | None
    operators: Mapping[str, bytes]
    customers: CustomerLogins | None = None
    secure_cookies: bool = False


def _h(value: object) -> str:
    return escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_h(x)}</th>" for x in headers)
    body = "".join(
        f'<tr class="{_h(row_classes[i]) if row_classes else ""}">' + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Console:
    def __init__(self, parts: ConsoleParts):
        self.p = parts
        self.sessions = Sessions()
        self.limiter = LoginLimiter()
        self.operator_check = PasswordChecker(parts.operators)
        self.customer_check = PasswordChecker({k: v[1] for k, v in
                                               (parts.customers.logins.items() if parts.customers else ())})

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.p.enforcer.config

    def now(self) -> datetime:
        return self.p.enforcer.clock.at()

    def mono(self) -> float:
        return self.p.enforcer.clock.now()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/static/console.css", self.css)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/fleet", self.operator(self.fleet))
        r.add_get("/server/{sid}", self.operator(self.server_page))
        r.add_get("/server/{sid}/evidence/{name}", self.operator(self.evidence_download))
        r.add_post("/server/{sid}/{what}", self.operator(self.server_action))
        r.add_get("/ledger", self.operator(self.ledger_page))
        r.add_post("/ledger/reclassify", self.operator(self.reclassify))
        r.add_post("/ledger/maintenance", self.operator(self.declare_window))
        r.add_get("/customer/login", self.login_form)
        r.add_post("/customer/login", self.login)
        r.add_get("/customer", self.customer(self.customer_home))
        r.add_get("/customer/server/{sid}", self.customer(self.customer_server))
        r.add_post("/customer/server/{sid}/recheck", self.customer(self.recheck))

    def lang(self, request: web.Request) -> str:
        return pick_lang(request.query.get("lang") or request.cookies.get(LANG_COOKIE))

    def session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), self.mono())

    def operator(self, handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return self._guard("operator", "/login", handler)

    def customer(self, handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return self._guard("customer", "/customer/login", handler)

    def _guard(self, kind: str, login_path: str,
               handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
               ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            s = self.session(request)
            if s is None:
                if request.method == "POST":
                    raise web.HTTPForbidden(text="not logged in")
                raise web.HTTPSeeOther(login_path)
            if s.kind != kind:
                # The other door's session opens nothing here, and says nothing about what is.
                raise web.HTTPNotFound(text="not found")
            if request.method == "POST":
                form = await request.post()
                if not same_secret(str(form.get("csrf", "")), s.csrf):
                    raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")
            return await handler(request, s)
        return guarded

    def page(self, request: web.Request, title: str, body: str, s: Session | None) -> web.Response:
        lang = self.lang(request)
        nav = ""
        if s is not None:
            links = ([("/fleet", t(lang, "fleet")), ("/ledger", t(lang, "ledger"))] if s.kind == "operator"
                     else [("/customer", t(lang, "my_servers"))])
            nav = "".join(f'<a href="{u}">{_h(x)}</a>' for u, x in links)
            nav += (f'<span>{_h(s.login)}</span><form class="inline" method="post" action="/logout">'
                    f'{self.csrf_field(s)}<button type="submit" id="logout">{_h(t(lang, "logout"))}</button></form>')
        other = "en" if lang != "en" else "zh-CN"
        qs = dict(request.query) | {"lang": other}
        switch = f'<a href="{_h(request.path)}?{_h(urlencode(qs))}">{"English" if other == "en" else "中文"}</a>'
        flash = ""
        if s is not None:
            flash = "".join(f'<p class="flash-{_h(k)}">{_h(m)}</p>' for k, m in s.flash)
            s.flash.clear()
        html = (f'<!doctype html><html lang="{_h(lang)}"><head><meta charset="utf-8">'
                f'<title>{_h(title)}</title><link rel="stylesheet" href="/static/console.css"></head>'
                f'<body><header><strong>RackWarden</strong>{nav}{switch}</header><main>'
                f'<h1>{_h(title)}</h1>{flash}{body}</main></body></html>')
        resp = web.Response(text=html, content_type="text/html", charset="utf-8")
        self._headers(resp)
        if "lang" in request.query:
            resp.set_cookie(LANG_COOKIE, lang, httponly=True, samesite="Strict", secure=self.p.secure_cookies)
        return resp

    @staticmethod
    def _headers(resp: web.StreamResponse) -> None:
        resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"

    @staticmethod
    def csrf_field(s: Session) -> str:
        return f'<input type="hidden" name="csrf" value="{_h(s.csrf)}">'

    def back(self, path: str) -> web.HTTPSeeOther:
        return web.HTTPSeeOther(path)

    # -- log in and out ------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        s = self.session(request)
        raise web.HTTPSeeOther("/customer" if s is not None and s.kind == "customer" else "/fleet")

    async def css(self, request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", charset="utf-8")

    async def login_form(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        lang = self.lang(request)
        customer = request.path.startswith("/customer")
        token = secrets.token_urlsafe(24)
        title = t(lang, "customer_login" if customer else "operator_login")
        err = f'<p class="flash-error" id="login-error">{_h(error)}</p>' if error else ""
        body = (f'{err}<form method="post" action="{_h(request.path)}">'
                f'<input type="hidden" name="csrf" value="{_h(token)}">'
                f'<p><label>{_h(t(lang, "user"))} <input name="user" id="user" autocomplete="username"></label></p>'
                f'<p><label>{_h(t(lang, "password"))} <input type="password" name="password" id="password" '
                f'autocomplete="current-password"></label></p>'
                f'<p><button type="submit" id="login">{_h(t(lang, "login"))}</button></p></form>')
        resp = self.page(request, title, body, None)
        resp.set_status(status)
        # Login CSRF: the form's token must match this cookie, so another site cannot log a
        # browser in under the attacker's account.
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=self.p.secure_cookies,
                        path=request.path)
        return resp

    async def login(self, request: web.Request) -> web.StreamResponse:
        lang = self.lang(request)
        customer = request.path.startswith("/customer")
        form = await request.post()
        if not same_secret(str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "\0")):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the login page")
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        keys = (f"user:{'c' if customer else 'o'}:{user}", f"addr:{request.remote}")
        now = self.mono()
        wait = self.limiter.retry_after(keys, now)
        if wait is not None:
            # Refused before bcrypt runs: a locked-out guesser costs no CPU and learns nothing.
            return await self.login_form(request, t(lang, "too_many", s=int(wait) + 1), 429)
        checker = self.customer_check if customer else self.operator_check
        if not await checker.check(user, password):
            self.limiter.failed(keys, now)
            return await self.login_form(request, t(lang, "bad_login"), 401)
        owner = self.p.customers.customer_of(user) if customer and self.p.customers else None
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))  # a fresh id at every login
        sid, _ = self.sessions.new("customer" if customer else "operator", user, owner, now)
        resp = web.HTTPSeeOther("/customer" if customer else "/fleet")
        resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=self.p.secure_cookies)
        resp.del_cookie(LOGIN_CSRF_COOKIE, path=request.path)
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        s = self.session(request)
        form = await request.post()
        if s is None or not same_secret(str(form.get("csrf", "")), s.csrf):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        resp = web.HTTPSeeOther("/customer/login" if s.kind == "customer" else "/login")
        resp.del_cookie(SESSION_COOKIE)
        raise resp

    # -- what the pages read -------------------------------------------------------------------

    def tz(self, server: ServerConfig | None = None) -> str:
        return self.config.templates[server.template].timezone if server is not None else self.config.agent.timezone

    def points(self, sid: str, start: datetime, end: datetime) -> list[RatePoint]:
        if self.p.usage is None:
            return []
        buckets = self.p.usage.buckets(sid, start, end)
        return [RatePoint(b, o * 8000 / c, i * 8000 / c) for b, c, o, i in buckets if c > 0]

    def rate_now(self, sid: str) -> RatePoint | None:
        """The latest 5-minute bucket of the last quarter hour: what the port carries now."""
        pts = self.points(sid, self.now() - timedelta(minutes=15), self.now() + timedelta(minutes=5))
        return pts[-1] if pts else None

    def cap_at(self, server: ServerConfig) -> Callable[[datetime], int]:
        schedule = self.config.cap_schedule(server)

        def cap(at: datetime) -> int:
            return int(schedule.cap_at(at))
        return cap

    def chart(self, server: ServerConfig, span: timedelta, small: bool = False) -> str:
        end = self.now()
        start = end - span
        tz = self.tz(server)
        if small:
            return rate_chart(self.points(server.id, start, end), self.cap_at(server), start, end, width=120,
                              height=24, title=f"{server.id}")
        return rate_chart(self.points(server.id, start, end), self.cap_at(server), start, end,
                          labels=lambda at: local_time(at, tz), title=f"{server.id} rate")

    def state_of(self, status: dict[str, Any]) -> str:
        hold = status.get("hold_until")
        phases = {v["phase"] for v in status["ladder"].values()}
        if "shut" in phases:
            return "shut"
        if "noticed" in phases:
            return "noticed"
        if hold and datetime.fromisoformat(hold) > self.now():
            return "held"
        return "ok"

    def ladder_text(self, lang: str, status: dict[str, Any], tz: str) -> str:
        parts = [f"{_h(r)}: {_h(v['phase'])}" + (f" ({_h(t(lang, 'until'))} {_h(local_time(v['until'], tz))})"
                                                if v["until"] else "")
                 for r, v in sorted(status["ladder"].items()) if v["phase"] != "idle"]
        return "<br>".join(parts) or "-"

    def period(self, server: ServerConfig) -> str:
        return self.now().astimezone(contract_timezone(self.tz(server))).strftime("%Y-%m")

    def sla(self, server: ServerConfig) -> ServerSla:
        now = self.now()
        windows = [w.window for w in self.p.ledger.maintenance_windows()]
        return server_sla(self.config, server, self.p.ledger.outages(server=server.id, now=now), windows,
                          self.period(server), now)

    def p95(self, server: ServerConfig) -> tuple[float | None, int]:
        if self.p.usage is None:
            return None, 0
        start, end = month_bounds(self.period(server), contract_timezone(self.tz(server)))
        rule = self.config.templates[server.template].billing_direction
        if rule not in BILLING_DIRECTIONS:  # the config's schema allows only these
            raise ValueError(f"templates.{server.template}.billing_direction: {rule!r}")
        return self.p.usage.p95_bps(server.id, start, min(end, self.now() + timedelta(seconds=1)),
                                    rule, self.throttles(server))

    def throttles(self, server: ServerConfig) -> list[tuple[datetime, datetime | None, int]]:
        """The server's throttled periods: there the 95th counts what was carried, not the demand."""
        return throttled_periods(self.p.ledger.restrictions(server.id))

    def projection(self, server: ServerConfig) -> P95Projection | None:
        if self.p.usage is None:
            return None
        start, end = month_bounds(self.period(server), contract_timezone(self.tz(server)))
        rule = self.config.templates[server.template].billing_direction
        if rule not in BILLING_DIRECTIONS:  # the config's schema allows only these
            raise ValueError(f"templates.{server.template}.billing_direction: {rule!r}")
        rates = self.p.usage.billed_rates(server.id, start, min(end, self.now() + timedelta(seconds=1)), rule,
                                          self.throttles(server))
        return project_p95(rates, math.ceil((end - start).total_seconds() / BUCKET_S))

    def notice_rows(self, sid: str) -> list[Any]:
        q = select(notices_table).where(notices_table.c.server == sid).order_by(notices_table.c.at)
        with self.p.enforcer.store.engine.connect() as c:
            return list(c.execute(q))

    def ladder_snapshot(self) -> Rungs:
        """The ladder as it stands, copied on the loop (the only thread that changes it), for a
        page built off the loop."""
        return dict(self.p.enforcer.rungs)

    def statuses(self, rungs: Rungs, servers: Sequence[ServerConfig]) -> dict[str, dict[str, Any]]:
        """Enforcer.server_status's ladder, hold and last action for many servers, from a ladder
        snapshot and the action store read here (off the loop): one read of the holds for all."""
        store = self.p.enforcer.store
        holds = store.holds()
        ladders: dict[str, dict[str, dict[str, Any]]] = {}
        for (sid, reason), r in rungs.items():
            ladders.setdefault(sid, {})[reason] = {"phase": r.phase,
                                                   "until": r.until.isoformat() if r.until else None}
        out = {}
        for server in servers:
            last = store.last_action(server.id)
            out[server.id] = {
                "server": server.id, "ladder": ladders.get(server.id, {}),
                "hold_until": holds[server.id][0].isoformat() if server.id in holds else None,
                "last_action": None if last is None else {"action": last.action, "reason": last.reason,
                                                          "state": last.state, "mode": last.mode,
                                                          "at": last.updated_at},
            }
        return out

    # -- shared sections -----------------------------------------------------------------------

    def outages_section(self, lang: str, server: ServerConfig) -> str:
        tz = self.tz(server)
        now = self.now()
        rows = [[_h(v.seq), _h(local_time(v.start, tz)), _h(local_time(v.end, tz) if v.end else t(lang, "open")),
                 _h(duration_text(v.seconds(now))), f'<span class="class">{_h(v.outage_class)}</span>',
                 _h(v.cause or "-")]
                for v in reversed(self.p.ledger.outages(server=server.id, now=now))]
        return (f'<h2>{_h(t(lang, "outages"))}</h2>' +
                _table(["#", t(lang, "start"), t(lang, "end"), t(lang, "duration"), t(lang, "class"),
                        t(lang, "cause")], rows))

    def credit_section(self, lang: str, server: ServerConfig) -> str:
        s = self.sla(server)
        if s.credit_fen is not None:
            amount = f'{_h(t(lang, "credit_due"))}: <strong id="credit">{_h(yuan(s.credit_fen))}</strong>'
        elif s.extension_s is not None:
            hours = fraction_text(s.month.extension_hours)
            amount = f'{_h(t(lang, "extension"))}: <strong id="credit">{_h(hours)} h</strong>'
        else:
            amount = _h(t(lang, "no_credit_rule"))
        # The engine's own reasons: the text `rackwarden sla explain` prints for the same month.
        lines = [s.month.reason] + [f"  {p.reason}" for p in s.month.parts]
        return (f'<h2>{_h(t(lang, "credit"))} {_h(s.period)}</h2><p>{amount} '
                f'({_h(t(lang, "times_in", tz=s.timezone))})</p>'
                f'<details open><summary>{_h(t(lang, "arithmetic"))}</summary><pre id="arithmetic">'
                f'{_h(chr(10).join(lines))}</pre></details>')

    def notices_section(self, lang: str, server: ServerConfig) -> str:
        tz = self.tz(server)
        rows = [[_h(local_time(r.at, tz)), _h(r.key.split(":", 2)[1] if r.key.count(":") >= 2 else "-"),
                 "✓" if r.delivered else "✗", _h(r.detail)] for r in self.notice_rows(server.id)]
        return (f'<h2>{_h(t(lang, "notices"))}</h2>' +
                _table([t(lang, "at"), t(lang, "reason"), t(lang, "delivered"), t(lang, "detail")], rows))

    def usage_section(self, lang: str, server: ServerConfig) -> str:
        p95, n = self.p95(server)
        now_pt = self.rate_now(server.id)
        cap = self.cap_at(server)(self.now())
        rate = f"{mbps(now_pt.out_bps)} / {mbps(now_pt.in_bps)}" if now_pt else t(lang, "no_data")
        return (f'<p>{_h(t(lang, "rate_now"))}: <span class="rate">{_h(rate)}</span> · {_h(t(lang, "cap"))}: '
                f'{_h(mbps(cap))} · {_h(t(lang, "p95_month"))}: <span id="p95">{_h(mbps(p95))}</span> '
                f'({n} {_h(t(lang, "buckets"))})</p>')

    def projection_section(self, lang: str, server: ServerConfig) -> str:
        pr = self.projection(server)
        if pr is None:
            return ""
        projected = (mbps(pr.projected) if pr.projected is not None
                     else t(lang, "too_early", n=pr.buckets, min=pr.min_buckets))
        method = t(lang, "p95_method", total=pr.month_buckets, discard=pr.discard, rank=pr.discard + 1,
                   min=pr.min_buckets)
        return (f'<h2>{_h(t(lang, "p95_projection"))}</h2>'
                f'<p>{_h(t(lang, "p95_month"))}: <span id="p95-so-far">{_h(mbps(pr.so_far))}</span> '
                f'({pr.buckets}/{pr.month_buckets} {_h(t(lang, "buckets"))}) · '
                f'{_h(t(lang, "p95_projected"))}: <strong id="p95-projected">{_h(projected)}</strong> · '
                f'{_h(t(lang, "p95_floor"))}: <span id="p95-floor">{_h(mbps(pr.floor))}</span></p>'
                f'<p class="method" id="p95-method">{_h(method)}</p>')

    def detections_section(self, lang: str, server: ServerConfig) -> str:
        """Detections with their evidence pcaps (operators only: a pcap holds third parties' packets)."""
        tz = self.tz(server)
        files = evidence_files(self.config.agent.state_dir, server.id)
        cited: dict[str, list[str]] = {f.name: [] for f in files}
        orphans = []
        for a in self.p.enforcer.store.audit_rows(server.id):
            ev = a["inputs"].get("evidence") if isinstance(a["inputs"], dict) else None
            if not isinstance(ev, dict) or a["reason"] != "abuse":
                continue
            line = f"{local_time(a['at'], tz)} {a['decision']}: {a['rule']} — {ev.get('summary', '')}"
            names = [Path(str(r)).name for r in ev.get("refs", []) if str(r).endswith(".pcap")]
            hit = [n for n in names if n in cited]
            for n in hit:
                cited[n].append(line)
            if not hit:
                orphans.append(line)
        rows = []
        for f in files:
            link = (f'<a class="evidence" download href="/server/{_h(server.id)}/evidence/{_h(f.name)}">'
                    f'{_h(f.name)}</a>')
            rows.append([_h(local_time(f.detected_at, tz)), _h(f"{f.detector}/{f.kind}"),
                         "<br>".join(_h(x) for x in cited[f.name]) or "-", _h(f"{f.size:,} B"), link])
        rows += [["-", "-", _h(x), "-", _h(t(lang, "no_file"))] for x in orphans]
        body = (_table([t(lang, "at"), t(lang, "detector"), t(lang, "decision"), t(lang, "size"),
                        t(lang, "pcap")], rows) if rows else f'<p id="no-detections">{_h(t(lang, "none"))}</p>')
        return f'<h2>{_h(t(lang, "detections"))}</h2>{body}'

    async def evidence_download(self, request: web.Request, s: Session) -> web.StreamResponse:
        server = self._operator_server(request)
        path = safe_evidence_file(self.config.agent.state_dir, server.id, request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="not found")
        resp = web.FileResponse(path, headers={
            "Content-Type": "application/vnd.tcpdump.pcap",
            "Content-Disposition": f'attachment; filename="{path.name}"'})
        self._headers(resp)
        return resp

    # -- operator pages ------------------------------------------------------------------------

    async def fleet(self, request: web.Request, s: Session) -> web.Response:
        lang = self.lang(request)
        want = {k: request.query.get(k, "") for k in ("switch", "customer", "state")}
        body = await off_loop(self._fleet_body, lang, want, self.ladder_snapshot())
        return self.page(request, t(lang, "fleet"), body, s)

    def _fleet_body(self, lang: str, want: dict[str, str], rungs: Rungs) -> str:
        status = self.statuses(rungs, self.config.servers)
        rows, classes = [], []
        tz = self.tz()
        for server in self.config.servers:
            st = status.get(server.id)
            if st is None:
                continue
            state = self.state_of(st)
            if ((want["switch"] and server.switch != want["switch"]) or
                    (want["customer"] and server.customer != want["customer"]) or
                    (want["state"] and state != want["state"])):
                continue
            pt = self.rate_now(server.id)
            cap = self.cap_at(server)(self.now())
            last = st["last_action"]
            hold = st["hold_until"]
            rows.append([
                f'<a href="/server/{_h(server.id)}">{_h(server.id)}</a>', _h(server.customer),
                f"{_h(server.switch)} {_h(server.port)}",
                _h(f"{mbps(pt.out_bps)} / {mbps(pt.in_bps)}" if pt else t(lang, "no_data")), _h(mbps(cap)),
                self.chart(server, timedelta(hours=1), small=True), f'<span class="state">{_h(state)}</span>',
                self.ladder_text(lang, st, tz),
                _h(local_time(hold, tz)) if hold and datetime.fromisoformat(hold) > self.now() else "-",
                _h(f"{last['action']} {last['reason']} {last['state']} {local_time(last['at'], tz)}") if last else "-",
            ])
            classes.append(state)

        def select_of(name: str, options: list[str]) -> str:
            opts = "".join(f'<option value="{_h(o)}"{" selected" if o == want[name] else ""}>{_h(o or t(lang, "all"))}'
                           "</option>" for o in ["", *options])
            return f'<label>{_h(t(lang, name))} <select name="{name}">{opts}</select></label> '

        filters = ('<form method="get" action="/fleet">' + select_of("switch", sorted(self.config.switches)) +
                   select_of("customer", sorted({x.customer for x in self.config.servers})) +
                   select_of("state", ["ok", "noticed", "shut", "held"]) +
                   f'<button type="submit">{_h(t(lang, "filter"))}</button></form>')
        table = _table([t(lang, "server"), t(lang, "customer"), f'{t(lang, "switch")} {t(lang, "port")}',
                        t(lang, "rate_now"), t(lang, "cap"), t(lang, "last_hour"), t(lang, "state"),
                        t(lang, "ladder"), t(lang, "hold"), t(lang, "last_action")], rows, classes)
        return f'<p>{_h(t(lang, "times_in", tz=tz))}</p>{filters}{table}'

    def _operator_server(self, request: web.Request) -> ServerConfig:
        server = self.config.server(request.match_info["sid"])
        if server is None:
            raise web.HTTPNotFound(text="no such server")
        return server

    async def server_page(self, request: web.Request, s: Session) -> web.Response:
        lang = self.lang(request)
        server = self._operator_server(request)
        tz = self.tz(server)
        st = self.p.enforcer.server_status(server.id)
        rng = request.query.get("range", "24h")
        span = RANGES.get(rng, RANGES["24h"])
        ranges = " ".join(f'<a href="?range={k}">{k}</a>' for k in RANGES)
        head = (f'<p>{_h(t(lang, "customer"))}: {_h(server.customer)} · {_h(t(lang, "switch"))}: {_h(server.switch)} '
                f'{_h(server.port)} · {_h(server.template)} · {_h(t(lang, "times_in", tz=tz))}</p>'
                f'<p>{_h(t(lang, "state"))}: <span id="state">{_h(self.state_of(st))}</span> · '
                f'{_h(t(lang, "ladder"))}: {self.ladder_text(lang, st, tz)}</p>')
        refused = "".join(f"<li>{_h(r)}: {_h(w)}</li>" for r, w in st["refused"].items())
        if refused:
            head += f'<p>{_h(t(lang, "refused"))}</p><ul>{refused}</ul>'
        csrf = self.csrf_field(s)
        reasons = "".join(f'<option value="{r}">{r}</option>' for r in REQUEST_REASONS)
        forms = (f'<form class="inline" method="post" action="/server/{_h(server.id)}/suspend">{csrf}'
                 f'<select name="reason">{reasons}</select> <input name="note" placeholder="{_h(t(lang, "note"))}"> '
                 f'<button type="submit" id="suspend">{_h(t(lang, "suspend"))}</button></form> '
                 f'<form class="inline" method="post" action="/server/{_h(server.id)}/restore">{csrf}'
                 f'<button type="submit" id="restore">{_h(t(lang, "restore"))}</button></form> '
                 f'<form class="inline" method="post" action="/server/{_h(server.id)}/hold">{csrf}'
                 f'<input name="seconds" size="6" value="3600"> '
                 f'<input name="note" placeholder="{_h(t(lang, "note"))}"> '
                 f'<button type="submit" id="hold">{_h(t(lang, "hold_for"))}</button></form>')
        sections = await off_loop(self._server_sections, lang, server, span, rng, ranges)
        return self.page(request, f'{t(lang, "server")} {server.id}', head + forms + sections, s)

    def _server_sections(self, lang: str, server: ServerConfig, span: timedelta, rng: str, ranges: str) -> str:
        """Everything of the server page that the stores hold (usage, actions, audit, notices,
        ledger), read off the loop."""
        tz = self.tz(server)
        chart = f'<h2>{_h(t(lang, "rate_chart"))} ({_h(rng)})</h2><p>{ranges}</p>{self.chart(server, span)}'
        actions = [[_h(local_time(a.created_at, tz)), _h(a.action), _h(a.reason), _h(a.mode), _h(a.state),
                    _h(local_time(a.updated_at, tz))] for a in reversed(self.p.enforcer.store.actions(server.id))]
        audit = [[_h(local_time(a["at"], tz)), _h(a["decision"]), _h(a["reason"]), _h(a["actor"]),
                  _h(f"{a['before']} → {a['after']}"), _h(a["rule"]), _h(a["result"])]
                 for a in reversed(self.p.enforcer.store.audit_rows(server.id))]
        return (self.usage_section(lang, server) + self.projection_section(lang, server) + chart +
                self.detections_section(lang, server) +
                f'<h2>{_h(t(lang, "actions"))}</h2>' +
                _table([t(lang, "at"), t(lang, "action"), t(lang, "reason"), t(lang, "mode"), t(lang, "result"),
                        t(lang, "end")], actions) +
                f'<h2>{_h(t(lang, "audit"))}</h2>' +
                _table([t(lang, "at"), t(lang, "decision"), t(lang, "reason"), t(lang, "actor"), t(lang, "state"),
                        t(lang, "evidence"), t(lang, "result")], audit) +
                self.notices_section(lang, server) + self.outages_section(lang, server) +
                self.credit_section(lang, server))

    async def server_action(self, request: web.Request, s: Session) -> web.StreamResponse:
        server = self._operator_server(request)
        what = request.match_info["what"]
        form = await request.post()
        lang = self.lang(request)
        e = self.p.enforcer
        try:
            if what == "suspend":
                await e.suspend(server.id, str(form.get("reason", "")), str(form.get("note", "")), s.actor)
            elif what == "restore":
                await e.restore(server.id, s.actor)
            elif what == "hold":
                e.hold(server.id, float(str(form.get("seconds", ""))), str(form.get("note", "")), s.actor)
            else:
                raise web.HTTPNotFound(text="no such action")
            s.flash.append(("ok", f"{t(lang, what if what != 'hold' else 'hold')}: {t(lang, 'done')}"))
        except (EnforcementError, ValueError) as exc:
            s.flash.append(("error", f"{t(lang, 'error')}: {exc}"))
        raise self.back(f"/server/{server.id}")

    async def ledger_page(self, request: web.Request, s: Session) -> web.Response:
        lang = self.lang(request)
        # The whole chain is read and hashed, outages and windows listed: off the loop, which
        # polls and enforces meanwhile.
        body = await off_loop(self._ledger_body, lang, s)
        return self.page(request, t(lang, "ledger"), body, s)

    def _ledger_body(self, lang: str, s: Session) -> str:
        store = self.p.ledger
        now = self.now()
        tz = self.tz()
        verdict = store.verify()
        ok = t(lang, "verify_ok") if verdict.ok else t(lang, "verify_bad")
        head = store.head()
        top = (f'<p>{_h(t(lang, "verify"))}: <strong id="verify">{_h(ok)}</strong> · {_h(t(lang, "head"))}: '
               f'<code id="head">{head.seq}:{_h(head.hash)}</code></p><pre>{_h(verify_text(verdict))}</pre>')
        csrf = self.csrf_field(s)
        classes = "".join(f'<option value="{c}">{c}</option>' for c in RECLASS_TARGETS)
        causes = f'<option value="">{_h(t(lang, "default_cause"))}</option>' + "".join(
            f'<option value="{_h(c)}">{_h(c)}</option>' for c in sorted(CAUSES))
        unknown = []
        for v, secs in store.unresolved_unknown(now):
            form = (f'<form method="post" action="/ledger/reclassify" class="reclassify">{csrf}'
                    f'<input type="hidden" name="seq" value="{v.seq}">'
                    f'<select name="class">{classes}</select> <select name="cause">{causes}</select> '
                    f'<input name="reason" required placeholder="{_h(t(lang, "reason"))}"> '
                    f'<label><input type="checkbox" name="false_positive" value="1">'
                    f'{_h(t(lang, "false_positive"))}</label> '
                    f'<button type="submit" id="classify-{v.seq}">{_h(t(lang, "classify"))}</button></form>')
            unknown.append([_h(v.seq), f'<a href="/server/{_h(v.server)}">{_h(v.server)}</a>',
                            _h(local_time(v.start, tz)), _h(duration_text(secs)), _h(v.recorded_cause), form])
        unknown_html = (_table(["#", t(lang, "server"), t(lang, "start"), t(lang, "duration"), t(lang, "cause"),
                                t(lang, "classify")], unknown) if unknown
                        else f'<p id="no-unknown">{_h(t(lang, "none_unknown"))}</p>')
        rows = []
        for v in reversed(store.outages(now=now)[-200:]):
            by = "; ".join(f"{c.outage_class} ({c.by}: {c.reason})" for c in v.reclassifications)
            rows.append([_h(v.seq), _h(v.server), _h(local_time(v.start, tz)),
                         _h(local_time(v.end, tz) if v.end else t(lang, "open")), _h(v.outage_class),
                         _h(v.cause or "-"), _h(by or "-")])
        return (top + f'<h2>{_h(t(lang, "unknown_first"))}</h2>{unknown_html}' +
                self.windows_section(lang, s) +
                f'<h2>{_h(t(lang, "all_outages"))}</h2>' +
                _table(["#", t(lang, "server"), t(lang, "start"), t(lang, "end"), t(lang, "class"), t(lang, "cause"),
                        t(lang, "actor")], rows))

    def windows_section(self, lang: str, s: Session) -> str:
        tz = self.tz()
        rows = []
        for v in reversed(self.p.ledger.maintenance_windows()):
            w = v.window
            servers = "all" if w.servers == "all" else ", ".join(w.servers)
            rows.append([_h(v.seq), _h(w.kind), _h(local_time(w.start, tz)), _h(local_time(w.end, tz)),
                         _h(servers), _h(local_time(w.notified_at, tz)), _h(local_time(v.declared_at, tz)),
                         _h(v.by), _h(v.reason)])
        kinds = "".join(f'<option value="{k}">{k}</option>' for k in WINDOW_KINDS)
        form = (f'<form method="post" action="/ledger/maintenance" id="declare-window">{self.csrf_field(s)}'
                f'<select name="kind">{kinds}</select> '
                f'<label>{_h(t(lang, "start"))} <input type="datetime-local" name="start" required></label> '
                f'<label>{_h(t(lang, "end"))} <input type="datetime-local" name="end" required></label> '
                f'<label>{_h(t(lang, "notified_at"))} <input type="datetime-local" name="notified_at" required>'
                f'</label> <label>{_h(t(lang, "servers"))} <input name="servers" value="all" size="16"></label> '
                f'<input name="reason" placeholder="{_h(t(lang, "reason"))}"> '
                f'<button type="submit">{_h(t(lang, "declare"))}</button></form>'
                f'<p>{_h(t(lang, "times_in", tz=tz))}</p>')
        return (f'<h2>{_h(t(lang, "windows"))}</h2>' + form +
                _table(["#", t(lang, "kind"), t(lang, "start"), t(lang, "end"), t(lang, "servers"),
                        t(lang, "notified_at"), t(lang, "declared_at"), t(lang, "actor"), t(lang, "reason")], rows))

    def _local_input(self, value: object, name: str) -> datetime:
        """A datetime-local field, read in the agent's contract timezone (the one the form shows)."""
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"{name}: not a date and time: {value!r}") from None
        return at if at.tzinfo is not None else at.replace(tzinfo=contract_timezone(self.tz()))

    async def declare_window(self, request: web.Request, s: Session) -> web.StreamResponse:
        form = await request.post()
        lang = self.lang(request)
        try:
            raw = str(form.get("servers", "")).strip()
            servers = [x.strip() for x in raw.split(",") if x.strip()]
            if raw != "all":
                unknown = [x for x in servers if self.config.server(x) is None]
                if not servers or unknown:
                    raise ValueError(f"servers: no server {', '.join(unknown) or '(none given)'} in the inventory")
            # The CLI's path (`rackwarden maintenance add`): LedgerStore.add_maintenance, by the operator.
            e = self.p.ledger.add_maintenance(
                kind=str(form.get("kind", "")), start=self._local_input(form.get("start"), "start"),
                end=self._local_input(form.get("end"), "end"),
                notified_at=self._local_input(form.get("notified_at"), "notified_at"),
                servers="all" if raw == "all" else servers, at=self.now(), reason=str(form.get("reason", "")),
                by=s.login)
            s.flash.append(("ok", f"seq {e.seq}: M{e.seq}"))
        except (LedgerError, ValueError) as exc:
            s.flash.append(("error", f"{t(lang, 'error')}: {exc}"))
        raise self.back("/ledger")

    async def reclassify(self, request: web.Request, s: Session) -> web.StreamResponse:
        form = await request.post()
        lang = self.lang(request)
        try:
            seq = int(str(form.get("seq", "")))
            cause = str(form.get("cause", "")) or None
            # The CLI's path: LedgerStore.reclassify, one new entry, `by` the operator's login.
            e = self.p.ledger.reclassify(seq, str(form.get("class", "")), str(form.get("reason", "")), self.now(),
                                         by=s.login, false_positive=bool(form.get("false_positive")), cause=cause)
            s.flash.append(("ok", f"seq {e.seq}: #{e.ref_seq} ({e.server}) → {e.payload['class']}"))
        except (LedgerError, ValueError) as exc:
            s.flash.append(("error", f"{t(lang, 'error')}: {exc}"))
        raise self.back("/ledger")

    # -- the customer page ---------------------------------------------------------------------

    def _own_server(self, request: web.Request, s: Session) -> ServerConfig:
        server = self.config.server(request.match_info["sid"])
        if server is None or s.customer is None or server.customer != s.customer:
            # The same answer for another customer's server and for none at all.
            raise web.HTTPNotFound(text="not found")
        return server

    def restrictions(self, lang: str, server: ServerConfig) -> str:
        tz = self.tz(server)
        rows = []
        for (sid, reason), r in sorted(self.p.enforcer.rungs.items()):
            if sid != server.id or r.phase not in ("noticed", "restricted", "shut"):
                continue
            ev = f"{r.evidence.rule}: {r.evidence.summary}" if r.evidence is not None else "-"
            # A restriction says what it is: limited to N Mbit/s, or a service blocked.
            x = r.restriction
            state = r.phase if x is None or r.phase != "restricted" else (
                t(lang, "throttled_to", rate=f"{(x.rate_bps or 0) / 1e6:g}") if x.kind == "throttle"
                else t(lang, "blocked_service", service=x.service or ""))
            rows.append([_h(reason), _h(state), _h(local_time(r.until, tz) if r.until else "-"), _h(ev)])
        if not rows:
            return f'<p class="restrictions">{_h(t(lang, "restrictions"))}: {_h(t(lang, "none"))}</p>'
        return (f'<h3>{_h(t(lang, "restrictions"))}</h3>' +
                _table([t(lang, "reason"), t(lang, "state"), t(lang, "until"), t(lang, "evidence")], rows))

    def customer_servers(self, s: Session) -> list[ServerConfig]:
        return [x for x in self.config.servers if s.customer is not None and x.customer == s.customer]

    async def customer_home(self, request: web.Request, s: Session) -> web.Response:
        lang = self.lang(request)
        body = await off_loop(self._customer_home_body, lang, s, self.ladder_snapshot())
        return self.page(request, f'{t(lang, "my_servers")} ({s.customer})', body, s)

    def _customer_home_body(self, lang: str, s: Session, rungs: Rungs) -> str:
        rows = []
        servers = self.customer_servers(s)
        status = self.statuses(rungs, servers)
        for server in servers:
            pt = self.rate_now(server.id)
            p95, _ = self.p95(server)
            sla = self.sla(server)
            credit = yuan(sla.credit_fen) if sla.credit_fen is not None else "-"
            st = self.state_of(status[server.id])
            rows.append([f'<a href="/customer/server/{_h(server.id)}">{_h(server.id)}</a>',
                         _h(f"{mbps(pt.out_bps)} / {mbps(pt.in_bps)}" if pt else t(lang, "no_data")),
                         _h(mbps(self.cap_at(server)(self.now()))), _h(mbps(p95)), _h(st), _h(credit)])
        return _table([t(lang, "server"), t(lang, "rate_now"), t(lang, "cap"), t(lang, "p95_month"), t(lang, "state"),
                       t(lang, "credit_due")], rows)

    async def customer_server(self, request: web.Request, s: Session) -> web.Response:
        lang = self.lang(request)
        server = self._own_server(request, s)
        st = self.p.enforcer.server_status(server.id)
        recheck = ""
        if any(v["phase"] == "shut" for v in st["ladder"].values()):
            recheck = (f'<form method="post" action="/customer/server/{_h(server.id)}/recheck">'
                       f'{self.csrf_field(s)}<button type="submit" id="recheck">{_h(t(lang, "recheck"))}</button>'
                       '</form>')
        head = (f'<p>{_h(t(lang, "state"))}: <span id="state">{_h(self.state_of(st))}</span> · '
                f'{_h(t(lang, "times_in", tz=self.tz(server)))}</p>' + self.restrictions(lang, server) + recheck)
        sections = await off_loop(self._customer_sections, lang, server)
        return self.page(request, f'{t(lang, "server")} {server.id}', head + sections, s)

    def _customer_sections(self, lang: str, server: ServerConfig) -> str:
        return (self.usage_section(lang, server) + self.chart(server, RANGES["24h"]) +
                self.notices_section(lang, server) + self.outages_section(lang, server) +
                self.credit_section(lang, server))

    async def recheck(self, request: web.Request, s: Session) -> web.StreamResponse:
        lang = self.lang(request)
        server = self._own_server(request, s)
        e = self.p.enforcer
        # A suspension or a restriction (throttle, blocked service): both are re-checked.
        shut = sorted(reason for (sid, reason), r in e.rungs.items()
                      if sid == server.id and r.phase in ("shut", "restricted"))
        mine = [r for r in shut if r in CUSTOMER_FIXABLE]
        if shut and not mine:
            s.flash.append(("error", t(lang, "recheck_not_yours")))
        for reason in mine:
            a = await self._recheck_one(server, reason, s.actor)
            figures = t(lang, "recheck_figures", out=mbps(a.measured.out_bps), in_=mbps(a.measured.in_bps),
                        cap=mbps(a.measured.cap_bps))
            text = t(lang, "recheck_passed" if a.restored else "recheck_refused", r=reason, why=a.why)
            mailed = await self._recheck_mail(server, a)
            s.flash.append(("ok" if a.restored else "error", f"{text} {figures} {mailed(lang)}"))
        raise self.back(f"/customer/server/{server.id}")

    def measured(self, server: ServerConfig) -> Measured:
        """The last poll's verdict for the server, as metering published it."""
        def gauge(name: str, **labels: str) -> float | None:
            return self.p.enforcer.metrics.registry.get_sample_value(name, {"server": server.id, **labels})
        where = {"switch": server.switch, "port": server.port}
        return Measured.of(gauge("rackwarden_port_rate_bps", **where, direction="outbound"),
                           gauge("rackwarden_port_rate_bps", **where, direction="inbound"),
                           self.cap_at(server)(self.now()), gauge("rackwarden_server_cap_state"))

    async def _recheck_one(self, server: ServerConfig, reason: str, actor: str) -> RecheckAnswer:
        """One re-check: the traffic first, then a restore request through the ladder
        (Enforcer.restore -> the enforcement step with its rails), never a command from here."""
        e = self.p.enforcer
        m = self.measured(server)
        over = still_over(reason, m)
        error = None
        if over is None:
            try:
                await e.restore(server.id, actor, reason)
            except EnforcementError as exc:
                error = str(exc)
        rung = e.rungs.get((server.id, reason))
        st = e.server_status(server.id)
        others = tuple(sorted(r for r, v in st["ladder"].items() if r != reason and v["phase"] == "shut"))
        last = st["last_action"]
        restore_state = (last["state"] if last is not None and last["action"] in ("restore", "unthrottle", "unblock")
                         else None)
        return answer(reason, m, over=over, error=error, phase_after=rung.phase if rung else "idle",
                      refused=st["refused"].get(reason), others_shut=others, last_restore_state=restore_state)

    async def _recheck_mail(self, server: ServerConfig, a: RecheckAnswer) -> Callable[[str], str]:
        """E-mail the answer to the server's contacts through the notifier the ladder's notices
        use, recorded as they are (notice row, audit record, metric); the page says where it went."""
        e = self.p.enforcer
        at = self.now()
        rung = e.rungs.get((server.id, a.reason))
        episode = rung.episode if rung is not None else 0
        key = f"{server.id}:{a.reason}:{episode}:recheck:{at.strftime('%Y%m%dT%H%M%S.%fZ')}"
        rule = rung.evidence.rule if rung is not None and rung.evidence is not None else a.reason
        reason: Reason = "overage" if a.reason == "overage" else "abuse"
        notice = recheck_notice(self.config, server, key=key, reason=reason, restored=a.restored, rule=rule,
                                summary=a.why, figures=a.figures(), at=at)
        if e.notifier is None:
            delivered, detail = False, "no notifier configured"
        else:
            t0 = self.mono()
            delivered, detail = await e.notifier.send_notice(notice, at)
            e.store.record_notice(key, server.id, at, delivered, detail, self.mono() - t0)
        e.metrics.notices.labels(notice.stage, "delivered" if delivered else "unreachable").inc()
        phase = rung.phase if rung is not None else "idle"
        e.store.audit(at=at, server=server.id, reason=a.reason, decision=f"notify_{notice.stage}",
                      mode=e.config.enforcement.mode_for(a.reason, e.config.agent.mode), actor="rackwarden",
                      rule=rule, inputs={"key": key, "to": list(server.contacts), "answer": a.why},
                      before=phase, after=phase, result=f"{'delivered' if delivered else 'unreachable'}: {detail}")
        to = ", ".join(server.contacts)
        return lambda lang: (t(lang, "recheck_mailed", to=to) if delivered
                             else t(lang, "recheck_not_mailed", why=detail))
