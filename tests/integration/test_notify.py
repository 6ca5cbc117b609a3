"""Notices reach a real SMTP server; alerts reach a real Alertmanager and, through it, a webhook."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.parser
import email.policy
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rackwarden.drivers.notify import (
    AlertmanagerClient,
    Notice,
    OnCall,
    SmtpNotifier,
    WebhookNotifier,
    message_id_for,
)

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
SENDER = "RackWarden 运维中心 <noc@idc.example>"
AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # 20:00 in Asia/Shanghai
SMTP_PASSWORD = "relay-pa55-4b7d"
TOKEN = "hook-token-77e1"


class Secret:
    """Stands in for agent.config.Secret."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<test>)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notice(**changes: Any) -> Notice:
    base = Notice(
        key="overage:srv-1:3:suspension",
        server="srv-1",
        customer="厦门某某科技有限公司",
        to=("ops@customer.example",),
        reason="overage",
        stage="suspension",
        rule="R1/R2 — 服务器租用协议 annex 1 §3, §2.1.1: cap 10 Mbit/s",
        summary="5-minute average above the cap for 15 minutes",
        figures=(("5-min average rate", 23.4, "Mbit/s"), ("cap", 10, "Mbit/s")),
        at=AT,
        until=AT + timedelta(hours=1),
        timezone="Asia/Shanghai",
        evidence_refs=("/var/lib/rackwarden/pcap/srv-1-20240501T1200Z.pcap",),
        operator_contact="noc@idc.example, +86 592 000 0000",
    )
    return replace(base, **changes)


# ---------------------------------------------------------------- SMTP


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses what it is told to."""

    refuse_rcpt: set[str] = field(default_factory=set)
    refuse_data: str | None = None
    received: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse_rcpt:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            return self.refuse_data
        self.received.append(envelope)
        return "250 2.0.0 queued"

    def message(self, index: int = 0) -> EmailMessage:
        data = self.received[index].content
        assert isinstance(data, bytes)
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
        assert isinstance(parsed, EmailMessage)
        return parsed


def smtp_server(mailbox: Mailbox, **kwargs: Any) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


def test_notice_arrives_at_a_real_smtp_server() -> None:
    box = Mailbox()
    server = smtp_server(box)
    try:
        notifier = SmtpNotifier("127.0.0.1", server.port, SENDER, timeout_s=5)
        sent_at = AT + timedelta(seconds=3)
        delivery = asyncio.run(notifier.send(notice(), at=sent_at))
    finally:
        server.stop()
    assert delivery.delivered, delivery.detail
    assert delivery.at == sent_at and delivery.refused == ()
    assert delivery.message_id == message_id_for("overage:srv-1:3:suspension", SENDER)
    assert len(box.received) == 1
    envelope = box.received[0]
    assert envelope.mail_from == "noc@idc.example"
    assert envelope.rcpt_tos == ["ops@customer.example"]
    msg = box.message()
    assert msg["Subject"] == "[RackWarden] 服务器 srv-1 网络暂停通知 / Network suspension notice"
    assert msg["Message-ID"] == delivery.message_id
    assert msg["X-RackWarden-Key"] == "overage:srv-1:3:suspension"
    assert msg["From"] == SENDER and msg["To"] == "ops@customer.example"
    assert msg["Date"] == "Wed, 01 May 2024 20:00:03 +0800"
    body = msg.get_content()
    assert isinstance(body, str)
    assert body.index("网络连接已于 2024-05-01 20:00:00+08:00 暂停") < body.index(
        "was suspended at 2024-05-01 20:00:00+08:00")
    for needle in ("5-min average rate：23.4 Mbit/s", "5-min average rate: 23.4 Mbit/s",
                   "cap: 10 Mbit/s", "Suspended until: 2024-05-01 21:00:00+08:00",
                   "暂停至：2024-05-01 21:00:00+08:00", "R1/R2 — 服务器租用协议 annex 1 §3",
                   "srv-1-20240501T1200Z.pcap", "noc@idc.example, +86 592 000 0000"):
        assert needle in body, needle


def test_closed_port_is_undelivered_with_detail() -> None:
    port = free_port()  # bound and released: nothing listens there now
    delivery = asyncio.run(SmtpNotifier("127.0.0.1", port, SENDER, timeout_s=2)
                           .send(notice(), at=AT))
    assert not delivery.delivered and delivery.retryable
    assert delivery.detail == f"connection refused by 127.0.0.1:{port}"


def test_refused_recipient_is_undelivered() -> None:
    box = Mailbox(refuse_rcpt={"ops@customer.example"})
    server = smtp_server(box)
    try:
        delivery = asyncio.run(SmtpNotifier("127.0.0.1", server.port, SENDER, timeout_s=5)
                               .send(notice(), at=AT))
    finally:
        server.stop()
    assert not delivery.delivered and not delivery.retryable
    assert delivery.refused == ("ops@customer.example",)
    assert "all recipients refused" in delivery.detail
    assert "550 5.1.1 <ops@customer.example>: mailbox unavailable" in delivery.detail
    assert box.received == []


def test_one_accepted_recipient_is_enough_and_the_refusal_is_kept() -> None:
    box = Mailbox(refuse_rcpt={"gone@customer.example"})
    server = smtp_server(box)
    try:
        delivery = asyncio.run(
            SmtpNotifier("127.0.0.1", server.port, SENDER, timeout_s=5).send(
                notice(to=("gone@customer.example", "ops@customer.example")), at=AT))
    finally:
        server.stop()
    assert delivery.delivered
    assert delivery.refused == ("gone@customer.example",)
    assert "accepted for 1 of 2" in delivery.detail and "550" in delivery.detail
    assert box.received[0].rcpt_tos == ["ops@customer.example"]


def test_message_refused_at_data_is_undelivered() -> None:
    server = smtp_server(Mailbox(refuse_data="554 5.7.1 rejected by policy"))
    try:
        delivery = asyncio.run(SmtpNotifier("127.0.0.1", server.port, SENDER, timeout_s=5)
                               .send(notice(), at=AT))
    finally:
        server.stop()
    assert not delivery.delivered and not delivery.retryable
    assert delivery.detail == (f"message refused by 127.0.0.1:{server.port}: "
                               "554 5.7.1 rejected by policy")


def test_silent_server_times_out() -> None:
    # The kernel completes the handshake from the backlog; nobody ever sends the banner.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        started = time.monotonic()
        delivery = asyncio.run(SmtpNotifier("127.0.0.1", port, SENDER, timeout_s=0.5)
                               .send(notice(), at=AT))
        elapsed = time.monotonic() - started
    assert not delivery.delivered and delivery.retryable
    assert delivery.detail == f"127.0.0.1:{port} timed out after 0.5 s"
    assert elapsed < 10  # the configured 0.5 s, with room for a loaded CI machine


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, which the client is told to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rackwarden-test-relay")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def check_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"rackwarden"
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends 235 / 535


def test_starttls_and_login(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = Mailbox()
    server = smtp_server(box, tls_context=server_tls, require_starttls=True,
                         authenticator=check_login, auth_required=True)
    try:
        good = SmtpNotifier("127.0.0.1", server.port, SENDER, starttls=True,
                            username="rackwarden", password=Secret(SMTP_PASSWORD),
                            tls_cafile=str(cert), timeout_s=5)
        bad = SmtpNotifier("127.0.0.1", server.port, SENDER, starttls=True,
                           username="rackwarden", password=Secret("wrong-" + SMTP_PASSWORD),
                           tls_cafile=str(cert), timeout_s=5)
        untrusted = SmtpNotifier("127.0.0.1", server.port, SENDER, starttls=True,
                                 username="rackwarden", password=Secret(SMTP_PASSWORD),
                                 timeout_s=5)

        async def all_three() -> tuple[Any, ...]:
            return tuple(await asyncio.gather(good.send(notice(), at=AT),
                                              bad.send(notice(), at=AT),
                                              untrusted.send(notice(), at=AT)))

        ok, refused, unverified = asyncio.run(all_three())
    finally:
        server.stop()
    assert ok.delivered, ok.detail
    assert len(box.received) == 1
    assert box.message()["X-RackWarden-Key"] == "overage:srv-1:3:suspension"
    assert not refused.delivered and not refused.retryable
    assert refused.detail.startswith(
        f"authentication as 'rackwarden' failed at 127.0.0.1:{server.port}: 535")
    assert SMTP_PASSWORD not in refused.detail and SMTP_PASSWORD not in repr(bad)
    assert not unverified.delivered and "CERTIFICATE_VERIFY_FAILED" in unverified.detail


def test_implicit_tls(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = Mailbox()
    server = smtp_server(box, ssl_context=server_tls)
    try:
        delivery = asyncio.run(SmtpNotifier("127.0.0.1", server.port, SENDER, implicit_tls=True,
                                            tls_cafile=str(cert), timeout_s=5)
                               .send(notice(language="en", customer="Example Ltd"), at=AT))
    finally:
        server.stop()
    assert delivery.delivered, delivery.detail
    assert box.message()["Subject"] == "[RackWarden] Server srv-1: Network suspension notice"


# ---------------------------------------------------------------- HTTP receivers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """A loopback http.server that records POSTs and answers with a chosen status."""

    def __init__(self, status: int = 200, delay_s: float = 0.0, location: str | None = None):
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                time.sleep(delay_s)
                with receiver.arrived:
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()},
                        json.loads(raw.decode("utf-8"))))
                    receiver.arrived.notify_all()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                payload = b"" if status < 300 else f"status {status} for test".encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate: Callable[[Received], bool], timeout_s: float) -> Received:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                for r in self.requests:
                    if predicate(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matching arrived in {timeout_s} s: "
                                         f"{[r.body for r in self.requests]}")
                self.arrived.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_webhook_post_carries_bearer_token_and_utf8_json(receiver: Receiver) -> None:
    hook = WebhookNotifier(receiver.url + "/rackwarden", bearer_token=Secret(TOKEN), timeout_s=3)
    event = {"kind": "action", "server": "srv-1", "result": "APPLIED", "at": AT,
             "note": "超限暂停"}
    assert asyncio.run(hook.post(event)), hook.last_detail
    got = receiver.requests[0]
    assert got.path == "/rackwarden"
    assert got.headers["authorization"] == f"Bearer {TOKEN}"
    assert got.headers["content-type"] == "application/json; charset=utf-8"
    assert got.body == {**event, "at": "2024-05-01T12:00:00+00:00"}
    assert TOKEN not in repr(hook)


def test_webhook_failures_return_false_with_detail() -> None:
    failing, redirecting, slow = (Receiver(status=500), Receiver(status=302, location="/else"),
                                  Receiver(delay_s=2.0))
    closed = free_port()
    try:
        hooks = {
            "500": WebhookNotifier(failing.url, timeout_s=3),
            "302": WebhookNotifier(redirecting.url, timeout_s=3),
            "slow": WebhookNotifier(slow.url, timeout_s=0.5),
            "closed": WebhookNotifier(f"http://127.0.0.1:{closed}/", timeout_s=3),
        }

        async def post_all() -> list[bool]:
            return list(await asyncio.gather(*(h.post({"n": 1}) for h in hooks.values())))

        assert asyncio.run(post_all()) == [False, False, False, False]
    finally:
        for r in (failing, redirecting, slow):
            r.close()
    assert hooks["500"].last_detail == "HTTP 500: status 500 for test"
    assert hooks["302"].last_detail.startswith("HTTP 302 (redirects are not followed)")
    assert redirecting.requests[0].path == "/"  # and nothing was re-sent to /else
    assert len(redirecting.requests) == 1
    assert hooks["slow"].last_detail == "timed out after 0.5 s"
    assert hooks["closed"].last_detail == "connection refused"


# ---------------------------------------------------------------- Alertmanager


@dataclass
class AlertmanagerHandle:
    url: str
    pid: int
    hook: Receiver
    log: Path


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerHandle]:
    assert os.access(ALERTMANAGER, os.X_OK), f"{ALERTMANAGER} is required (Debian package)"
    work = tmp_path_factory.mktemp("alertmanager")
    hook = Receiver()
    port = free_port()
    config = work / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [alertname, server]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: '{hook.url}/alertmanager'\n"
        "        send_resolved: true\n"
    )
    log = work / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"alertmanager exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not ready: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        yield AlertmanagerHandle(url, proc.pid, hook, log)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        hook.close()


def am_alerts(url: str, alertname: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=3) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, list)
    return data


def test_alert_reaches_alertmanager_and_its_webhook(alertmanager: AlertmanagerHandle) -> None:
    client = AlertmanagerClient(alertmanager.url, timeout_s=3,
                                generator_url="http://127.0.0.1:9105/status")
    now = datetime.now(UTC)  # Alertmanager drops alerts that ended in the past
    labels = {"server": "srv-1", "switch": "sw1", "severity": "critical", "reason": "overage"}
    annotations = {"summary": "srv-1 shut for overage", "description": "23.4 Mbit/s 超过 10 Mbit/s"}
    assert asyncio.run(client.fire("RackWardenPortShut", labels, annotations, now)), \
        client.last_detail
    alerts = am_alerts(alertmanager.url, "RackWardenPortShut")
    assert len(alerts) == 1
    assert alerts[0]["labels"] == {"alertname": "RackWardenPortShut", **labels}
    assert alerts[0]["annotations"] == annotations
    assert alerts[0]["status"]["state"] == "active"
    assert alerts[0]["generatorURL"] == "http://127.0.0.1:9105/status"
    assert dt.datetime.fromisoformat(alerts[0]["startsAt"].replace("Z", "+00:00")) == \
        now.replace(microsecond=now.microsecond // 1000 * 1000)

    fired = alertmanager.hook.wait_for(
        lambda r: r.body.get("status") == "firing"
        and r.body["commonLabels"].get("alertname") == "RackWardenPortShut", timeout_s=10)
    assert fired.path == "/alertmanager"
    (alert,) = fired.body["alerts"]
    assert alert["labels"] == {"alertname": "RackWardenPortShut", **labels}
    assert alert["annotations"]["description"] == "23.4 Mbit/s 超过 10 Mbit/s"

    assert asyncio.run(client.resolve("RackWardenPortShut", labels, datetime.now(UTC))), \
        client.last_detail
    assert am_alerts(alertmanager.url, "RackWardenPortShut") == []
    resolved = alertmanager.hook.wait_for(
        lambda r: r.body.get("status") == "resolved"
        and r.body["commonLabels"].get("alertname") == "RackWardenPortShut", timeout_s=10)
    assert resolved.body["alerts"][0]["labels"]["server"] == "srv-1"


def test_alertmanager_errors_return_false(alertmanager: AlertmanagerHandle) -> None:
    client = AlertmanagerClient(alertmanager.url + "/", timeout_s=3)
    result = asyncio.run(client.post_alerts([{"labels": {}}]))  # schema-valid, semantically not
    assert not result.ok and result.status == 400, result.detail
    assert result.detail.startswith("HTTP 400")
    assert not asyncio.run(client.fire("bad", {"not-a-label": "x"}, {}, datetime.now(UTC)))
    assert client.last_detail == "not sent: invalid label names ['not-a-label']"
    down = AlertmanagerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    assert not asyncio.run(down.fire("RackWardenTest", {}, {}, datetime.now(UTC)))
    assert down.last_detail == "connection refused"


def test_oncall_fans_out_and_one_failure_does_not_stop_the_rest(
    alertmanager: AlertmanagerHandle, receiver: Receiver
) -> None:
    oncall = OnCall({
        "alertmanager": AlertmanagerClient(alertmanager.url, timeout_s=3),
        "webhook": WebhookNotifier(receiver.url + "/oncall", bearer_token=Secret(TOKEN)),
        "broken": WebhookNotifier(f"http://127.0.0.1:{free_port()}/", timeout_s=2),
    })
    at = datetime.now(UTC)
    labels = {"switch": "sw1"}
    results = asyncio.run(oncall.alert("RackWardenBreakerOpen", "critical", labels,
                                       "breaker open on sw1", "40% of sw1's servers over cap",
                                       at))
    assert results == {"alertmanager": True, "webhook": True, "broken": False}
    (alert,) = am_alerts(alertmanager.url, "RackWardenBreakerOpen")
    assert alert["labels"] == {"alertname": "RackWardenBreakerOpen", "severity": "critical",
                               "switch": "sw1"}
    got = receiver.wait_for(lambda r: r.path == "/oncall", timeout_s=2)
    assert got.headers["authorization"] == f"Bearer {TOKEN}"
    assert got.body["name"] == "RackWardenBreakerOpen" and got.body["status"] == "firing"
    assert got.body["summary"] == "breaker open on sw1"

    cleared = asyncio.run(oncall.resolve_alert("RackWardenBreakerOpen", "critical", labels,
                                               datetime.now(UTC)))
    assert cleared == {"alertmanager": True, "webhook": True, "broken": False}
    assert am_alerts(alertmanager.url, "RackWardenBreakerOpen") == []
    assert receiver.requests[-1].body["status"] == "resolved"
