"""SNMP poller: GETBULK walks of IF-MIB over pysnmp 7 asyncio, each poll returned as a PortPoll."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pyasn1.error import PyAsn1Error
from pysnmp.error import PySnmpError
from pysnmp.proto import errind
from rackwarden.policies.facts import PollErrorKind, PortPoll

from . import ber, usm
from .fastv2c import BulkTimeout, FastPathUnavailable, FastV2cClient
from .fastv3 import FastV3Client
from .ifmib import (
    FALLBACK_COLUMNS,
    PRIMARY_COLUMNS,
    Absent,
    Oid,
    SnmpValue,
    VarBind,
    absorb_bulk_rows,
    columns_without_hc,
    parse_columns,
    parse_if_walk,
    split_columns,
)

if TYPE_CHECKING:
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, SnmpEngine, UdpTransportTarget, UsmUserData

# pysnmp's hlapi (with pysmi, its MIB compiler, and that one's requests, jinja2 and lark: ~20 MB
# of RSS) is imported only when a switch is polled through it: the fast paths poll the rest.
# So the protocols are pysnmp's identifiers written out (the same tuples as its usm*Protocol
# constants, tests/unit/test_memory_imports.py compares them).
AUTH_PROTOCOLS: Mapping[str, tuple[int, ...]] = {
    "md5": (1, 3, 6, 1, 6, 3, 10, 1, 1, 2),  # usmHMACMD5AuthProtocol
    "sha": (1, 3, 6, 1, 6, 3, 10, 1, 1, 3),  # usmHMACSHAAuthProtocol
    "sha224": (1, 3, 6, 1, 6, 3, 10, 1, 1, 4),  # usmHMAC128SHA224AuthProtocol
    "sha256": (1, 3, 6, 1, 6, 3, 10, 1, 1, 5),  # usmHMAC192SHA256AuthProtocol
    "sha384": (1, 3, 6, 1, 6, 3, 10, 1, 1, 6),  # usmHMAC256SHA384AuthProtocol
    "sha512": (1, 3, 6, 1, 6, 3, 10, 1, 1, 7),  # usmHMAC384SHA512AuthProtocol
}
PRIV_PROTOCOLS: Mapping[str, tuple[int, ...]] = {
    "des": (1, 3, 6, 1, 6, 3, 10, 1, 2, 2),  # usmDESPrivProtocol
    "3des": (1, 3, 6, 1, 6, 3, 10, 1, 2, 3),  # usm3DESEDEPrivProtocol
    "aes": (1, 3, 6, 1, 6, 3, 10, 1, 2, 4),  # usmAesCfb128Protocol
    "aes128": (1, 3, 6, 1, 6, 3, 10, 1, 2, 4),  # usmAesCfb128Protocol
    # AES-192/256 key extension as Cisco does it (draft-reeder); the *blmt ones are Blumenthal's.
    "aes192": (1, 3, 6, 1, 4, 1, 9, 12, 6, 1, 101),  # usmAesCfb192Protocol
    "aes256": (1, 3, 6, 1, 4, 1, 9, 12, 6, 1, 102),  # usmAesCfb256Protocol
    "aes192blmt": (1, 3, 6, 1, 4, 1, 9, 12, 6, 1, 1),  # usmAesBlumenthalCfb192Protocol
    "aes256blmt": (1, 3, 6, 1, 4, 1, 9, 12, 6, 1, 2),  # usmAesBlumenthalCfb256Protocol
}

# GETBULK non-repeaters act as GETNEXT, so they name the object, not the .0 instance.
_SYS_UPTIME_OBJECT: Oid = (1, 3, 6, 1, 2, 1, 1, 3)
_SNMP_ENGINE_BOOTS_OBJECT: Oid = (1, 3, 6, 1, 6, 3, 10, 2, 1, 2)
# A 48-port walk needs a handful of rounds; far more means the agent is looping.
_MAX_ROUNDS = 2000
DEFAULT_RCVBUF_BYTES = 4 * 1024 * 1024

_TIMEOUT = (errind.RequestTimedOut,)
# USM said no, or could not check: wrong key/protocol, unknown user, security level refused,
# or this host cannot do the cipher (pysnmp needs the `cryptography` package for privacy).
_AUTH = (
    errind.WrongDigest,
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.UnsupportedSecurityLevel,
    errind.AuthenticationError,
    errind.AuthenticationFailure,
    errind.DecryptionError,
    errind.NotInTimeWindow,
    errind.NoAuthentication,
    errind.NoEncryption,
    errind.EncryptionError,
    errind.UnsupportedAuthProtocol,
    errind.UnsupportedPrivProtocol,
    errind.UnknownCommunityName,
)
_AUTH_STATUSES = {"authorizationError", "noAccess"}
# RFC 3416 error-status values, named as pysnmp prints them (the fast path has no pysnmp object).
_ERROR_STATUS_NAMES = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess", "wrongType",
    "wrongLength", "wrongEncoding", "wrongValue", "noCreation", "inconsistentValue",
    "resourceUnavailable", "commitFailed", "undoFailed", "authorizationError", "notWritable",
    "inconsistentName",
)
_TOO_BIG = 1
# The fast path asks for the last poll's row count + 1 repetitions (one round, no overshoot
# round), but never more than this many varbinds in one request: ~45 KB of reply, under UDP's
# 64 KB whatever the agent's own cap.
_MAX_SIZED_VARBINDS = 2000

log = logging.getLogger(__name__)

# One GETBULK: (request OIDs, non-repeaters, round number) -> the reply's varbinds, plain.
BulkFn = Callable[[list[Oid], int, int], Awaitable[list[VarBind]]]


@runtime_checkable
class Revealable(Protocol):
    def reveal(self) -> str: ...


SecretLike = str | Callable[[], str] | Revealable


def reveal(secret: SecretLike | None) -> str | None:
    """The clear value of a credential given as a str, a zero-argument callable or a Secret."""
    if secret is None or isinstance(secret, str):
        return secret
    if isinstance(secret, Revealable):
        return secret.reveal()
    return secret()


@dataclass(frozen=True)
class SnmpTarget:
    """One switch's SNMP agent and how to ask it. Credentials never appear in repr()."""

    name: str
    host: str
    port: int = 161
    version: Literal["2c", "3"] = "2c"
    community: SecretLike | None = field(default=None, repr=False)
    user: str | None = None
    auth_protocol: str = "sha"
    auth_key: SecretLike | None = field(default=None, repr=False)
    priv_protocol: str | None = "aes"
    priv_key: SecretLike | None = field(default=None, repr=False)
    timeout_s: float = 2.0
    retries: int = 1
    max_repetitions: int = 50

    def __post_init__(self) -> None:
        if self.version not in ("2c", "3"):
            raise ValueError(f"{self.name}: SNMP version must be '2c' or '3', not {self.version!r}")
        if self.version == "2c" and self.community is None:
            raise ValueError(f"{self.name}: SNMP v2c needs a community")
        if self.version == "3":
            if not self.user:
                raise ValueError(f"{self.name}: SNMPv3 needs a user")
            if self.auth_protocol not in AUTH_PROTOCOLS:
                raise ValueError(
                    f"{self.name}: auth_protocol {self.auth_protocol!r} is not one of"
                    f" {', '.join(AUTH_PROTOCOLS)}"
                )
            if self.priv_protocol is not None and self.priv_protocol not in PRIV_PROTOCOLS:
                raise ValueError(
                    f"{self.name}: priv_protocol {self.priv_protocol!r} is not one of"
                    f" {', '.join(PRIV_PROTOCOLS)}"
                )
            if self.priv_key is not None and self.auth_key is None:
                raise ValueError(f"{self.name}: SNMPv3 privacy needs an auth_key too")
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.name}: port {self.port} out of range")
        if self.timeout_s <= 0 or self.retries < 0 or self.max_repetitions < 1:
            raise ValueError(f"{self.name}: timeout_s > 0, retries >= 0, max_repetitions >= 1")


_shared_mib_view: Any = None


def _warm_mib_view(engine: SnmpEngine) -> None:
    """Give the engine pysnmp's MIB view now, built once per process.

    The hlapi resolves every request OID through it; built lazily it makes the first poll ~0.9 s
    slower, and building it again for every engine costs that again. With lookupMib=False the
    view only resolves numeric OIDs, so one view serves every engine on this thread.
    """
    global _shared_mib_view
    if _shared_mib_view is not None:
        engine.cache["mibViewController"] = _shared_mib_view
        return
    from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType
    from pysnmp.hlapi.varbinds import CommandGeneratorVarBinds

    CommandGeneratorVarBinds().make_varbinds(
        engine.cache, (ObjectType(ObjectIdentity(_SYS_UPTIME_OBJECT)),)
    )
    _shared_mib_view = engine.cache.get("mibViewController")


def _raise_rcvbuf(sock: socket.socket, size: int) -> None:
    # SO_RCVBUFFORCE (root or CAP_NET_ADMIN) may exceed net.core.rmem_max; SO_RCVBUF is capped.
    if sys.platform == "linux":
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
            return
        except PermissionError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


@dataclass
class _FastState:
    """What the fast path remembers of one switch between polls."""

    rows: int | None = None  # the longest column of the last primary walk
    ceiling: int | None = None  # max-repetitions after the agent said tooBig


class _PollFailure(Exception):
    def __init__(self, kind: PollErrorKind, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass
class _Stamp:
    """When the latest reply of one poll arrived."""

    at: datetime
    now: float


class _UsmGate:
    """Keeps polls that share an SNMPv3 user name but not its keys from overlapping.

    pysnmp's engine holds one key set per user name and swaps it whenever a request brings
    different keys; a swap in the middle of another switch's poll would fail that poll with a
    wrong digest. Polls with the same keys (the usual fleet-wide user) run together.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._active: dict[str, tuple[bytes, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user: str, fingerprint: bytes) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(
                lambda: self._active.get(user, (fingerprint, 0))[0] == fingerprint
            )
            self._active[user] = (fingerprint, self._active.get(user, (fingerprint, 0))[1] + 1)
        try:
            yield
        finally:
            async with self._cond:
                fp, count = self._active[user]
                if count == 1:
                    del self._active[user]
                else:
                    self._active[user] = (fp, count - 1)
                self._cond.notify_all()


def plain_value(value: Any) -> SnmpValue:
    """A pysnmp value as an int, bytes, OID tuple or Absent (ifmib works on these only)."""
    from pyasn1.type import univ
    from pysnmp.proto import rfc1905

    if isinstance(value, rfc1905.NoSuchObject):
        return Absent.NO_SUCH_OBJECT
    if isinstance(value, rfc1905.NoSuchInstance):
        return Absent.NO_SUCH_INSTANCE
    if isinstance(value, rfc1905.EndOfMibView):
        return Absent.END_OF_MIB_VIEW
    if isinstance(value, univ.Null):
        return Absent.NO_SUCH_OBJECT
    if isinstance(value, univ.Integer):  # Integer32, Counter32/64, Gauge32, TimeTicks
        return int(value)
    if isinstance(value, univ.OctetString):  # also IpAddress, Opaque
        return bytes(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value)
    raise _PollFailure("protocol", f"unexpected value type {type(value).__name__}")


def _auth_fingerprint(target: SnmpTarget, auth_key: str | None, priv_key: str | None) -> bytes:
    h = hashlib.sha256()
    for part in (target.auth_protocol, auth_key, target.priv_protocol, priv_key):
        h.update(repr(part).encode() + b"\0")
    return h.digest()


class SnmpPoller:
    """Polls switches' IF-MIB counters; one socket per path (fast v2c, fast v3, pysnmp) for all
    targets.

    The constructor does no I/O: `await start()` opens the fast paths' sockets and `await
    close()` waits for polls in flight. pysnmp's engine (its socket, and ≈1 s of CPU for its MIB
    view, once per process) is built at start() only when a fast path is off; otherwise by the
    first poll that falls back to it: a fleet the fast paths read never imports pysnmp's hlapi
    (~20 MB of RSS, issue 10).
    """

    def __init__(
        self,
        *,
        wall: Callable[[], datetime],
        mono: Callable[[], float],
        max_concurrency: int = 32,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        local_address: tuple[str, int] = ("0.0.0.0", 0),
        fast_v2c: bool = True,
        fast_v3: bool | None = None,
    ) -> None:
        """`fast_v2c` polls v2c switches with the project's own BER codec (drivers/snmp/ber.py)
        instead of pysnmp's; `fast_v3` (by default as `fast_v2c`) does the same for SNMPv3
        switches, with the USM of drivers/snmp/usm.py. A switch whose replies the fast path
        cannot read falls back to pysnmp, and so does one whose privacy protocol it lacks."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._wall = wall
        self._mono = mono
        self._max_concurrency = max_concurrency
        self._rcvbuf_request = rcvbuf_bytes
        self._local_address = local_address
        self._started = False
        self._engine: SnmpEngine | None = None
        self._sock: socket.socket | None = None
        self._sem: asyncio.Semaphore | None = None
        self._idle: asyncio.Condition | None = None
        self._usm_gate: _UsmGate | None = None
        self._in_flight = 0
        self._closing = False
        self._targets: dict[tuple[str, int, float, int], UdpTransportTarget] = {}
        self._fast_enabled = fast_v2c
        self._fast: FastV2cClient | None = None
        self._fast_sock: socket.socket | None = None
        self._fast_state: dict[str, _FastState] = {}
        self._fast3_enabled = fast_v2c if fast_v3 is None else fast_v3
        self._fast3: FastV3Client | None = None
        self._fast3_sock: socket.socket | None = None
        # Switches polled through pysnmp because the fast path could not read them: name ->
        # how many polls fell back (a counter for metrics; the first one is logged).
        self._fallbacks: dict[str, int] = {}
        self._fallback_reason: dict[str, str] = {}

    async def start(self) -> None:
        if self._started:
            return
        if self._fast_enabled:
            fast_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                _raise_rcvbuf(fast_sock, self._rcvbuf_request)
                fast_sock.bind((self._local_address[0], 0))
                fast_sock.setblocking(False)
                fast = FastV2cClient(fast_sock, first_request_id=1 + secrets.randbelow(2**30))
                await fast.open()
            except BaseException:
                fast_sock.close()
                raise
            self._fast, self._fast_sock = fast, fast_sock
        if self._fast3_enabled:
            fast3_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                _raise_rcvbuf(fast3_sock, self._rcvbuf_request)
                fast3_sock.bind((self._local_address[0], 0))
                fast3_sock.setblocking(False)
                fast3 = FastV3Client(fast3_sock, first_request_id=1 + secrets.randbelow(2**30),
                                     mono=self._mono)
                await fast3.open()
            except BaseException:
                fast3_sock.close()
                self._close_fast()
                raise
            self._fast3, self._fast3_sock = fast3, fast3_sock
        if not (self._fast_enabled and self._fast3_enabled):
            # Every switch of that version goes through pysnmp: its first poll must not pay
            # for the engine.
            try:
                self._pysnmp_engine()
            except BaseException:
                self._close_fast()
                raise
        self._sem = asyncio.Semaphore(self._max_concurrency)
        self._idle = asyncio.Condition()
        self._usm_gate = _UsmGate()
        self._closing = False
        self._started = True

    def _pysnmp_engine(self) -> SnmpEngine:
        """pysnmp's engine and its socket, built at the first call. Nothing in it awaits, so two
        polls on the loop never both build one."""
        if self._engine is not None:
            return self._engine
        from pysnmp.carrier.asyncio.dgram import udp
        from pysnmp.entity import config as snmp_config
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

        engine = SnmpEngine()
        # All pysnmp targets share this one socket. Linux's default 208 KiB receive buffer
        # overflows at ~50 concurrent polls and the overflow looks like timeouts, so ask for more.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _raise_rcvbuf(sock, self._rcvbuf_request)
            sock.bind(self._local_address)
            sock.setblocking(False)
            transport = udp.UdpAsyncioTransport().open_server_mode(sock=sock)
            snmp_config.add_transport(engine, udp.DOMAIN_NAME, transport)
            _warm_mib_view(engine)
        except BaseException:
            engine.close_dispatcher()
            sock.close()
            raise
        self._engine, self._sock = engine, sock
        return engine

    def _close_fast(self) -> None:
        for client in (self._fast, self._fast3):
            if client is not None:
                client.close()
        for sock in (self._fast_sock, self._fast3_sock):
            if sock is not None:
                sock.close()
        self._fast = self._fast3 = None
        self._fast_sock = self._fast3_sock = None

    async def close(self) -> None:
        """Refuse new polls, wait for those in flight (bounded by their timeouts), release."""
        if not self._started or self._idle is None:
            return
        self._closing = True
        async with self._idle:
            await self._idle.wait_for(lambda: self._in_flight == 0)
        self._started = False
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
        self._close_fast()
        if self._sock is not None:
            self._sock.close()  # the transport closed it already; this is for a failed start
            self._sock = None
        self._targets.clear()

    async def __aenter__(self) -> SnmpPoller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open_sockets(self) -> list[socket.socket]:
        return [s for s in (self._sock, self._fast_sock, self._fast3_sock)
                if s is not None and s.fileno() >= 0]

    @property
    def rcvbuf_bytes(self) -> int | None:
        """The receive buffer the kernel granted (it doubles the request, capped by rmem_max);
        the smaller of the pysnmp socket's and the fast v2c socket's."""
        socks = self._open_sockets()
        if not socks:
            return None
        return min(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in socks)

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped on our sockets (full receive buffer), from /proc/net/udp."""
        socks = self._open_sockets()
        if not socks:
            return None
        inodes = {str(os.fstat(s.fileno()).st_ino) for s in socks}
        total, seen = 0, 0
        try:
            with open("/proc/net/udp", encoding="ascii") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] in inodes:
                        total += int(cols[12])
                        seen += 1
        except OSError:
            return None
        return total if seen else None

    def fast_path_fallbacks(self) -> dict[str, int]:
        """Per switch, the polls that went through pysnmp because the fast v2c path could not
        read the agent's replies (a monotonic counter, for metrics)."""
        return dict(self._fallbacks)

    def fast_path_stats(self) -> dict[str, int]:
        """The fast v2c path's counters since start(): GETBULK requests sent (each try), replies
        dropped as not ours, ICMP errors seen; empty when the fast path is off."""
        if self._fast is None:
            return {}
        return {"requests": self._fast.sent, "unmatched_replies": self._fast.unmatched,
                "icmp_errors": self._fast.icmp_errors}

    def fast_v3_path_stats(self) -> dict[str, int]:
        """The fast v3 path's counters since start(): requests sent (each try, discovery
        included), replies dropped as not ours or not authentic, engine discoveries, and
        resynchronisations after a notInTimeWindow or unknownEngineID Report; empty when off."""
        f = self._fast3
        if f is None:
            return {}
        return {"requests": f.sent, "unmatched_replies": f.unmatched + f.dropped,
                "icmp_errors": f.icmp_errors, "discoveries": f.discoveries,
                "resyncs": f.resyncs}

    def fast_path_fallback_reasons(self) -> dict[str, str]:
        """Per switch, why it was moved to pysnmp (the first reason seen)."""
        return dict(self._fallback_reason)

    async def poll_many(self, targets: Iterable[SnmpTarget]) -> list[PortPoll]:
        """Poll targets concurrently (at most max_concurrency at once), results in input order."""
        return list(await asyncio.gather(*(self.poll(t) for t in targets)))

    async def poll(self, target: SnmpTarget) -> PortPoll:
        """One poll of one switch. Failures come back as PortPoll.error, never as exceptions."""
        if not self._started or self._sem is None or self._idle is None:
            raise RuntimeError("SnmpPoller.poll() before start() or after close()")
        if self._closing:
            return self._failed(target, self._mono(), "transport", "poller is closing")
        # Counted from here, so close() also waits for polls still queued at the gate or the
        # semaphore; they must not reach an engine that is already gone.
        self._in_flight += 1
        try:
            gate, scalars = self._credentials(target)
            # The gate comes first: a poll waiting for its key set must not hold a slot.
            async with gate, self._sem:
                started = self._mono()
                try:
                    if self._uses_fast_path(target):
                        try:
                            return await self._poll_fast(target, started, scalars)
                        except FastPathUnavailable as exc:
                            self._fall_back(target, str(exc))
                    return await self._poll(target, scalars, started)
                except _PollFailure as failure:
                    return self._failed(target, started, failure.kind, failure.detail)
                except (PySnmpError, PyAsn1Error, OSError) as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                    return self._failed(target, started, "transport", detail)
        finally:
            self._in_flight -= 1
            async with self._idle:
                self._idle.notify_all()

    def _credentials(
        self, target: SnmpTarget
    ) -> tuple[contextlib.AbstractAsyncContextManager[None], list[Oid]]:
        """The gate this poll must pass, and the scalars to ask for."""
        if target.version == "2c":
            return contextlib.nullcontext(), [_SYS_UPTIME_OBJECT]
        assert target.user is not None and self._usm_gate is not None
        auth_key, priv_key = reveal(target.auth_key), reveal(target.priv_key)
        gate = self._usm_gate.hold(target.user, _auth_fingerprint(target, auth_key, priv_key))
        # snmpEngineBoots as a non-repeater costs one varbind; reading it out of pysnmp's USM
        # timeline would mean private attributes.
        return gate, [_SYS_UPTIME_OBJECT, _SNMP_ENGINE_BOOTS_OBJECT]

    def _failed(
        self, target: SnmpTarget, started: float, kind: PollErrorKind, detail: str
    ) -> PortPoll:
        now = self._mono()
        return PortPoll(
            switch=target.name,
            at=self._wall(),
            now=now,
            sys_uptime_ticks=None,
            ports={},
            error=kind,
            error_detail=detail,
            duration_s=max(0.0, now - started),
        )

    def _uses_fast_path(self, target: SnmpTarget) -> bool:
        if target.version == "2c" and self._fast is None:
            return False
        if target.version == "3" and (self._fast3 is None or _usm_credentials(target) is None):
            return False
        if target.name in self._fallbacks:
            self._fallbacks[target.name] += 1  # one more poll through pysnmp
            return False
        return True

    def _fall_back(self, target: SnmpTarget, reason: str) -> None:
        # From now on this switch is polled through pysnmp (until the poller is rebuilt): an
        # agent whose replies we cannot read once will send the same encoding again.
        count = self._fallbacks.get(target.name, 0)
        if count == 0:
            self._fallback_reason[target.name] = reason
            log.warning("SNMP %s: fast v%s path cannot read this agent (%s); polling it through"
                        " pysnmp from now on", target.name, target.version, reason)
        self._fallbacks[target.name] = count + 1

    async def _poll_fast(self, target: SnmpTarget, started: float, scalars: list[Oid]) -> PortPoll:
        """One poll through FastV2cClient or FastV3Client and ber.py: the same walk, the same
        PortPoll."""
        send: Callable[[list[Oid], int, int], Awaitable[ber.Message]]
        if target.version == "2c":
            fast = self._fast
            assert fast is not None
            community = reveal(target.community)
            assert community is not None  # SnmpTarget refuses v2c without one
            try:
                wire_community = community.encode("iso-8859-1")  # what pysnmp puts on the wire
            except UnicodeEncodeError:
                raise FastPathUnavailable("community is not ISO 8859-1") from None

            def send(request: list[Oid], non_repeaters: int, reps: int) -> Awaitable[ber.Message]:
                return fast.get_bulk(addr, wire_community, non_repeaters, reps, request,
                                     timeout_s=target.timeout_s, retries=target.retries)
        else:
            fast3, creds = self._fast3, _usm_credentials(target)
            assert fast3 is not None and creds is not None  # _uses_fast_path checked

            def send(request: list[Oid], non_repeaters: int, reps: int) -> Awaitable[ber.Message]:
                return fast3.get_bulk(addr, creds, non_repeaters, reps, request,
                                      timeout_s=target.timeout_s, retries=target.retries)
        try:
            ipaddress.IPv4Address(target.host)
            addr = (target.host, target.port)
        except ValueError:
            addr = await self._resolve_v4(target)
        state = self._fast_state.setdefault(target.name, _FastState())
        stamp = _Stamp(self._wall(), started)

        async def bulk(request: list[Oid], non_repeaters: int, round_no: int) -> list[VarBind]:
            width = max(1, len(request) - non_repeaters)
            reps = target.max_repetitions if state.rows is None else state.rows + 1
            reps = min(reps, max(1, _MAX_SIZED_VARBINDS // width))
            if state.ceiling is not None:
                reps = min(reps, state.ceiling)
            while True:
                where = "" if round_no == 0 else f" (GETBULK round {round_no + 1})"
                try:
                    msg = await send(request, non_repeaters, reps)
                except BulkTimeout:
                    raise _PollFailure("timeout", f"no response before timeout{where}") from None
                except usm.UsmError as exc:
                    # A Report: the same kind and words as pysnmp's error indication.
                    kind: PollErrorKind = "auth" if exc.kind == "auth" else "protocol"
                    raise _PollFailure(kind, f"{exc.detail}{where}") from None
                if msg.error_status == _TOO_BIG and reps > 1:
                    # RFC 3416 4.2.3: the reply would not fit. Ask for half, and remember it.
                    reps = max(1, reps // 2)
                    state.ceiling = reps
                    continue
                if msg.error_status:
                    status = msg.error_status
                    name = (_ERROR_STATUS_NAMES[status] if 0 <= status < len(_ERROR_STATUS_NAMES)
                            else str(status))
                    raise _failure_from_status(name, msg.error_index, request, round_no)
                stamp.at, stamp.now = self._wall(), self._mono()
                return msg.varbinds

        poll, rows = await self._walk_all(target, bulk, scalars, stamp, started)
        state.rows = rows
        return poll

    async def _resolve_v4(self, target: SnmpTarget) -> tuple[str, int]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            # IPv6-only names and literals are pysnmp's (its UDP transport decides what to do).
            raise FastPathUnavailable(f"no IPv4 address for {target.host}: {exc}") from None
        host, port = infos[0][4][:2]
        return str(host), int(port)

    async def _poll(self, target: SnmpTarget, scalars: list[Oid], started: float) -> PortPoll:
        """One poll through pysnmp's hlapi."""
        engine = self._pysnmp_engine()
        auth = _pysnmp_auth(target)
        transport = await self._transport(target)
        stamp = _Stamp(self._wall(), started)

        async def bulk(request: list[Oid], non_repeaters: int, round_no: int) -> list[VarBind]:
            return await self._bulk_pysnmp(engine, target, auth, transport, request, non_repeaters,
                                           round_no, stamp)

        poll, _rows = await self._walk_all(target, bulk, scalars, stamp, started)
        return poll

    async def _walk_all(
        self, target: SnmpTarget, bulk: BulkFn, scalars: list[Oid], stamp: _Stamp, started: float
    ) -> tuple[PortPoll, int]:
        """The whole poll over one GETBULK function, and the primary walk's longest column."""
        varbinds = await _walk(bulk, PRIMARY_COLUMNS, scalars)
        # Split once: the row count, the Counter64 check and the parse all read the columns.
        columns, found_scalars, problems = split_columns(varbinds)
        rows = max(map(len, columns.values()), default=0)
        if columns_without_hc(columns):
            # Only for agents (or ports) without Counter64: one more walk of two columns.
            varbinds += await _walk(bulk, FALLBACK_COLUMNS, [])
            walk = parse_if_walk(varbinds)
        else:
            walk = parse_columns(columns, found_scalars, problems)
        return PortPoll(
            switch=target.name,
            at=stamp.at,
            now=stamp.now,
            sys_uptime_ticks=walk.sys_uptime_ticks,
            ports=walk.ports,
            engine_boots=walk.engine_boots,
            error="partial" if walk.problems else None,
            error_detail=walk.detail(),
            duration_s=max(0.0, stamp.now - started),
        ), rows

    async def _transport(self, target: SnmpTarget) -> UdpTransportTarget:
        key = (target.host, target.port, target.timeout_s, target.retries)
        cached = self._targets.get(key)
        if cached is not None:
            return cached
        from pysnmp.hlapi.v3arch.asyncio import UdpTransportTarget

        made = await UdpTransportTarget.create(
            (target.host, target.port), timeout=target.timeout_s, retries=target.retries
        )
        # Only addresses are cached: a host name is resolved again on every poll.
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(target.host)
            self._targets[key] = made
        return made

    async def _bulk_pysnmp(
        self,
        engine: SnmpEngine,
        target: SnmpTarget,
        auth: CommunityData | UsmUserData,
        transport: UdpTransportTarget,
        request: list[Oid],
        non_repeaters: int,
        round_no: int,
        stamp: _Stamp,
    ) -> list[VarBind]:
        """One GETBULK through pysnmp's hlapi; the reply's varbinds as plain values."""
        from pysnmp.hlapi.v3arch.asyncio import ContextData, ObjectIdentity, ObjectType, bulk_cmd

        try:
            answer = await asyncio.wait_for(
                bulk_cmd(
                    engine,
                    auth,
                    transport,
                    ContextData(),
                    non_repeaters,
                    target.max_repetitions,
                    *(ObjectType(ObjectIdentity(oid)) for oid in request),
                    lookupMib=False,
                ),
                # pysnmp times requests out itself; this only guards against a lost callback.
                timeout=target.timeout_s * (target.retries + 6) + 5,
            )
        except TimeoutError:
            raise _PollFailure("timeout", "no callback from pysnmp before deadline") from None
        error_indication, error_status, error_index, reply = answer
        if error_indication:
            raise _failure_from_indication(error_indication, round_no)
        if error_status and int(error_status):
            raise _failure_from_status(error_status, int(error_index), request, round_no)
        stamp.at, stamp.now = self._wall(), self._mono()
        return [(tuple(oid), plain_value(value)) for oid, value in reply]


def _pysnmp_auth(target: SnmpTarget) -> CommunityData | UsmUserData:
    """pysnmp's auth object for the target."""
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData

    if target.version == "2c":
        return CommunityData(reveal(target.community), mpModel=1)
    auth_key, priv_key = reveal(target.auth_key), reveal(target.priv_key)
    return UsmUserData(
        target.user,
        authKey=auth_key,
        privKey=priv_key,
        authProtocol=AUTH_PROTOCOLS[target.auth_protocol] if auth_key else None,
        privProtocol=PRIV_PROTOCOLS[target.priv_protocol]
        if priv_key and target.priv_protocol
        else None,
    )


def _usm_credentials(target: SnmpTarget) -> usm.Credentials | None:
    """The target's USM user for the fast v3 path, at the security level pysnmp would use
    (auth with an auth key, privacy with a privacy key too); None when only pysnmp can poll it:
    a privacy protocol usm.py lacks, or names and keys beyond ASCII, whose encoding on the wire
    is pysnmp's to decide."""
    auth_key, priv_key = reveal(target.auth_key), reveal(target.priv_key)
    try:
        user = (target.user or "").encode("ascii")
        auth = auth_key.encode("ascii") if auth_key else b""
        priv = priv_key.encode("ascii") if priv_key else b""
    except UnicodeEncodeError:
        return None
    if priv and target.priv_protocol not in usm.PRIV_PROTOCOLS:
        return None
    try:
        return usm.Credentials(
            user,
            auth_protocol=target.auth_protocol if auth else None,
            auth_password=auth,
            priv_protocol=target.priv_protocol if priv else None,
            priv_password=priv,
        )
    except ValueError:
        return None


async def _walk(bulk: BulkFn, columns: Sequence[Oid], scalars: Sequence[Oid]) -> list[VarBind]:
    """Walk table columns side by side with GETBULK until every column has ended.

    Each request asks only for the columns still open, each from its own last OID (see
    absorb_bulk_rows); `scalars` ride along as non-repeaters in the first request.
    """
    last = {col: col for col in columns}
    active = list(columns)
    out: list[VarBind] = []
    pending_scalars = list(scalars)
    for round_no in range(_MAX_ROUNDS):
        if not active and not pending_scalars:
            return out
        request = [*pending_scalars, *(last[c] for c in active)]
        reply = await bulk(request, len(pending_scalars), round_no)
        out += reply[: len(pending_scalars)]
        repeaters = reply[len(pending_scalars) :]
        pending_scalars = []
        if not active:
            return out
        if not repeaters:
            raise _PollFailure("protocol", f"GETBULK reply with no rows in round {round_no}")
        try:
            step = absorb_bulk_rows(active, last, repeaters)
        except ValueError as exc:
            raise _PollFailure("protocol", str(exc)) from None
        out += step.varbinds
        last = step.last
        active = [c for c in active if c not in step.ended]
    raise _PollFailure("protocol", f"walk did not end after {_MAX_ROUNDS} GETBULK rounds")


def _failure_from_indication(indication: object, round_no: int) -> _PollFailure:
    where = "" if round_no == 0 else f" (GETBULK round {round_no + 1})"
    if isinstance(indication, _TIMEOUT):
        return _PollFailure("timeout", f"no response before timeout{where}")
    if isinstance(indication, _AUTH):
        return _PollFailure("auth", f"{indication}{where}")
    return _PollFailure("protocol", f"{type(indication).__name__}: {indication}{where}")


def _failure_from_status(
    status: Any, index: int, request: Sequence[Oid], round_no: int
) -> _PollFailure:
    name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
    at = ""
    if 0 < index <= len(request):
        at = f" at {'.'.join(map(str, request[index - 1]))}"
    kind: PollErrorKind = "auth" if name in _AUTH_STATUSES else "protocol"
    return _PollFailure(kind, f"agent replied {name}{at} (GETBULK round {round_no + 1})")
