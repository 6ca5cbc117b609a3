"""The exporter-style web config (tls_server_config, basic_auth_users) and its rules.

Parsing and checking the file, the bind policies of the metrics and the API, the TLS context,
and the basic-auth password check. No serving: web/metrics.py serves /metrics and web/server.py
the API and console, both with aiohttp on the daemon's event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

from .textfile import TextFileError, read_text
from .yamldepth import too_deep

# The hash forms Go's bcrypt (exporter-toolkit) and htpasswd -B write; $2y$ is $2b$ by another name.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's names; the ones that only request a certificate without checking it are
# left out on purpose, they add no security.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The challenge of a 401 from /metrics.
WWW_AUTHENTICATE = 'Basic realm="rackwarden", charset="UTF-8"'
# Successful checks are remembered so a scrape every few seconds does not cost a bcrypt each.
_AUTH_CACHE_MAX = 256
# Failed checks always pay bcrypt; bounding them keeps a password-guessing flood from taking
# every core, while cached (legitimate) scrapes skip the queue.
MAX_CONCURRENT_BCRYPT = 2


class WebConfigError(Exception):
    """A web config that cannot be used; the message names the file and the key."""


class BindPolicyError(WebConfigError):
    """Refused to expose the metrics beyond loopback without authentication."""


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"


@dataclass(frozen=True)
class WebConfig:
    """The parsed web config; hashes are kept out of repr so they never reach a log."""

    basic_auth_users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}),
                                                  repr=False)
    tls: TlsServerConfig | None = None
    source: str = "<web config>"

    @property
    def requires_auth(self) -> bool:
        return bool(self.basic_auth_users)


def _mapping(
    value: Any, where: str, allowed: tuple[str, ...], unsupported: tuple[str, ...] = ()
) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    for k in value:
        if k in unsupported:
            raise WebConfigError(f"{where}.{k}: not supported by RackWarden (remove it)")
        if k not in allowed:
            raise WebConfigError(f"{where}.{k}: unknown key (allowed: {', '.join(allowed)})")
    return value


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{where}: expected a file path")
    p = Path(value)
    # Relative to the web config, as in exporter-toolkit: a web config loaded with systemd
    # LoadCredential= can name its key and certificate, loaded the same way, by bare name.
    return p if p.is_absolute() else base / p


def parse_web_config(
    text: str, source: str = "<web config>", base: Path | None = None
) -> WebConfig:
    """Parse and check a web config; raise WebConfigError naming the key that is wrong."""
    base = base or Path.cwd()
    try:
        doc = yaml.safe_load(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise WebConfigError(f"{source}:{line}: character {e.character!r} is not allowed"
                             " (a binary file?)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise WebConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        line, reason = too_deep(text)
        raise WebConfigError(f"{source}:{line}: not valid YAML: {reason}") from None
    top = _mapping(doc, source, ("tls_server_config", "basic_auth_users"),
                   unsupported=("http_server_config",))
    raw_users = top.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        raise WebConfigError(f"{source}: basic_auth_users: expected a mapping of user: bcrypt hash")
    users: dict[str, bytes] = {}
    for user, h in raw_users.items():
        where = f"{source}: basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{where}: a user name must be non-empty text without ':'")
        if not isinstance(h, str) or not _BCRYPT_HASH.match(h):
            raise WebConfigError(
                f"{where}: not a bcrypt hash. Make one with "
                "`python3 -c 'import bcrypt,getpass; print(bcrypt.hashpw("
                "getpass.getpass().encode(), bcrypt.gensalt()).decode())'` or "
                "`htpasswd -nBC 10 USER`"
            )
        users[user] = h.encode()
    tls = None
    if top.get("tls_server_config") is not None:
        where = f"{source}: tls_server_config"
        t = _mapping(top["tls_server_config"], where,
                     ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"),
                     unsupported=("cert", "key", "client_ca", "max_version", "cipher_suites",
                                  "curve_preferences", "prefer_server_cipher_suites",
                                  "client_allowed_sans"))
        for k in ("cert_file", "key_file"):
            if k not in t:
                raise WebConfigError(f"{where}.{k}: required")
        auth_type = t.get("client_auth_type", "NoClientCert")
        if auth_type not in _CLIENT_AUTH:
            raise WebConfigError(f"{where}.client_auth_type: '{auth_type}' is not one of "
                                 f"{', '.join(_CLIENT_AUTH)}")
        min_version = t.get("min_version", "TLS12")
        if min_version not in _TLS_VERSIONS:
            raise WebConfigError(f"{where}.min_version: '{min_version}' is not one of "
                                 f"{', '.join(_TLS_VERSIONS)}")
        ca = None
        if "client_ca_file" in t:
            ca = _path(t["client_ca_file"], f"{where}.client_ca_file", base)
        if auth_type != "NoClientCert" and ca is None:
            raise WebConfigError(
                f"{where}.client_ca_file: required with client_auth_type {auth_type}")
        tls = TlsServerConfig(
            cert_file=_path(t["cert_file"], f"{where}.cert_file", base),
            key_file=_path(t["key_file"], f"{where}.key_file", base),
            client_auth_type=auth_type, client_ca_file=ca, min_version=min_version,
        )
    return WebConfig(basic_auth_users=MappingProxyType(users), tls=tls, source=source)


def read_config_text(path: Path, error: type[Exception]) -> str:
    """A web config file's text (this one, agent/web's customers file); an unreadable file or
    one that is not text is `error` with a `file:line: reason` message, never a traceback."""
    try:
        return read_text(path)
    except OSError as e:
        raise error(f"{path}:1: cannot read: {e.strerror}") from None
    except TextFileError as e:
        raise error(str(e)) from None


def load_web_config(path: str | Path) -> WebConfig:
    path = Path(path)
    return parse_web_config(read_config_text(path, WebConfigError), str(path), base=path.parent)


def ssl_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """Build the server context; a missing or mismatched key and certificate fail here, at start."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if tls.client_ca_file is not None:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
    except (OSError, ssl.SSLError) as e:
        files = [tls.cert_file, tls.key_file] + ([tls.client_ca_file] if tls.client_ca_file else [])
        raise WebConfigError(
            f"tls_server_config: cannot load {' / '.join(map(str, files))}: {e}") from e
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return ctx


def is_loopback(listen_addr: str) -> bool:
    """True only for addresses that cannot be reached from another host."""
    host = listen_addr.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name may resolve to anything, now or later: treat it as exposed.
        return False


def check_bind_policy(listen_addr: str, web_config: WebConfig | None) -> list[str]:
    """Refuse a non-loopback bind without basic auth; return warnings for weaker set-ups."""
    if is_loopback(listen_addr):
        return []
    if web_config is None or not web_config.requires_auth:
        raise BindPolicyError(
            f"metrics_listen {listen_addr!r} is reachable from other hosts, so it needs basic "
            "auth: give a web config with basic_auth_users (bcrypt hashes), or listen on "
            "127.0.0.1"
        )
    if web_config.tls is None:
        return [f"metrics on {listen_addr!r} use basic auth without TLS: passwords cross the "
                "network in clear text; add tls_server_config"]
    return []


def check_api_bind_policy(listen_addr: str, web_config: WebConfig | None) -> None:
    """The local API (suspend, restore, hold) beyond loopback only over TLS.

    Its bearer token can shut every port, so unlike the metrics it may not cross the network
    in clear text at all; basic auth is refused in its web config rather than ignored, since
    the API answers to its token alone.
    """
    if web_config is not None and web_config.requires_auth:
        raise WebConfigError(f"{web_config.source}: basic_auth_users: not used by the local API, which "
                             "takes its bearer token (state_dir/api.token); remove them from this file")
    if is_loopback(listen_addr):
        return
    if web_config is None or web_config.tls is None:
        raise BindPolicyError(
            f"api_listen {listen_addr!r} is reachable from other hosts, so the API's bearer token "
            "would cross the network in clear text: give agent.api_web_config with "
            "tls_server_config, or listen on 127.0.0.1"
        )


def validate_api(listen_addr: str, web_config_path: str | Path | None) -> None:
    """For check-config: the API's web config, its TLS files and its bind policy, without binding."""
    wc = load_web_config(web_config_path) if web_config_path is not None else None
    check_api_bind_policy(listen_addr, wc)
    if wc is not None and wc.tls is not None:
        ssl_context(wc.tls)


def cert_fingerprint(cert_file: Path) -> bytes:
    """SHA-256 of the first certificate in a PEM file: what a server loading it presents."""
    try:
        pem = read_text(cert_file)
    except OSError as e:
        raise WebConfigError(f"{cert_file}: cannot read: {e.strerror}") from e
    except TextFileError as e:
        raise WebConfigError(str(e)) from None
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    try:
        if m is None:
            raise ValueError("no PEM certificate")
        der = ssl.PEM_cert_to_DER_cert(m[0])
    except ValueError as e:
        raise WebConfigError(f"{cert_file}: not a PEM certificate ({e})") from None
    return hashlib.sha256(der).digest()


class PasswordCheck:
    """The basic-auth password rules: constant-effort bcrypt, unknown users cost the same as a
    wrong password, and verified credentials are remembered.

    remembered() is cheap (one SHA-256) and may run anywhere; verify() costs a bcrypt
    (50-100 ms at cost 10) and belongs in a thread, as does the constructor, which hashes the
    throwaway password. web/metrics.py bounds how many verify() run at once.
    """

    def __init__(self, users: Mapping[str, bytes]):
        self._users = dict(users)
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()
        cost = int(next(iter(self._users.values()))[4:6]) if self._users else 4
        # Comparing against a throwaway hash of the same cost hides which user names exist.
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))

    def _key(self, user: str, password: str) -> tuple[bytes | None, bytes]:
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password.encode()))).digest()
        return hashed, key

    def remembered(self, user: str, password: str) -> bool:
        """True when these credentials were verified before: no bcrypt needed."""
        hashed, key = self._key(user, password)
        with self._lock:
            return hashed is not None and key in self._ok

    def verify(self, user: str, password: str) -> bool:
        """The full bcrypt check, whatever the cache holds; remembers a success."""
        hashed, key = self._key(user, password)
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:  # bcrypt refuses passwords over 72 bytes; none can match
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) >= _AUTH_CACHE_MAX:
                    self._ok.clear()
                self._ok.add(key)
        return ok


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic` header value; None when it is anything else."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def __getattr__(name: str) -> Any:
    # MetricsServer (the thread-served /metrics endpoint) used to live here; callers without an
    # event loop keep its interface through web.metrics.ThreadedMetricsServer. Imported late:
    # web/ imports this module, and check-config should not load aiohttp to read a web config.
    if name == "MetricsServer":
        from .web.metrics import ThreadedMetricsServer
        return ThreadedMetricsServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def validate(listen_addr: str, web_config_path: str | Path | None) -> list[str]:
    """For check-config: load the web config, its TLS files and the bind policy, without binding."""
    wc = load_web_config(web_config_path) if web_config_path is not None else None
    warnings = check_bind_policy(listen_addr, wc)
    if wc is not None and wc.tls is not None:
        ssl_context(wc.tls)
    return warnings
