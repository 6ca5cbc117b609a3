"""The metrics endpoint's web auth: real HTTP(S) requests on 127.0.0.1 against agent/webauth.py."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Gauge
from rackwarden.agent.webauth import (
    BindPolicyError,
    MetricsServer,
    WebConfigError,
    check_bind_policy,
    load_web_config,
    parse_web_config,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
# Cost 4 keeps the suite fast; production hashes use 10 or more, the code does not care.
PASSWORD = "s3cret:with-colon"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def _registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Gauge("rackwarden_webauth_test_value", "A value the tests look for.", registry=r).set(42)
    return r


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _get(port: int, headers: dict[str, str] | None = None, path: str = "/metrics",
         tls: ssl.SSLContext | None = None, method: str = "GET") -> http.client.HTTPResponse:
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


@pytest.fixture
def serve() -> Iterator[list[MetricsServer]]:
    """Servers a test starts are stopped afterwards, whatever happened."""
    started: list[MetricsServer] = []
    yield started
    for s in started:
        s.stop()


def _start(serve: list[MetricsServer], web_config_text: str | None, base: Path | None = None,
           listen: str = "127.0.0.1") -> MetricsServer:
    wc = parse_web_config(web_config_text, "web.yml", base) if web_config_text is not None else None
    s = MetricsServer(_registry(), listen, 0, wc)
    serve.append(s)
    s.start()
    return s


# --- certificates made here, for this run only -------------------------------------------------

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate,
          ec.EllipticCurvePrivateKey] | None = None, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder()
         .subject_name(name)
         .issuer_name(issuer[0].subject if issuer else name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1))
         .not_valid_after(now + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None,
           key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A self-signed server certificate, plus a CA and a client certificate for mutual TLS."""
    skey = _key()
    scert = _cert("rackwarden-test", skey, server=True, ca=True)
    ca_key = _key()
    ca = _cert("rackwarden-test-ca", ca_key, ca=True)
    ckey = _key()
    ccert = _cert("prometheus", ckey, (ca, ca_key))
    other_key = _key()
    other = _cert("stranger", other_key)
    return {
        "cert": _write(tmp_path / "server.crt", scert),
        "key": _write(tmp_path / "server.key", key=skey),
        "ca": _write(tmp_path / "ca.crt", ca),
        "client_cert": _write(tmp_path / "client.crt", ccert),
        "client_key": _write(tmp_path / "client.key", key=ckey),
        "stranger_cert": _write(tmp_path / "stranger.crt", other),
        "stranger_key": _write(tmp_path / "stranger.key", key=other_key),
    }


# --- plain HTTP --------------------------------------------------------------------------------

def test_without_web_config_loopback_serves_metrics(serve: list[MetricsServer]) -> None:
    s = _start(serve, None)
    r = _get(s.port)
    assert r.status == 200
    assert b"rackwarden_webauth_test_value 42.0" in r.body  # type: ignore[attr-defined]
    assert r.getheader("Content-Type", "").startswith("text/plain")
    assert _get(s.port, path="/nothing-here").status == 404
    head = _get(s.port, method="HEAD")
    assert head.status == 200 and head.body == b""  # type: ignore[attr-defined]


def test_basic_auth_refuses_missing_wrong_and_unknown_users(serve: list[MetricsServer]) -> None:
    s = _start(serve, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    missing = _get(s.port)
    assert missing.status == 401
    assert "Basic" in missing.getheader("WWW-Authenticate", "")
    assert b"rackwarden_webauth_test_value" not in missing.body  # type: ignore[attr-defined]
    assert _get(s.port, _basic("prometheus", "wrong")).status == 401
    assert _get(s.port, _basic("nobody", PASSWORD)).status == 401
    assert _get(s.port, {"Authorization": "Basic !!!not-base64"}).status == 401
    assert _get(s.port, {"Authorization": "Bearer " + PASSWORD}).status == 401
    assert _get(s.port, _basic("prometheus", "x" * 100)).status == 401  # over bcrypt's 72 bytes
    # Every path is behind the password, so nothing can be probed without it.
    assert _get(s.port, path="/").status == 401
    ok = _get(s.port, _basic("prometheus", PASSWORD))
    assert ok.status == 200
    assert b"rackwarden_webauth_test_value 42.0" in ok.body  # type: ignore[attr-defined]
    # The second success is served from the cache of verified credentials; still right.
    assert _get(s.port, _basic("prometheus", PASSWORD)).status == 200
    assert _get(s.port, _basic("prometheus", PASSWORD + "x")).status == 401


def test_htpasswd_style_2y_hash_is_accepted(serve: list[MetricsServer]) -> None:
    two_y = "$2y$" + HASH[4:]  # htpasswd -B and Go write $2y$; the algorithm is the same
    s = _start(serve, f"basic_auth_users:\n  prometheus: '{two_y}'\n")
    assert _get(s.port, _basic("prometheus", PASSWORD)).status == 200
    assert _get(s.port, _basic("prometheus", "nope")).status == 401


def test_gzip_and_openmetrics_are_negotiated(serve: list[MetricsServer]) -> None:
    s = _start(serve, None)
    r = _get(s.port, {"Accept-Encoding": "gzip"})
    assert r.getheader("Content-Encoding") == "gzip"
    assert b"rackwarden_webauth_test_value" in gzip.decompress(r.body)  # type: ignore[attr-defined]
    om = _get(s.port, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.getheader("Content-Type", "").startswith("application/openmetrics-text")
    assert om.body.rstrip().endswith(b"# EOF")  # type: ignore[attr-defined]


def test_stop_closes_the_port(serve: list[MetricsServer]) -> None:
    s = _start(serve, None)
    port = s.port
    s.stop()
    s.stop()  # twice is fine
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- TLS ---------------------------------------------------------------------------------------

def test_tls_self_signed_with_basic_auth(serve: list[MetricsServer], pki: dict[str, Path]) -> None:
    s = _start(serve, f"""\
tls_server_config:
  cert_file: server.crt      # relative to the web config's folder
  key_file: server.key
basic_auth_users:
  prometheus: '{HASH}'
""", base=pki["cert"].parent)
    assert s.url.startswith("https://127.0.0.1:")
    client = ssl.create_default_context(cafile=str(pki["cert"]))
    assert _get(s.port, _basic("prometheus", PASSWORD), tls=client).status == 200
    assert _get(s.port, _basic("prometheus", "wrong"), tls=client).status == 401
    # A client that does not trust the certificate refuses it...
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(s.port, _basic("prometheus", PASSWORD), tls=ssl.create_default_context())
    # ...and plain HTTP to the TLS port gets no metrics.
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        r = _get(s.port, _basic("prometheus", PASSWORD))
        assert b"rackwarden_webauth_test_value" not in r.body  # type: ignore[attr-defined]
        raise ConnectionError("plain HTTP answered without metrics")
    # The server keeps serving after the bad handshakes.
    assert _get(s.port, _basic("prometheus", PASSWORD), tls=client).status == 200


def test_tls13_only_refuses_tls12(serve: list[MetricsServer], pki: dict[str, Path]) -> None:
    s = _start(serve, f"tls_server_config: {{cert_file: {pki['cert']}, key_file: {pki['key']},"
                      " min_version: TLS13}\n")
    old = ssl.create_default_context(cafile=str(pki["cert"]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _get(s.port, tls=old)
    assert _get(s.port, tls=ssl.create_default_context(cafile=str(pki["cert"]))).status == 200


def test_client_certificate_required(serve: list[MetricsServer], pki: dict[str, Path]) -> None:
    s = _start(serve, f"""\
tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki['ca']}
""")
    anonymous = ssl.create_default_context(cafile=str(pki["cert"]))
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        _get(s.port, tls=anonymous)
    stranger = ssl.create_default_context(cafile=str(pki["cert"]))
    stranger.load_cert_chain(str(pki["stranger_cert"]), str(pki["stranger_key"]))
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        _get(s.port, tls=stranger)
    known = ssl.create_default_context(cafile=str(pki["cert"]))
    known.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    assert _get(s.port, tls=known).status == 200


def test_mismatched_key_fails_at_start_not_at_first_scrape(pki: dict[str, Path]) -> None:
    wc = parse_web_config(f"tls_server_config: {{cert_file: {pki['cert']},"
                          f" key_file: {pki['client_key']}}}\n")
    s = MetricsServer(_registry(), "127.0.0.1", 0, wc)
    with pytest.raises(WebConfigError, match="cannot load"):
        s.start()
    s.stop()


# --- bind policy -------------------------------------------------------------------------------

def test_policy_refuses_non_loopback_without_basic_auth(pki: dict[str, Path]) -> None:
    tls_only = parse_web_config(f"tls_server_config: {{cert_file: {pki['cert']},"
                                f" key_file: {pki['key']}}}\n")
    with_auth = parse_web_config(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    for addr in ("0.0.0.0", "", "::", "192.0.2.10", "metrics.example.net", "[2001:db8::1]"):
        for wc in (None, tls_only):
            with pytest.raises(BindPolicyError, match="needs basic auth"):
                check_bind_policy(addr, wc)
    for addr in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"):
        assert check_bind_policy(addr, None) == []
    warnings = check_bind_policy("0.0.0.0", with_auth)
    assert warnings and "clear text" in warnings[0]
    both = parse_web_config(f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
                            f"tls_server_config: {{cert_file: {pki['cert']},"
                            f" key_file: {pki['key']}}}\n")
    assert check_bind_policy("192.0.2.10", both) == []


def test_start_applies_the_policy_before_binding() -> None:
    s = MetricsServer(_registry(), "0.0.0.0", 0, None)
    with pytest.raises(BindPolicyError):
        s.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = s.port  # nothing was bound


def test_validate_for_check_config(tmp_path: Path, pki: dict[str, Path]) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
                   f"tls_server_config: {{cert_file: {pki['cert']}, key_file: {pki['key']}}}\n")
    assert validate("0.0.0.0", web) == []
    assert validate("127.0.0.1", None) == []
    with pytest.raises(BindPolicyError):
        validate("0.0.0.0", None)
    with pytest.raises(WebConfigError, match="cannot read"):
        validate("127.0.0.1", tmp_path / "missing.yml")


# --- parsing -----------------------------------------------------------------------------------

# Named by the expected message: the texts hold a bcrypt hash whose salt differs per process,
# and pytest-xdist needs every worker to collect the same test ids.
_PARSE_ERRORS = [
    ("basic_auth_users: {prometheus: hunter2}\n", "basic_auth_users.prometheus: not a bcrypt hash"),
    ("basic_auth_user: {}\n", "basic_auth_user: unknown key"),
    ("http_server_config: {http2: false}\n", "http_server_config: not supported"),
    ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config.key_file: required"),
    ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequestClientCert}\n",
     "client_auth_type: 'RequestClientCert' is not one of"),
    ("tls_server_config: {cert_file: a, key_file: b,"
     " client_auth_type: RequireAndVerifyClientCert}\n",
     "client_ca_file: required"),
    ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS10}\n", "min_version"),
    ("tls_server_config: {cert_file: a, key_file: b, cipher_suites: [x]}\n",
     "cipher_suites: not supported"),
    ("- just\n- a list\n", "expected a mapping"),
    ("basic_auth_users: [a, b]\n", "expected a mapping of user"),
    ("basic_auth_users: {'a:b': '" + HASH + "'}\n", "without ':'"),
]


@pytest.mark.parametrize("text, key", _PARSE_ERRORS, ids=[k for _t, k in _PARSE_ERRORS])
def test_parse_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(WebConfigError) as e:
        parse_web_config(text, "/etc/rackwarden/web.yml")
    assert key in str(e.value)
    assert str(e.value).startswith("/etc/rackwarden/web.yml")


def test_hashes_never_print() -> None:
    wc = parse_web_config(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    assert HASH not in repr(wc) and HASH[7:] not in str(wc)


def test_shipped_example_web_config_parses() -> None:
    wc = load_web_config(REPO / "config" / "prometheus" / "web-config.example.yml")
    assert wc.requires_auth and wc.tls is not None
    assert wc.tls.cert_file.is_absolute()
    assert check_bind_policy("0.0.0.0", wc) == []
