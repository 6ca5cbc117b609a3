"""What the local API's tests share (tests/unit/test_api.py, test_web_api.py): the token, a
self-signed certificate, a TLS web config, and the daemon's loop in a thread (each test file
names its fixtures `tls_web` and `loop` on top of these)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN = "tok-" + "A1b2C3d4E5f6G7h8I9j0" * 2  # the form secrets.token_urlsafe() writes


def pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and its key, valid for the hour around now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    crt, pem_key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return crt, pem_key


def tls_web_config(tmp_path: Path) -> Path:
    """An api web config with TLS on a fresh self-signed certificate."""
    crt, key = pem_pair(tmp_path, "rackwarden-api")
    web = tmp_path / "api-web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {crt}, key_file: {key}}}\n")
    return web


def thread_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The daemon's loop in a thread, so blocking clients (the CLI, raw sockets) can run here."""
    lp = asyncio.new_event_loop()
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    t.join(timeout=5)
    lp.close()
