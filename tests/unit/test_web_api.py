"""Issue 13: the local API on aiohttp keeps agent/api.py's routes, answers, bearer token and rules
(issue 11: beyond loopback only over TLS, the token compared in constant time and never logged,
the CLI pinned to the daemon's certificate)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent import cli
from rackwarden.agent.enforcer import EnforcementError
from rackwarden.agent.web import WebServer
from rackwarden.agent.web import api as webapi
from rackwarden.agent.webauth import BindPolicyError, load_web_config

from tests.unit.web_fixtures import TOKEN, thread_loop, tls_web_config


class FakeEnforcer:
    """What the API calls, recording who asked for what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def status(self) -> dict[str, Any]:
        return {"mode": "enforce", "servers": [], "breakers": [], "calls": [list(c) for c in self.calls]}

    async def suspend(self, server: str, reason: str, note: str, actor: str) -> dict[str, Any]:
        if server == "nobody":
            raise EnforcementError("no server 'nobody' in the inventory")
        self.calls.append(("suspend", server, reason, note, actor))
        return {"server": server, "last_action": {"action": "shut", "reason": reason, "state": "APPLIED"}}

    async def restore(self, server: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        self.calls.append(("restore", server, actor, str(reason)))
        return {"server": server}

    def hold(self, server: str, seconds: float, note: str, actor: str) -> dict[str, Any]:
        self.calls.append(("hold", server, str(seconds), note, actor))
        return {"server": server}

    def reset_breaker(self, switch: str, actor: str) -> None:
        self.calls.append(("breaker_reset", switch, actor))


@pytest.fixture
def tls_web(tmp_path: Path) -> Path:
    return tls_web_config(tmp_path)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    yield from thread_loop()


@pytest.fixture
def servers(loop: asyncio.AbstractEventLoop) -> Iterator[list[WebServer]]:
    started: list[WebServer] = []
    yield started
    for s in started:
        asyncio.run_coroutine_threadsafe(s.stop(), loop).result(timeout=10)


def _start(servers: list[WebServer], loop: asyncio.AbstractEventLoop, enforcer: FakeEnforcer,
           web: Path | None = None, listen: str = "127.0.0.1") -> WebServer:
    s = WebServer(enforcer, listen=listen, port=0, token=TOKEN, web_config=load_web_config(web) if web else None)
    servers.append(s)
    asyncio.run_coroutine_threadsafe(s.start(), loop).result(timeout=10)
    return s


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _call(port: int, method: str, path: str, body: bytes | None = None,
          token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    doc = json.loads(r.read())
    conn.close()
    return r.status, doc


# --- the routes and answers ----------------------------------------------------------------------

def test_the_routes_answer_as_before(servers: list[WebServer], loop: asyncio.AbstractEventLoop) -> None:
    enf = FakeEnforcer()
    port = _start(servers, loop, enf).port
    assert _call(port, "GET", "/v1/status", token=None) == (401, {"error": "missing or wrong bearer token"})
    assert _call(port, "POST", "/v1/suspend", b'{"server": "a", "reason": "operator"}', token="x")[0] == 401
    assert _call(port, "GET", "/v1/status")[1]["mode"] == "enforce"
    assert _call(port, "GET", "/v1/nothing") == (404, {"error": "no such endpoint /v1/nothing"})
    assert _call(port, "POST", "/v1/nothing", b"{}") == (404, {"error": "no such endpoint /v1/nothing"})
    status, doc = _call(port, "POST", "/v1/suspend", b"[1]")
    assert status == 400 and doc["error"].startswith("bad request body: ")
    assert _call(port, "POST", "/v1/suspend", b"{not json")[0] == 400
    assert _call(port, "POST", "/v1/suspend", b'{"server": "a"}') == (400, {"error": "'reason'"})
    assert _call(port, "POST", "/v1/suspend", b'{"server": "nobody", "reason": "operator"}') == (
        400, {"error": "no server 'nobody' in the inventory"})
    assert _call(port, "POST", "/v1/hold", b'{"server": "a", "seconds": "soon"}')[0] == 400
    assert enf.calls == []
    assert _call(port, "POST", "/v1/suspend", b'{"server": "a", "reason": "operator", "note": "n"}')[0] == 200
    assert _call(port, "POST", "/v1/restore", b'{"server": "a", "actor": "ops"}')[0] == 200
    assert _call(port, "POST", "/v1/hold", b'{"server": "a", "seconds": 60}')[0] == 200
    status, doc = _call(port, "POST", "/v1/breaker/reset", b'{"switch": "sw1"}')
    assert status == 200 and doc["mode"] == "enforce"  # the status, as before
    assert enf.calls == [("suspend", "a", "operator", "n", "api"), ("restore", "a", "ops", "None"),
                         ("hold", "a", "60.0", "", "api"), ("breaker_reset", "sw1", "api")]


# --- beyond loopback only over TLS ------------------------------------------------------------------

def test_the_server_refuses_to_bind_beyond_loopback_without_tls(loop: asyncio.AbstractEventLoop) -> None:
    s = WebServer(FakeEnforcer(), listen="0.0.0.0", port=0, token=TOKEN)
    with pytest.raises(BindPolicyError):
        asyncio.run_coroutine_threadsafe(s.start(), loop).result(timeout=10)
    with pytest.raises(AssertionError):
        _ = s.port  # nothing was bound


def test_over_tls_plain_http_gets_nothing(servers: list[WebServer], loop: asyncio.AbstractEventLoop,
                                          tls_web: Path) -> None:
    enf = FakeEnforcer()
    s = _start(servers, loop, enf, tls_web)
    assert s.scheme == "https"
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/suspend", body=b'{"server": "a", "reason": "operator"}',
                     headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse()
    conn.close()
    assert enf.calls == []


CONFIG = """version: 1
agent:
  state_dir: {state}
  api_port: {port}
  api_web_config: {web}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: "c"}}
    ports: ["Gi0/[1-2]"]
servers:
  - {{id: a, customer: c1, switch: sw1, port: Gi0/1, ips: [192.0.2.1], template: rental, monthly_fee_fen: 1}}
"""


def test_the_cli_speaks_tls_to_the_daemons_own_certificate(
    tmp_path: Path, servers: list[WebServer], loop: asyncio.AbstractEventLoop, tls_web: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enf = FakeEnforcer()
    s = _start(servers, loop, enf, tls_web)
    state = tmp_path / "state"
    state.mkdir()
    (state / "api.token").write_text(TOKEN + "\n")
    cfg = tmp_path / "rackwarden.yaml"
    cfg.write_text(CONFIG.format(state=state, port=s.port, web=tls_web))
    assert cli.main(["status", "--json", "-c", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "enforce"
    assert cli.main(["suspend", "a", "--reason", "operator", "--json", "-c", str(cfg)]) == 0
    assert enf.calls[0][:3] == ("suspend", "a", "operator")


# --- the token ----------------------------------------------------------------------------------------

def test_the_token_is_never_logged(servers: list[WebServer], loop: asyncio.AbstractEventLoop,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = _start(servers, loop, FakeEnforcer())
    good = f"Bearer {TOKEN}"
    answers = [
        _raw(s.port, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        _raw(s.port, f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN[:-1]}x\r\n"
                     "Connection: close\r\n\r\n".encode()),
        _raw(s.port, f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\n"
                     "Connection: close\r\n\r\n".encode()),
        # A client that puts the token where it does not belong: in the URL, in a broken request line.
        _raw(s.port, f"GET /v1/status?token={TOKEN} HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\n"
                     "Connection: close\r\n\r\n".encode()),
        _raw(s.port, f"GET /v1/status HTTP/1.1 {TOKEN}\r\n\r\n".encode()),
        _raw(s.port, f"{TOKEN} /v1/status HTTP/1.1\r\n\r\n".encode()),
    ]
    # (aiohttp answers an HTTP/1.1 request without Host with 400, as RFC 9112 3.2 asks: every one here has it.)
    assert [a.split(b" ", 2)[1] for a in answers] == [b"401", b"401", b"200", b"404", b"400", b"400"]
    logged = [r.getMessage() for r in caplog.records if r.name == "rackwarden.api"]
    assert len(logged) >= 4  # every request that got through was logged ...
    assert all(TOKEN not in m for m in logged)  # ... and none with the token
    assert TOKEN not in caplog.text


def test_the_token_is_compared_in_constant_time(servers: list[WebServer], loop: asyncio.AbstractEventLoop,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = webapi.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webapi.hmac, "compare_digest", spy)
    s = _start(servers, loop, FakeEnforcer())
    for token in ("wrong", TOKEN):
        _raw(s.port, f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
             .encode())
    assert seen == [(b"Bearer wrong", f"Bearer {TOKEN}".encode()), ((f"Bearer {TOKEN}".encode(),) * 2)]


# --- agent/api.py's interface, on a real enforcer ---------------------------------------------------------

def test_the_api_server_interface_drives_a_real_enforcer(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """agent/api.py's ApiServer calls (start(loop), port, stop()) over the new layer, with
    tests/unit/test_enforcer.py's Rig: a real Enforcer and action store over a fake switch."""
    from rackwarden.agent.web.compat import ApiServer

    from tests.unit.test_enforcer import Rig

    rig = Rig(tmp_path)
    api = ApiServer(rig.enf, listen="127.0.0.1", port=0, token=TOKEN)
    api.start(loop)
    try:
        body = b'{"server": "s1", "reason": "operator", "actor": "billing"}'
        assert _call(api.port, "POST", "/v1/suspend", body, token="wrong")[0] == 401
        assert rig.sw.calls == []
        status, doc = _call(api.port, "POST", "/v1/suspend", body)
        assert status == 200 and doc["last_action"]["state"] == "APPLIED"
        assert rig.sw.admin["Gi0/1"] == "down"
        assert any(a["decision"] == "shut" and a["actor"] == "billing" for a in rig.store.audit_rows("s1"))
        status, doc = _call(api.port, "POST", "/v1/suspend", b'{"server": "nobody", "reason": "operator"}')
        assert status == 400 and "nobody" in doc["error"]
        status, doc = _call(api.port, "POST", "/v1/restore", b'{"server": "s1"}')
        assert status == 200 and rig.sw.admin["Gi0/1"] == "up"
    finally:
        api.stop()
