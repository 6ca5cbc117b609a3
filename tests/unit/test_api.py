"""Issue 11, secure by default: the local API (suspend, restore, hold) beyond loopback only over
TLS, its bearer token compared in constant time and never logged, and the CLI that talks to it
trusting only the daemon's own certificate."""

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
from rackwarden.agent import api as apimod
from rackwarden.agent import cli
from rackwarden.agent import config as configmod
from rackwarden.agent.api import ApiServer, ApiTokenError, ensure_token
from rackwarden.agent.web import api as webapi
from rackwarden.agent.webauth import BindPolicyError, load_web_config

from tests.unit.web_fixtures import TOKEN, pem_pair, thread_loop, tls_web_config

HASH = "$2b$04$" + "a" * 53  # a bcrypt hash's form; never checked here


class FakeEnforcer:
    """What the API calls, recording who asked."""

    def __init__(self) -> None:
        self.suspended: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"mode": "enforce", "servers": [], "breakers": [], "suspended": list(self.suspended)}

    async def suspend(self, server: str, reason: str, note: str, actor: str) -> dict[str, Any]:
        self.suspended.append(server)
        return {"server": server, "last_action": {"action": "shut", "reason": reason, "state": "APPLIED"}}


@pytest.fixture
def tls_web(tmp_path: Path) -> Path:
    return tls_web_config(tmp_path)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    yield from thread_loop()


@pytest.fixture
def servers() -> Iterator[list[ApiServer]]:
    started: list[ApiServer] = []
    yield started
    for s in started:
        s.stop()


def _start(servers: list[ApiServer], loop: asyncio.AbstractEventLoop, enforcer: FakeEnforcer,
           web: Path | None = None, listen: str = "127.0.0.1") -> ApiServer:
    s = ApiServer(enforcer, listen=listen, port=0, token=TOKEN,  # type: ignore[arg-type]
                  web_config=load_web_config(web) if web else None)
    s.start(loop)
    servers.append(s)
    return s


CONFIG = """version: 1
agent:
  state_dir: {state}
{agent}templates:
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


def _config(tmp_path: Path, agent: str) -> str:
    return CONFIG.format(state=tmp_path / "state", agent=agent)


# --- the config: beyond loopback without TLS is an error ---------------------------------------

@pytest.mark.parametrize("listen", ["0.0.0.0", "'::'", "192.0.2.10", "noc-a.example"])
def test_config_refuses_the_api_beyond_loopback_without_tls(tmp_path: Path, listen: str) -> None:
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(_config(tmp_path, f"  api_listen: {listen}\n"), "inv.yaml")
    [issue] = e.value.issues
    assert issue.startswith("inv.yaml:4 agent.api_listen: ")
    assert "bearer token would cross the network in clear text" in issue and "api_web_config" in issue


def test_config_accepts_the_api_beyond_loopback_over_tls(tmp_path: Path, tls_web: Path) -> None:
    cfg = configmod.loads(_config(tmp_path, f"  api_listen: 0.0.0.0\n  api_web_config: {tls_web}\n"), "inv.yaml")
    assert cfg.agent.api_web_config == tls_web
    # Loopback needs nothing, as before.
    assert configmod.loads(_config(tmp_path, ""), "inv.yaml").agent.api_web_config is None


def test_config_refuses_an_api_web_config_without_tls_or_with_basic_auth(tmp_path: Path, tls_web: Path) -> None:
    no_tls = tmp_path / "no-tls.yml"
    no_tls.write_text("{}\n")
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(_config(tmp_path, f"  api_listen: 0.0.0.0\n  api_web_config: {no_tls}\n"), "inv.yaml")
    assert e.value.issues[0].startswith("inv.yaml:5 agent.api_web_config: ")
    with_users = tmp_path / "users.yml"
    with_users.write_text(tls_web.read_text() + f"basic_auth_users: {{billing: '{HASH}'}}\n")
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(_config(tmp_path, f"  api_web_config: {with_users}\n"), "inv.yaml")
    assert "basic_auth_users: not used by the local API" in e.value.issues[0]


def test_config_checks_the_api_tls_files(tmp_path: Path) -> None:
    crt, _ = pem_pair(tmp_path, "one")
    _, other_key = pem_pair(tmp_path, "two")
    web = tmp_path / "mismatch.yml"
    web.write_text(f"tls_server_config: {{cert_file: {crt}, key_file: {other_key}}}\n")
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(_config(tmp_path, f"  api_listen: 0.0.0.0\n  api_web_config: {web}\n"), "inv.yaml")
    assert "cannot load" in e.value.issues[0]


# --- the server ----------------------------------------------------------------------------------

def test_the_server_refuses_to_bind_beyond_loopback_without_tls(
    servers: list[ApiServer], loop: asyncio.AbstractEventLoop
) -> None:
    # The policy is checked in start() too, so a caller that skipped the config's check cannot
    # open the port.
    s = ApiServer(FakeEnforcer(), listen="0.0.0.0", port=0, token=TOKEN)  # type: ignore[arg-type]
    with pytest.raises(BindPolicyError):
        s.start(loop)
    servers.append(s)
    with pytest.raises(AssertionError):
        _ = s.port  # nothing was bound


def test_over_tls_plain_http_gets_nothing(servers: list[ApiServer], loop: asyncio.AbstractEventLoop,
                                          tls_web: Path) -> None:
    enf = FakeEnforcer()
    s = _start(servers, loop, enf, tls_web)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/suspend", body=b'{"server": "a", "reason": "operator"}',
                     headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse()
    conn.close()
    assert enf.suspended == []


def _cli_config(tmp_path: Path, port: int, web: Path | None) -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "api.token").write_text(TOKEN + "\n")
    agent = f"  api_port: {port}\n" + (f"  api_web_config: {web}\n" if web else "")
    path = tmp_path / "rackwarden.yaml"
    path.write_text(_config(tmp_path, agent))
    return path


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_cli_speaks_tls_to_the_daemons_own_certificate(
    tmp_path: Path, servers: list[ApiServer], loop: asyncio.AbstractEventLoop, tls_web: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enf = FakeEnforcer()
    s = _start(servers, loop, enf, tls_web)
    assert s.scheme == "https"
    cfg = _cli_config(tmp_path, s.port, tls_web)
    rc, out, err = _cli(["status", "--json", "-c", str(cfg)], capsys)
    assert rc == 0, err
    assert json.loads(out)["mode"] == "enforce"
    rc, out, err = _cli(["suspend", "a", "--reason", "operator", "--json", "-c", str(cfg)], capsys)
    assert rc == 0, err
    assert enf.suspended == ["a"]


def test_the_cli_refuses_another_certificate_before_sending_the_token(
    tmp_path: Path, servers: list[ApiServer], loop: asyncio.AbstractEventLoop, tls_web: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    # Something else answers on the daemon's address with a certificate of its own.
    impostor_dir = tmp_path / "impostor"
    impostor_dir.mkdir()
    crt, key = pem_pair(impostor_dir, "impostor")
    impostor_web = impostor_dir / "web.yml"
    impostor_web.write_text(f"tls_server_config: {{cert_file: {crt}, key_file: {key}}}\n")
    enf = FakeEnforcer()
    caplog.set_level(logging.DEBUG, logger="rackwarden")
    s = _start(servers, loop, enf, impostor_web)
    cfg = _cli_config(tmp_path, s.port, tls_web)
    rc, out, err = _cli(["suspend", "a", "--reason", "operator", "-c", str(cfg)], capsys)
    assert rc == 2 and out == ""
    assert "not the one in agent.api_web_config's cert_file" in err and "the token was not sent" in err
    assert enf.suspended == []
    assert not [r for r in caplog.records if r.name == "rackwarden.api" and "/v1/" in r.getMessage()]


# --- the token ----------------------------------------------------------------------------------

def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_token_is_never_logged(servers: list[ApiServer], loop: asyncio.AbstractEventLoop,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    enf = FakeEnforcer()
    s = _start(servers, loop, enf)
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
    ]
    assert [a.split(b" ", 2)[1] for a in answers[:4]] == [b"401", b"401", b"200", b"404"]
    assert answers[4].split(b" ", 2)[1] == b"400"  # (its body may quote the client its own line)
    logged = [r.getMessage() for r in caplog.records if r.name == "rackwarden.api"]
    assert len(logged) >= len(answers)  # every request was logged ...
    assert all(TOKEN not in m for m in logged)  # ... and none with the token
    assert TOKEN not in caplog.text


def test_the_token_is_compared_in_constant_time(servers: list[ApiServer], loop: asyncio.AbstractEventLoop,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = webapi.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webapi.hmac, "compare_digest", spy)
    s = _start(servers, loop, FakeEnforcer())
    for token in ("wrong", TOKEN):
        _raw(s.port, f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
    assert seen == [(b"Bearer wrong", f"Bearer {TOKEN}".encode()), ((f"Bearer {TOKEN}".encode(),) * 2)]


@pytest.mark.parametrize("content, line", [
    (b"\x89PNG\r\n\x1a\n\x00\xff", 1), (b"abc\n\xc3\x28\n", 2), (b"abcdefghijklmnopq\x00", 1),
    (b"", 1), (b"short\n", 1), (b"two words and more\n", 1),
])
def test_a_token_file_that_holds_no_token_stops_the_start(tmp_path: Path, content: bytes, line: int) -> None:
    (tmp_path / "api.token").write_bytes(content)
    with pytest.raises(ApiTokenError) as e:
        ensure_token(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'api.token'}:{line}: ")
    assert (tmp_path / "api.token").read_bytes() == content  # left for a person to look at


def test_a_new_token_is_made_once(tmp_path: Path) -> None:
    token = ensure_token(tmp_path / "state")
    assert apimod.TOKEN_FORM.fullmatch(token) and ensure_token(tmp_path / "state") == token
    assert (tmp_path / "state" / "api.token").stat().st_mode & 0o777 == 0o600

