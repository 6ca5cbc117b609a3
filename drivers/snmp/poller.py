"""SNMP poller: GETBULK walks of IF-MIB over pysnmp 7 asyncio, each poll returned as a PortPoll."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as snmp_config
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    usm3DESEDEPrivProtocol,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.hlapi.varbinds import CommandGeneratorVarBinds
from pysnmp.proto import errind, rfc1905
from rackwarden.policies.facts import PollErrorKind, PortPoll

from .ifmib import (
    FALLBACK_COLUMNS,
    PRIMARY_COLUMNS,
    Absent,
    Oid,
    SnmpValue,
    VarBind,
    absorb_bulk_rows,
    indexes_without_hc,
    parse_if_walk,
)

AUTH_PROTOCOLS: Mapping[str, tuple[int, ...]] = {
    "md5": usmHMACMD5AuthProtocol,
    "sha": usmHMACSHAAuthProtocol,
    "sha224": usmHMAC128SHA224AuthProtocol,
    "sha256": usmHMAC192SHA256AuthProtocol,
    "sha384": usmHMAC256SHA384AuthProtocol,
    "sha512": usmHMAC384SHA512AuthProtocol,
}
PRIV_PROTOCOLS: Mapping[str, tuple[int, ...]] = {
    "des": usmDESPrivProtocol,
    "3des": usm3DESEDEPrivProtocol,
    "aes": usmAesCfb128Protocol,
    "aes128": usmAesCfb128Protocol,
    # AES-192/256 key extension as Cisco does it (draft-reeder); the *blmt ones are Blumenthal's.
    "aes192": usmAesCfb192Protocol,
    "aes256": usmAesCfb256Protocol,
    "aes192blmt": usmAesBlumenthalCfb192Protocol,
    "aes256blmt": usmAesBlumenthalCfb256Protocol,
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
    """Polls switches' IF-MIB counters; one SNMP engine and one UDP socket for all targets.

    The constructor does no I/O: `await start()` builds the engine (≈1 s of CPU for pysnmp's MIB
    view, paid once, not in the first poll) and `await close()` waits for polls in flight.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], datetime],
        mono: Callable[[], float],
        max_concurrency: int = 32,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        local_address: tuple[str, int] = ("0.0.0.0", 0),
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._wall = wall
        self._mono = mono
        self._max_concurrency = max_concurrency
        self._rcvbuf_request = rcvbuf_bytes
        self._local_address = local_address
        self._engine: SnmpEngine | None = None
        self._sock: socket.socket | None = None
        self._sem: asyncio.Semaphore | None = None
        self._idle: asyncio.Condition | None = None
        self._usm_gate: _UsmGate | None = None
        self._in_flight = 0
        self._closing = False
        self._targets: dict[tuple[str, int, float, int], UdpTransportTarget] = {}

    async def start(self) -> None:
        if self._engine is not None:
            return
        engine = SnmpEngine()
        # All targets share this one socket. Linux's default 208 KiB receive buffer overflows
        # at ~50 concurrent polls and the overflow looks like timeouts, so ask for more.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _raise_rcvbuf(sock, self._rcvbuf_request)
            sock.bind(self._local_address)
            sock.setblocking(False)
            transport = udp.UdpAsyncioTransport().open_server_mode(sock=sock)
            snmp_config.add_transport(engine, udp.DOMAIN_NAME, transport)
        except BaseException:
            sock.close()
            raise
        _warm_mib_view(engine)
        self._engine = engine
        self._sock = sock
        self._sem = asyncio.Semaphore(self._max_concurrency)
        self._idle = asyncio.Condition()
        self._usm_gate = _UsmGate()
        self._closing = False

    async def close(self) -> None:
        """Refuse new polls, wait for those in flight (bounded by their timeouts), release."""
        if self._engine is None or self._idle is None:
            return
        self._closing = True
        async with self._idle:
            await self._idle.wait_for(lambda: self._in_flight == 0)
        self._engine.close_dispatcher()
        self._engine = None
        if self._sock is not None:
            self._sock.close()  # the transport closed it already; this is for a failed start
            self._sock = None
        self._targets.clear()

    async def __aenter__(self) -> SnmpPoller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def rcvbuf_bytes(self) -> int | None:
        """The receive buffer the kernel granted (it doubles the request, capped by rmem_max)."""
        if self._sock is None or self._sock.fileno() < 0:
            return None
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped on our socket (full receive buffer), from /proc/net/udp."""
        if self._sock is None or self._sock.fileno() < 0:
            return None
        inode = os.fstat(self._sock.fileno()).st_ino
        try:
            with open("/proc/net/udp", encoding="ascii") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[12])
        except OSError:
            return None
        return None

    async def poll_many(self, targets: Iterable[SnmpTarget]) -> list[PortPoll]:
        """Poll targets concurrently (at most max_concurrency at once), results in input order."""
        return list(await asyncio.gather(*(self.poll(t) for t in targets)))

    async def poll(self, target: SnmpTarget) -> PortPoll:
        """One poll of one switch. Failures come back as PortPoll.error, never as exceptions."""
        if self._engine is None or self._sem is None or self._idle is None:
            raise RuntimeError("SnmpPoller.poll() before start() or after close()")
        if self._closing:
            return self._failed(target, self._mono(), "transport", "poller is closing")
        # Counted from here, so close() also waits for polls still queued at the gate or the
        # semaphore; they must not reach an engine that is already gone.
        self._in_flight += 1
        try:
            auth, gate, scalars = self._credentials(target)
            # The gate comes first: a poll waiting for its key set must not hold a slot.
            async with gate, self._sem:
                started = self._mono()
                try:
                    return await self._poll(target, auth, scalars, started)
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
    ) -> tuple[
        CommunityData | UsmUserData, contextlib.AbstractAsyncContextManager[None], list[Oid]
    ]:
        """pysnmp's auth object, the gate this poll must pass, and the scalars to ask for."""
        if target.version == "2c":
            return (
                CommunityData(reveal(target.community), mpModel=1),
                contextlib.nullcontext(),
                [_SYS_UPTIME_OBJECT],
            )
        assert target.user is not None and self._usm_gate is not None
        auth_key, priv_key = reveal(target.auth_key), reveal(target.priv_key)
        auth = UsmUserData(
            target.user,
            authKey=auth_key,
            privKey=priv_key,
            authProtocol=AUTH_PROTOCOLS[target.auth_protocol] if auth_key else None,
            privProtocol=PRIV_PROTOCOLS[target.priv_protocol]
            if priv_key and target.priv_protocol
            else None,
        )
        gate = self._usm_gate.hold(target.user, _auth_fingerprint(target, auth_key, priv_key))
        # snmpEngineBoots as a non-repeater costs one varbind; reading it out of pysnmp's USM
        # timeline would mean private attributes.
        return auth, gate, [_SYS_UPTIME_OBJECT, _SNMP_ENGINE_BOOTS_OBJECT]

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

    async def _poll(
        self,
        target: SnmpTarget,
        auth: CommunityData | UsmUserData,
        scalars: list[Oid],
        started: float,
    ) -> PortPoll:
        transport = await self._transport(target)
        stamp = _Stamp(self._wall(), started)
        varbinds = await self._walk(target, auth, transport, PRIMARY_COLUMNS, scalars, stamp)
        if indexes_without_hc(varbinds):
            # Only for agents (or ports) without Counter64: one more walk of two columns.
            varbinds += await self._walk(target, auth, transport, FALLBACK_COLUMNS, [], stamp)
        walk = parse_if_walk(varbinds)
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
        )

    async def _transport(self, target: SnmpTarget) -> UdpTransportTarget:
        key = (target.host, target.port, target.timeout_s, target.retries)
        cached = self._targets.get(key)
        if cached is not None:
            return cached
        made = await UdpTransportTarget.create(
            (target.host, target.port), timeout=target.timeout_s, retries=target.retries
        )
        # Only addresses are cached: a host name is resolved again on every poll.
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(target.host)
            self._targets[key] = made
        return made

    async def _walk(
        self,
        target: SnmpTarget,
        auth: CommunityData | UsmUserData,
        transport: UdpTransportTarget,
        columns: Sequence[Oid],
        scalars: Sequence[Oid],
        stamp: _Stamp,
    ) -> list[VarBind]:
        """Walk table columns side by side with GETBULK until every column has ended.

        Each request asks only for the columns still open, each from its own last OID (see
        absorb_bulk_rows); `scalars` ride along as non-repeaters in the first request.
        """
        assert self._engine is not None
        last = {col: col for col in columns}
        active = list(columns)
        out: list[VarBind] = []
        pending_scalars = list(scalars)
        for round_no in range(_MAX_ROUNDS):
            if not active and not pending_scalars:
                return out
            request = [*pending_scalars, *(last[c] for c in active)]
            try:
                answer = await asyncio.wait_for(
                    bulk_cmd(
                        self._engine,
                        auth,
                        transport,
                        ContextData(),
                        len(pending_scalars),
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
            for oid, value in reply[: len(pending_scalars)]:
                out.append((tuple(oid), plain_value(value)))
            repeaters = reply[len(pending_scalars) :]
            pending_scalars = []
            if not active:
                return out
            if not repeaters:
                raise _PollFailure("protocol", f"GETBULK reply with no rows in round {round_no}")
            try:
                step = absorb_bulk_rows(
                    active, last, [(tuple(oid), plain_value(value)) for oid, value in repeaters]
                )
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
