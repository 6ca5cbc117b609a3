"""The SNMPv3 message and its User-based Security Model (RFC 3412 6, RFC 3414), for exactly the
requests the poller sends (GetBulk, and the empty Get of engine discovery) and the Responses
and Reports it gets back.

SNMPv3Message ::= SEQUENCE { msgVersion INTEGER (3),
    msgGlobalData SEQUENCE { msgID, msgMaxSize INTEGER, msgFlags OCTET STRING (SIZE(1)),
                             msgSecurityModel INTEGER },
    msgSecurityParameters OCTET STRING, -- holds UsmSecurityParameters, BER
    msgData CHOICE { plaintext ScopedPDU, encryptedPDU OCTET STRING } }
UsmSecurityParameters ::= SEQUENCE { msgAuthoritativeEngineID OCTET STRING,
    msgAuthoritativeEngineBoots INTEGER, msgAuthoritativeEngineTime INTEGER,
    msgUserName OCTET STRING (SIZE(0..32)), msgAuthenticationParameters OCTET STRING,
    msgPrivacyParameters OCTET STRING }
ScopedPDU ::= SEQUENCE { contextEngineID OCTET STRING, contextName OCTET STRING, data PDU }

Decoding goes through ber.py's bounded reader: every length is checked against its enclosing
one and every field against its range, and anything else is a `BerError` naming the offset.
Authentication is HMAC-MD5-96 and HMAC-SHA-96 (RFC 3414 6, 7) and the RFC 7860 SHA-2 HMACs;
privacy is CBC-DES (RFC 3414 8) and CFB128-AES-128 (RFC 3826), on the `cryptography` package
pysnmp itself uses for privacy. Other privacy protocols (3DES, the AES-192/256 key extensions)
are not here: the poller polls those switches through pysnmp.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import ber
from .ifmib import Oid, VarBind

VERSION_3 = 3
USM_SECURITY_MODEL = 3
FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE = 0x01, 0x02, 0x04
# What we accept in a reply, and offer in requests: a UDP datagram's limit (net-snmp's value).
MAX_SIZE = 65_507
_INT31 = 2**31 - 1
MAX_ENGINE_ID = 32  # RFC 3411 SnmpEngineID SIZE(5..32); empty only in discovery
MAX_USER_NAME = 32
# RFC 3414 3.2 7b: an authentic message may be up to 150 s behind our notion of the agent's time.
TIME_WINDOW_S = 150

# usmStats (RFC 3414 5) report OIDs -> what pysnmp calls them (its errind texts, so a poll's
# error_detail reads the same whichever path took it).
UNSUPPORTED_SEC_LEVEL: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0)
NOT_IN_TIME_WINDOW: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0)
UNKNOWN_USER_NAME: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0)
UNKNOWN_ENGINE_ID: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)
WRONG_DIGEST: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)
DECRYPTION_ERROR: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0)
REPORT_TEXT: dict[Oid, str] = {
    UNSUPPORTED_SEC_LEVEL: "Unsupported SNMP security level",
    NOT_IN_TIME_WINDOW: "SNMP message timing parameters not in windows of trust",
    UNKNOWN_USER_NAME: "Unknown USM user",
    UNKNOWN_ENGINE_ID: "Unknown SNMP engine ID encountered",
    WRONG_DIGEST: "Wrong SNMP PDU digest",
    DECRYPTION_ERROR: "Ciphering services not available or ciphertext is broken",
}


@dataclass(frozen=True, slots=True)
class AuthProtocol:
    name: str
    hash: Callable[..., Any]  # a hashlib constructor
    digest_length: int  # octets of msgAuthenticationParameters (the truncated HMAC)


AUTH_PROTOCOLS: dict[str, AuthProtocol] = {
    "md5": AuthProtocol("md5", hashlib.md5, 12),  # RFC 3414 6: HMAC-MD5-96
    "sha": AuthProtocol("sha", hashlib.sha1, 12),  # RFC 3414 7: HMAC-SHA-96
    "sha224": AuthProtocol("sha224", hashlib.sha224, 16),  # RFC 7860: usmHMAC128SHA224
    "sha256": AuthProtocol("sha256", hashlib.sha256, 24),  # usmHMAC192SHA256
    "sha384": AuthProtocol("sha384", hashlib.sha384, 32),  # usmHMAC256SHA384
    "sha512": AuthProtocol("sha512", hashlib.sha512, 48),  # usmHMAC384SHA512
}
PRIV_PROTOCOLS = frozenset({"des", "aes", "aes128"})


class UsmError(Exception):
    """The agent (or the reply) says no: `kind` is the poller's error kind, `detail` its text."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# --- keys (RFC 3414 A.2) ---------------------------------------------------------------------

_KU_CACHE: dict[tuple[str, bytes], bytes] = {}
_KUL_CACHE: dict[tuple[str, bytes, bytes], bytes] = {}
_KEY_CACHE_MAX = 4096


def password_to_key(protocol: str, password: bytes) -> bytes:
    """Ku: the hash of 1 MiB of the password repeated (RFC 3414 A.2.1/A.2.2; RFC 7860 4.2.2
    for SHA-2). Cached: it costs ~2 ms and every poll of a fleet-wide user would pay it."""
    if not password:
        raise ValueError("an SNMPv3 password must not be empty")
    key = (protocol, password)
    ku = _KU_CACHE.get(key)
    if ku is None:
        stream = password * (1_048_576 // len(password) + 1)
        ku = AUTH_PROTOCOLS[protocol].hash(stream[:1_048_576]).digest()
        if len(_KU_CACHE) >= _KEY_CACHE_MAX:
            _KU_CACHE.clear()
        _KU_CACHE[key] = ku
    return ku


def localize_key(protocol: str, ku: bytes, engine_id: bytes) -> bytes:
    """Kul = H(Ku || snmpEngineID || Ku) (RFC 3414 A.2)."""
    key = (protocol, ku, engine_id)
    kul = _KUL_CACHE.get(key)
    if kul is None:
        kul = AUTH_PROTOCOLS[protocol].hash(ku + engine_id + ku).digest()
        if len(_KUL_CACHE) >= _KEY_CACHE_MAX:
            _KUL_CACHE.clear()
        _KUL_CACHE[key] = kul
    return kul


@dataclass(frozen=True, slots=True)
class Credentials:
    """One USM user as configured: passwords, not yet localised. repr() shows no secret."""

    user: bytes
    auth_protocol: str | None = None  # None: noAuthNoPriv
    auth_password: bytes = b""
    priv_protocol: str | None = None  # None: no privacy
    priv_password: bytes = b""

    def __post_init__(self) -> None:
        if len(self.user) > MAX_USER_NAME:
            raise ValueError(f"USM user name of {len(self.user)} octets is beyond {MAX_USER_NAME}")
        if self.auth_protocol is not None and self.auth_protocol not in AUTH_PROTOCOLS:
            raise ValueError(f"auth protocol {self.auth_protocol!r} is not supported here")
        if self.priv_protocol is not None:
            if self.priv_protocol not in PRIV_PROTOCOLS:
                raise ValueError(f"privacy protocol {self.priv_protocol!r} is not supported here")
            if self.auth_protocol is None:
                raise ValueError("privacy needs authentication (RFC 3414 3.1.1)")
        if self.auth_protocol is not None and not self.auth_password:
            raise ValueError("an SNMPv3 auth password must not be empty")
        if self.priv_protocol is not None and not self.priv_password:
            raise ValueError("an SNMPv3 privacy password must not be empty")

    def __repr__(self) -> str:
        return (f"Credentials(user={self.user!r}, auth={self.auth_protocol},"
                f" priv={self.priv_protocol})")

    @property
    def flags(self) -> int:
        """msgFlags of a request at this user's security level (always reportable)."""
        level = 0
        if self.auth_protocol is not None:
            level |= FLAG_AUTH
        if self.priv_protocol is not None:
            level |= FLAG_PRIV
        return level | FLAG_REPORTABLE

    def localized(self, engine_id: bytes) -> Keys:
        auth_key = priv_key = b""
        if self.auth_protocol is not None:
            auth_key = localize_key(self.auth_protocol,
                                    password_to_key(self.auth_protocol, self.auth_password),
                                    engine_id)
        if self.priv_protocol is not None:
            assert self.auth_protocol is not None
            # The privacy key is localised with the auth protocol's hash (RFC 3414 A.2, RFC 3826
            # 1.2); DES and AES-128 both take its first 16 octets.
            priv_key = localize_key(self.auth_protocol,
                                    password_to_key(self.auth_protocol, self.priv_password),
                                    engine_id)[:16]
        return Keys(self.auth_protocol, auth_key, self.priv_protocol, priv_key)


@dataclass(frozen=True, slots=True)
class Keys:
    """Localised keys for one engine ID."""

    auth_protocol: str | None
    auth_key: bytes
    priv_protocol: str | None
    priv_key: bytes

    def __repr__(self) -> str:
        return f"Keys(auth={self.auth_protocol}, priv={self.priv_protocol})"

    @property
    def digest_length(self) -> int:
        return 0 if self.auth_protocol is None else AUTH_PROTOCOLS[self.auth_protocol].digest_length

    def mac(self, whole: bytes) -> bytes:
        assert self.auth_protocol is not None
        proto = AUTH_PROTOCOLS[self.auth_protocol]
        return hmac.new(self.auth_key, whole, proto.hash).digest()[: proto.digest_length]


# --- privacy ---------------------------------------------------------------------------------


def encrypt(keys: Keys, boots: int, time: int, salt_counter: int, plaintext: bytes) -> tuple[
        bytes, bytes]:
    """(ciphertext, msgPrivacyParameters). `salt_counter` must differ for every message sent
    under the same key (the caller's counter): 32 bits for DES, 64 for AES."""
    if keys.priv_protocol == "des":
        # RFC 3414 8.1.1.1: salt = boots || our counter; IV = salt XOR pre-IV.
        salt = boots.to_bytes(4, "big") + (salt_counter & 0xFFFFFFFF).to_bytes(4, "big")
        iv = bytes(a ^ b for a, b in zip(salt, keys.priv_key[8:16], strict=True))
        padded = plaintext + bytes(8 - len(plaintext) % 8) if len(plaintext) % 8 else plaintext
        enc = _des(keys.priv_key[:8], iv).encryptor()
        return enc.update(padded) + enc.finalize(), salt
    # RFC 3826 3.1.2.1: IV = boots || time || salt, salt = our 64-bit counter.
    salt = (salt_counter & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
    iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt
    enc = Cipher(algorithms.AES(keys.priv_key[:16]), CFB(iv)).encryptor()
    return enc.update(plaintext) + enc.finalize(), salt


def decrypt(keys: Keys, boots: int, time: int, priv_params: bytes, ciphertext: bytes) -> bytes:
    """The scopedPDU's plaintext (DES leaves its padding after it); UsmError when the
    parameters cannot be right (RFC 3414 8.3.2, RFC 3826 3.3.2: a decryption error)."""
    if len(priv_params) != 8:
        raise UsmError("auth", f"{REPORT_TEXT[DECRYPTION_ERROR]}: msgPrivacyParameters of"
                       f" {len(priv_params)} octets, not 8")
    if keys.priv_protocol == "des":
        if len(ciphertext) % 8:
            raise UsmError("auth", f"{REPORT_TEXT[DECRYPTION_ERROR]}: DES ciphertext of"
                           f" {len(ciphertext)} octets")
        iv = bytes(a ^ b for a, b in zip(priv_params, keys.priv_key[8:16], strict=True))
        dec = _des(keys.priv_key[:8], iv).decryptor()
    else:
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + priv_params
        dec = Cipher(algorithms.AES(keys.priv_key[:16]), CFB(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()


def _des(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    # Single DES as TripleDES with the key three times (EDE with K1=K2=K3 is DES), as pysnmp
    # does: `cryptography` has no plain DES.
    return Cipher(TripleDES(key * 3), modes.CBC(iv))


# --- the message -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """An SNMPv3 message's outer fields, with where its digest sits and its (maybe encrypted)
    scopedPDU; nothing in it is authenticated yet."""

    msg_id: int
    max_size: int
    flags: int
    security_model: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_params: bytes
    auth_at: int  # offset of msgAuthenticationParameters' content in the message
    priv_params: bytes
    encrypted: bool
    scoped: bytes  # the plaintext ScopedPDU TLV, or the encryptedPDU's content


@dataclass(frozen=True, slots=True)
class ScopedPdu:
    context_engine_id: bytes
    context_name: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]
    tags: list[int]


def decode_envelope(data: bytes) -> Envelope:
    """The outer SNMPv3 message, strictly: BerError for anything outside RFC 3412/3414's grammar
    or ranges, for trailing bytes, and for a message that is not version 3."""
    end = len(data)
    if end > ber.MAX_MESSAGE_BYTES:
        raise ber.BerError(0, f"message of {end} bytes is beyond {ber.MAX_MESSAGE_BYTES}")
    pos, stop = ber.read_tlv(data, 0, end, ber.SEQUENCE, "message")
    if stop != end:
        raise ber.BerError(stop, f"{end - stop} bytes after the message")
    s, e = ber.read_tlv(data, pos, stop, ber.INTEGER, "msgVersion")
    version = ber.read_int(data, s, e, 0, _INT31, "msgVersion")
    if version != VERSION_3:
        raise ber.BerError(s, f"msgVersion {version}, not 3")
    hs, he = ber.read_tlv(data, e, stop, ber.SEQUENCE, "msgGlobalData")
    s, e = ber.read_tlv(data, hs, he, ber.INTEGER, "msgID")
    msg_id = ber.read_int(data, s, e, 0, _INT31, "msgID")
    s, e = ber.read_tlv(data, e, he, ber.INTEGER, "msgMaxSize")
    max_size = ber.read_int(data, s, e, 484, _INT31, "msgMaxSize")
    s, e = ber.read_tlv(data, e, he, ber.OCTET_STRING, "msgFlags")
    if e - s != 1:
        raise ber.BerError(s, f"msgFlags of {e - s} octets, not 1")
    flags = data[s]
    if flags & FLAG_PRIV and not flags & FLAG_AUTH:
        raise ber.BerError(s, "msgFlags ask for privacy without authentication")
    s, e = ber.read_tlv(data, e, he, ber.INTEGER, "msgSecurityModel")
    model = ber.read_int(data, s, e, 1, _INT31, "msgSecurityModel")
    if e != he:
        raise ber.BerError(e, "bytes after msgSecurityModel inside msgGlobalData")
    ss, se = ber.read_tlv(data, he, stop, ber.OCTET_STRING, "msgSecurityParameters")
    if model != USM_SECURITY_MODEL:
        raise ber.BerError(s, f"msgSecurityModel {model}, not USM (3)")
    us, ue = ber.read_tlv(data, ss, se, ber.SEQUENCE, "UsmSecurityParameters")
    if ue != se:
        raise ber.BerError(ue, "bytes after UsmSecurityParameters")
    s, e = ber.read_tlv(data, us, ue, ber.OCTET_STRING, "msgAuthoritativeEngineID")
    if e - s > MAX_ENGINE_ID:
        raise ber.BerError(s, f"msgAuthoritativeEngineID of {e - s} octets is beyond 32")
    engine_id = data[s:e]
    s, e = ber.read_tlv(data, e, ue, ber.INTEGER, "msgAuthoritativeEngineBoots")
    boots = ber.read_int(data, s, e, 0, _INT31, "msgAuthoritativeEngineBoots")
    s, e = ber.read_tlv(data, e, ue, ber.INTEGER, "msgAuthoritativeEngineTime")
    time = ber.read_int(data, s, e, 0, _INT31, "msgAuthoritativeEngineTime")
    s, e = ber.read_tlv(data, e, ue, ber.OCTET_STRING, "msgUserName")
    if e - s > MAX_USER_NAME:
        raise ber.BerError(s, f"msgUserName of {e - s} octets is beyond {MAX_USER_NAME}")
    user = data[s:e]
    auth_at, e = ber.read_tlv(data, e, ue, ber.OCTET_STRING, "msgAuthenticationParameters")
    if e - auth_at > 64:
        raise ber.BerError(auth_at, f"msgAuthenticationParameters of {e - auth_at} octets")
    auth_params = data[auth_at:e]
    s, e = ber.read_tlv(data, e, ue, ber.OCTET_STRING, "msgPrivacyParameters")
    if e - s > 64:
        raise ber.BerError(s, f"msgPrivacyParameters of {e - s} octets")
    priv_params = data[s:e]
    if e != ue:
        raise ber.BerError(e, "bytes after msgPrivacyParameters")
    if se >= stop:
        raise ber.BerError(se, "truncated: msgData missing")
    if flags & FLAG_PRIV:
        s, e = ber.read_tlv(data, se, stop, ber.OCTET_STRING, "encryptedPDU")
        scoped = data[s:e]
    else:
        s, e = ber.read_tlv(data, se, stop, ber.SEQUENCE, "ScopedPDU")
        scoped = data[se:e]
    if e != stop:
        raise ber.BerError(e, "bytes after msgData")
    return Envelope(msg_id, max_size, flags, model, bytes(engine_id), boots, time, bytes(user),
                    bytes(auth_params), auth_at, bytes(priv_params), bool(flags & FLAG_PRIV),
                    bytes(scoped))


def decode_scoped_pdu(data: bytes, *, padded: bool = False) -> ScopedPdu:
    """A ScopedPDU TLV. `padded`: bytes may follow it (a decrypted DES block's padding; RFC
    3414 8.1.1.2 leaves them for the decoder to ignore, as pysnmp does for every cipher)."""
    end = len(data)
    if end > ber.MAX_MESSAGE_BYTES:
        raise ber.BerError(0, f"ScopedPDU of {end} bytes is beyond {ber.MAX_MESSAGE_BYTES}")
    pos, stop = ber.read_tlv(data, 0, end, ber.SEQUENCE, "ScopedPDU")
    if stop != end and not padded:
        raise ber.BerError(stop, f"{end - stop} bytes after the ScopedPDU")
    if padded and end - stop > 16:
        raise ber.BerError(stop, f"{end - stop} bytes after the decrypted ScopedPDU")
    s, e = ber.read_tlv(data, pos, stop, ber.OCTET_STRING, "contextEngineID")
    if e - s > MAX_ENGINE_ID:
        raise ber.BerError(s, f"contextEngineID of {e - s} octets is beyond 32")
    context_engine_id = data[s:e]
    s, e = ber.read_tlv(data, e, stop, ber.OCTET_STRING, "contextName")
    if e - s > 255:  # SnmpAdminString SIZE(0..255)
        raise ber.BerError(s, f"contextName of {e - s} octets is beyond 255")
    context_name = data[s:e]
    pdu = ber.decode_pdu(data, e, stop)
    return ScopedPdu(bytes(context_engine_id), bytes(context_name), *pdu)


def authentic(data: bytes, env: Envelope, keys: Keys) -> bool:
    """Whether the message's digest is ours (RFC 3414 6.3.2 / 7.3.2, RFC 7860 4.2.2): the HMAC
    of the whole message with the digest zeroed, truncated, compared in constant time."""
    n = keys.digest_length
    if keys.auth_protocol is None or len(env.auth_params) != n:
        return False
    whole = data[: env.auth_at] + bytes(n) + data[env.auth_at + n :]
    return hmac.compare_digest(keys.mac(whole), env.auth_params)


def encode_request(
    *,
    msg_id: int,
    flags: int,
    engine_id: bytes,
    boots: int,
    time: int,
    user: bytes,
    keys: Keys | None,
    pdu: bytes,
    salt_counter: int = 0,
) -> bytes:
    """A whole SNMPv3 request around `pdu` (a ber.encode_pdu TLV), authenticated and encrypted
    as `flags` say, with `keys` localised for `engine_id`."""
    scoped = ber.tlv_bytes(
        ber.SEQUENCE,
        ber.tlv_bytes(ber.OCTET_STRING, engine_id) + ber.tlv_bytes(ber.OCTET_STRING, b"") + pdu,
    )
    priv_params = b""
    if flags & FLAG_PRIV:
        assert keys is not None and keys.priv_protocol is not None
        ciphertext, priv_params = encrypt(keys, boots, time, salt_counter, scoped)
        msg_data = ber.tlv_bytes(ber.OCTET_STRING, ciphertext)
    else:
        msg_data = scoped
    n = 0
    if flags & FLAG_AUTH:
        assert keys is not None and keys.auth_protocol is not None
        n = keys.digest_length
    head = (
        ber.tlv_bytes(ber.OCTET_STRING, engine_id)
        + ber.encode_value(ber.INTEGER, boots)
        + ber.encode_value(ber.INTEGER, time)
        + ber.tlv_bytes(ber.OCTET_STRING, user)
        + bytes((ber.OCTET_STRING, n))
    )
    usm_content = head + bytes(n) + ber.tlv_bytes(ber.OCTET_STRING, priv_params)
    usm = ber.tlv_bytes(ber.SEQUENCE, usm_content)
    sec = ber.tlv_bytes(ber.OCTET_STRING, usm)
    front = (
        ber.encode_value(ber.INTEGER, VERSION_3)
        + ber.tlv_bytes(
            ber.SEQUENCE,
            ber.encode_value(ber.INTEGER, msg_id)
            + ber.encode_value(ber.INTEGER, MAX_SIZE)
            + ber.tlv_bytes(ber.OCTET_STRING, bytes((flags,)))
            + ber.encode_value(ber.INTEGER, USM_SECURITY_MODEL),
        )
    )
    content = front + sec + msg_data
    whole = ber.tlv_bytes(ber.SEQUENCE, content)
    if len(whole) > ber.MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(whole)} bytes is beyond {ber.MAX_MESSAGE_BYTES}")
    if not n:
        return whole
    # Where the zeroed digest sits: after the outer header, the front, the two headers of the
    # security parameters, and `head`.
    at = (len(whole) - len(content)) + len(front) + (len(sec) - len(usm)) \
        + (len(usm) - len(usm_content)) + len(head)
    assert keys is not None
    return whole[:at] + keys.mac(whole) + whole[at + n :]


def report_text(oid: Oid) -> str:
    """What a Report's first varbind means, in pysnmp's words."""
    text = REPORT_TEXT.get(oid)
    return text if text is not None else f"ReportPduReceived: {'.'.join(map(str, oid))}"


def report_failure(oid: Oid) -> tuple[str, str]:
    """(poller error kind, detail) for a Report the poll ends with, as the poller files
    pysnmp's error indication for it: USM refusals are "auth"; an engine ID still unknown
    after rediscovery, or any other Report, is "protocol", named by pysnmp's class."""
    if oid == UNKNOWN_ENGINE_ID:
        return "protocol", f"UnknownEngineID: {REPORT_TEXT[oid]}"
    if oid in REPORT_TEXT:
        return "auth", REPORT_TEXT[oid]
    return "protocol", report_text(oid)
