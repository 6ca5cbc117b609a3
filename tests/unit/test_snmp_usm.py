"""drivers/snmp/usm.py against RFC 3414's test vectors and pysnmp's own USM as the oracle.

The oracle side uses only pysnmp and pyasn1: pysnmp's key localisation, its HMAC services, its
DES and AES services (encrypt_data/decrypt_data) and pyasn1's codec with pysnmp's SNMPv3Message,
UsmSecurityParameters and ScopedPDU specs. Nothing of usm.py is on that side, so a message one
side writes and the other reads agreeing is evidence, not a tautology.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto import api, error
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
from pysnmp.proto.secmod.rfc3414 import localkey
from pysnmp.proto.secmod.rfc3414.auth import hmacmd5, hmacsha
from pysnmp.proto.secmod.rfc3414.priv import des
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters
from pysnmp.proto.secmod.rfc3826.priv import aes
from pysnmp.proto.secmod.rfc7860.auth import hmacsha2
from rackwarden.drivers.snmp import ber, usm
from rackwarden.drivers.snmp.poller import plain_value

from tests.unit.test_snmp_ber import PDU_KINDS, varbind_lists

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

AUTH_SERVICES: dict[str, Any] = {
    "md5": hmacmd5.HmacMd5(),
    "sha": hmacsha.HmacSha(),
    "sha224": hmacsha2.HmacSha2(hmacsha2.HmacSha2.SHA224_SERVICE_ID),
    "sha256": hmacsha2.HmacSha2(hmacsha2.HmacSha2.SHA256_SERVICE_ID),
    "sha384": hmacsha2.HmacSha2(hmacsha2.HmacSha2.SAH384_SERVICE_ID),
    "sha512": hmacsha2.HmacSha2(hmacsha2.HmacSha2.SHA512_SERVICE_ID),
}
AUTH_OIDS = {
    "md5": hmacmd5.HmacMd5.SERVICE_ID,
    "sha": hmacsha.HmacSha.SERVICE_ID,
    "sha224": hmacsha2.HmacSha2.SHA224_SERVICE_ID,
    "sha256": hmacsha2.HmacSha2.SHA256_SERVICE_ID,
    "sha384": hmacsha2.HmacSha2.SAH384_SERVICE_ID,
    "sha512": hmacsha2.HmacSha2.SHA512_SERVICE_ID,
}
PRIV_SERVICES: dict[str, Any] = {"des": des.Des(), "aes": aes.Aes()}


@dataclass
class OracleKeys:
    """One user's keys localised by pysnmp, and its services."""

    auth: str | None
    auth_key: Any
    priv: str | None
    priv_key: Any

    @property
    def flags(self) -> int:
        return (1 if self.auth else 0) | (2 if self.priv else 0)


@functools.lru_cache(maxsize=256)
def _oracle_ku(auth: str, priv: str | None, password: bytes) -> Any:
    # pysnmp's 1 MiB hash loop costs ~10 ms in Python; the tests draw from a few passwords.
    if priv is None:
        return AUTH_SERVICES[auth].hash_passphrase(password)
    return PRIV_SERVICES[priv].hash_passphrase(AUTH_OIDS[auth], password)


def oracle_keys(auth: str | None, auth_pw: bytes, priv: str | None, priv_pw: bytes,
                engine_id: bytes) -> OracleKeys:
    eid = univ.OctetString(engine_id)
    auth_key = priv_key = None
    if auth is not None:
        svc = AUTH_SERVICES[auth]
        auth_key = svc.localize_key(_oracle_ku(auth, None, auth_pw), eid)
    if priv is not None:
        assert auth is not None
        psvc = PRIV_SERVICES[priv]
        priv_key = psvc.localize_key(AUTH_OIDS[auth], _oracle_ku(auth, priv, priv_pw), eid)
    return OracleKeys(auth, auth_key, priv, priv_key)


def oracle_encode(*, msg_id: int, flags: int, engine_id: bytes, boots: int, time: int,
                  user: bytes, keys: OracleKeys | None, pdu: Any,
                  context_engine_id: bytes | None = None, context_name: bytes = b"") -> bytes:
    """A whole SNMPv3 message written by pyasn1 and pysnmp's USM services."""
    scoped = ScopedPDU()
    scoped["contextEngineId"] = engine_id if context_engine_id is None else context_engine_id
    scoped["contextName"] = context_name
    scoped["data"].setComponentByType(pdu.tagSet, pdu, verifyConstraints=False)
    scoped_bytes = encoder.encode(scoped)
    params = UsmSecurityParameters()
    params["msgAuthoritativeEngineId"] = engine_id
    params["msgAuthoritativeEngineBoots"] = boots
    params["msgAuthoritativeEngineTime"] = time
    params["msgUserName"] = user
    params["msgPrivacyParameters"] = b""
    params["msgAuthenticationParameters"] = b""
    msg = SNMPv3Message()
    msg["msgVersion"] = 3
    msg["msgGlobalData"]["msgID"] = msg_id
    msg["msgGlobalData"]["msgMaxSize"] = 65507
    msg["msgGlobalData"]["msgFlags"] = bytes((flags,))
    msg["msgGlobalData"]["msgSecurityModel"] = 3
    if flags & 2:
        assert keys is not None and keys.priv is not None
        ciphertext, salt = PRIV_SERVICES[keys.priv].encrypt_data(
            keys.priv_key, (boots, time, None), scoped_bytes)
        params["msgPrivacyParameters"] = salt
        msg["msgData"]["encryptedPDU"] = ciphertext
    else:
        msg["msgData"]["plaintext"] = scoped
    if flags & 1:
        assert keys is not None and keys.auth is not None
        svc = AUTH_SERVICES[keys.auth]
        params["msgAuthenticationParameters"] = bytes(svc.digest_length)
        msg["msgSecurityParameters"] = encoder.encode(params)
        return bytes(svc.authenticate_outgoing_message(keys.auth_key, encoder.encode(msg)))
    msg["msgSecurityParameters"] = encoder.encode(params)
    return bytes(encoder.encode(msg))


def tag_of(obj: Any) -> int:
    t = obj.tagSet[0]
    return int(t.tagClass) | int(t.tagFormat) | int(t.tagId)


def oracle_decode(data: bytes, keys: OracleKeys | None) -> dict[str, Any]:
    """What pysnmp makes of an SNMPv3 message: raises when it would not take it."""
    msg, rest = decoder.decode(data, asn1Spec=SNMPv3Message())
    assert not rest
    flags = bytes(msg["msgGlobalData"]["msgFlags"])[0]
    params, rest = decoder.decode(bytes(msg["msgSecurityParameters"]),
                                  asn1Spec=UsmSecurityParameters())
    assert not rest
    boots = int(params["msgAuthoritativeEngineBoots"])
    time = int(params["msgAuthoritativeEngineTime"])
    if flags & 1:
        assert keys is not None and keys.auth is not None
        AUTH_SERVICES[keys.auth].authenticate_incoming_message(
            keys.auth_key, params["msgAuthenticationParameters"], data)
    if flags & 2:
        assert keys is not None and keys.priv is not None
        plain = PRIV_SERVICES[keys.priv].decrypt_data(
            keys.priv_key, (boots, time, params["msgPrivacyParameters"]),
            msg["msgData"]["encryptedPDU"])
        scoped, _padding = decoder.decode(plain, asn1Spec=ScopedPDU())
    else:
        scoped = msg["msgData"]["plaintext"]
    pdu = scoped["data"].getComponent()
    return {
        "msg_id": int(msg["msgGlobalData"]["msgID"]), "flags": flags,
        "engine_id": bytes(params["msgAuthoritativeEngineId"]), "boots": boots, "time": time,
        "user": bytes(params["msgUserName"]),
        "context_engine_id": bytes(scoped["contextEngineId"]),
        "context_name": bytes(scoped["contextName"]),
        "pdu_type": tag_of(pdu), "request_id": int(pdu[0]), "error_status": int(pdu[1]),
        "error_index": int(pdu[2]),
        "varbinds": [(tuple(o), plain_value(v)) for o, v in V2C.apiPDU.get_varbinds(pdu)],
        "tags": [tag_of(v) for _, v in V2C.apiPDU.get_varbinds(pdu)],
    }


def our_decode(data: bytes, creds: usm.Credentials) -> dict[str, Any]:
    """The same view through usm.py."""
    env = usm.decode_envelope(data)
    keys = creds.localized(env.engine_id)
    if env.flags & usm.FLAG_AUTH:
        assert usm.authentic(data, env, keys)
    if env.encrypted:
        scoped = usm.decode_scoped_pdu(
            usm.decrypt(keys, env.boots, env.time, env.priv_params, env.scoped), padded=True)
    else:
        scoped = usm.decode_scoped_pdu(env.scoped)
    return {
        "msg_id": env.msg_id, "flags": env.flags, "engine_id": env.engine_id,
        "boots": env.boots, "time": env.time, "user": env.user,
        "context_engine_id": scoped.context_engine_id, "context_name": scoped.context_name,
        "pdu_type": scoped.pdu_type, "request_id": scoped.request_id,
        "error_status": scoped.error_status, "error_index": scoped.error_index,
        "varbinds": scoped.varbinds, "tags": scoped.tags,
    }


# --- strategies --------------------------------------------------------------------------------

# pysnmp finds its digest placeholder with bytes.find(zeros): no run of zero octets elsewhere.
nonzero = st.binary(min_size=1, max_size=32).map(lambda b: bytes(x or 1 for x in b))
engine_ids = nonzero.filter(lambda b: len(b) >= 5)
# A few fixed passwords (their hashes are cached) plus a drawn one for the key tests.
passwords = st.sampled_from([b"maplesyrup", b"authpass-123456", b"\xffpriv\x01pass", b"x" * 40])
any_passwords = st.binary(min_size=8, max_size=40).map(lambda b: bytes(x or 1 for x in b))
levels = st.sampled_from(
    [(None, None), *((a, None) for a in usm.AUTH_PROTOCOLS),
     *((a, p) for a in usm.AUTH_PROTOCOLS for p in ("des", "aes"))]
)
int31 = st.integers(0, 2**31 - 1)


@st.composite
def v3_cases(draw: st.DrawFn) -> tuple[bytes, usm.Credentials, dict[str, Any]]:
    auth, priv = draw(levels)
    auth_pw, priv_pw = draw(passwords), draw(passwords)
    engine_id = draw(engine_ids)
    user = draw(nonzero)
    pdu_type = draw(st.sampled_from(sorted(PDU_KINDS)))
    pdu = PDU_KINDS[pdu_type]()
    V2C.apiPDU.set_defaults(pdu)
    pdu.setComponentByPosition(0, draw(st.integers(-(2**31), 2**31 - 1)))
    pdu.setComponentByPosition(1, draw(int31))
    pdu.setComponentByPosition(2, draw(int31))
    V2C.apiPDU.set_varbinds(pdu, [(oid, obj) for oid, (obj, _, _) in draw(varbind_lists)])
    okeys = oracle_keys(auth, auth_pw, priv, priv_pw, engine_id)
    data = oracle_encode(msg_id=draw(int31), flags=okeys.flags | 4 * draw(st.integers(0, 1)),
                         engine_id=engine_id, boots=draw(int31), time=draw(int31), user=user,
                         keys=okeys, pdu=pdu, context_name=draw(st.binary(max_size=20)))
    creds = usm.Credentials(user, auth_protocol=auth, auth_password=auth_pw if auth else b"",
                            priv_protocol=priv, priv_password=priv_pw if priv else b"")
    return data, creds, oracle_decode(data, okeys)


# --- key localisation ------------------------------------------------------------------------

RFC3414_ENGINE = bytes.fromhex("000000000000000000000002")


@pytest.mark.parametrize(("protocol", "ku", "kul"), [
    # RFC 3414 A.3.1 (MD5) and A.3.2 (SHA), password "maplesyrup".
    ("md5", "9faf3283884e92834ebc9847d8edd963", "526f5eed9fcce26f8964c2930787d82b"),
    ("sha", "9fb5cc0381497b3793528939ff788d5d79145211",
     "6695febc9288e36282235fc7151f128497b38f3f"),
])
def test_rfc3414_a3_key_localisation_vectors(protocol: str, ku: str, kul: str) -> None:
    got_ku = usm.password_to_key(protocol, b"maplesyrup")
    assert got_ku.hex() == ku
    assert usm.localize_key(protocol, got_ku, RFC3414_ENGINE).hex() == kul


@settings(max_examples=12, deadline=None)
@given(levels.filter(lambda lv: lv[0] is not None), any_passwords, any_passwords, engine_ids)
def test_localised_keys_are_pysnmps(level: tuple[str, str | None], auth_pw: bytes,
                                     priv_pw: bytes, engine_id: bytes) -> None:
    auth, priv = level
    creds = usm.Credentials(b"u", auth_protocol=auth, auth_password=auth_pw,
                            priv_protocol=priv, priv_password=priv_pw if priv else b"")
    ours = creds.localized(engine_id)
    want = oracle_keys(auth, auth_pw, priv, priv_pw, engine_id)
    assert ours.auth_key == bytes(want.auth_key)
    if priv is not None:
        assert ours.priv_key == bytes(want.priv_key)[:16]
    # pysnmp's helper functions for the two RFC 3414 hashes agree too.
    if auth == "sha":
        assert ours.auth_key == bytes(localkey.password_to_key_sha(auth_pw,
                                                                   univ.OctetString(engine_id)))


@pytest.mark.parametrize("protocol", sorted(usm.AUTH_PROTOCOLS))
def test_hmac_is_truncated_to_the_protocols_length(protocol: str) -> None:
    keys = usm.Credentials(b"u", auth_protocol=protocol,
                           auth_password=b"maplesyrup").localized(RFC3414_ENGINE)
    mac = keys.mac(b"message")
    want = {"md5": 12, "sha": 12, "sha224": 16, "sha256": 24, "sha384": 32, "sha512": 48}
    assert len(mac) == want[protocol] == keys.digest_length
    # The digest is the HMAC's prefix, as pysnmp writes it over its placeholder.
    svc = AUTH_SERVICES[protocol]
    placed = svc.authenticate_outgoing_message(univ.OctetString(keys.auth_key),
                                               b"head" + bytes(len(mac)) + b"tail")
    assert bytes(placed) == b"head" + keys.mac(b"head" + bytes(len(mac)) + b"tail") + b"tail"


# --- messages: pysnmp writes, usm.py reads; usm.py writes, pysnmp reads ----------------------


@settings(max_examples=40, deadline=None)
@given(v3_cases())
def test_every_message_pysnmp_writes_reads_the_same_through_usm(
        case: tuple[bytes, usm.Credentials, dict[str, Any]]) -> None:
    data, creds, want = case
    assert our_decode(data, creds) == want


@settings(max_examples=30, deadline=None)
@given(levels, passwords, passwords, engine_ids, nonzero, int31, int31, int31, varbind_lists,
       st.integers(0, 2**64 - 1))
def test_requests_usm_writes_are_what_pysnmp_reads(
        level: tuple[str | None, str | None], auth_pw: bytes, priv_pw: bytes, engine_id: bytes,
        user: bytes, msg_id: int, boots: int, time: int, vbs: list[Any], salt: int) -> None:
    auth, priv = level
    creds = usm.Credentials(user, auth_protocol=auth, auth_password=auth_pw if auth else b"",
                            priv_protocol=priv, priv_password=priv_pw if priv else b"")
    keys = creds.localized(engine_id)
    pdu = ber.encode_pdu(pdu_type=ber.GET_BULK_REQUEST, request_id=msg_id, error_status=1,
                         error_index=50, varbinds=[(oid, tag, v) for oid, (_, tag, v) in vbs])
    data = usm.encode_request(msg_id=msg_id, flags=creds.flags, engine_id=engine_id,
                              boots=boots, time=time, user=user, keys=keys, pdu=pdu,
                              salt_counter=salt)
    got = oracle_decode(data, oracle_keys(auth, auth_pw, priv, priv_pw, engine_id))
    assert (got["msg_id"], got["flags"], got["engine_id"], got["boots"], got["time"],
            got["user"], got["context_engine_id"], got["context_name"]) == (
        msg_id, creds.flags, engine_id, boots, time, user, engine_id, b"")
    assert (got["pdu_type"], got["request_id"], got["error_status"], got["error_index"]) == (
        ber.GET_BULK_REQUEST, msg_id, 1, 50)
    assert got["varbinds"] == [(oid, plain) for oid, (_, _, plain) in vbs]
    # And usm.py reads its own request back the same way.
    assert our_decode(data, creds) == got


def test_each_message_under_one_key_gets_a_fresh_iv() -> None:
    creds = usm.Credentials(b"u", auth_protocol="sha", auth_password=b"authpass1",
                            priv_protocol="aes", priv_password=b"privpass1")
    keys = creds.localized(b"engine-1")
    pdu = ber.encode_pdu(pdu_type=ber.GET_BULK_REQUEST, request_id=1, error_status=0,
                         error_index=1, varbinds=[])
    msgs = [usm.encode_request(msg_id=1, flags=creds.flags, engine_id=b"engine-1", boots=1,
                               time=5, user=b"u", keys=keys, pdu=pdu, salt_counter=n)
            for n in (1, 2)]
    salts = [usm.decode_envelope(m).priv_params for m in msgs]
    assert salts[0] != salts[1] and all(len(s) == 8 for s in salts)


def test_a_wrong_key_or_an_edited_message_is_not_authentic() -> None:
    creds = usm.Credentials(b"u", auth_protocol="sha256", auth_password=b"authpass1",
                            priv_protocol="aes", priv_password=b"privpass1")
    other = usm.Credentials(b"u", auth_protocol="sha256", auth_password=b"authpass2",
                            priv_protocol="aes", priv_password=b"privpass1")
    pdu = ber.encode_pdu(pdu_type=ber.RESPONSE, request_id=7, error_status=0, error_index=0,
                         varbinds=[((1, 3, 6, 1, 2, 1, 1, 3, 0), ber.TIMETICKS, 42)])
    data = usm.encode_request(msg_id=7, flags=creds.flags, engine_id=b"engine-1", boots=1,
                              time=5, user=b"u", keys=creds.localized(b"engine-1"), pdu=pdu,
                              salt_counter=3)
    env = usm.decode_envelope(data)
    assert usm.authentic(data, env, creds.localized(b"engine-1"))
    assert not usm.authentic(data, env, other.localized(b"engine-1"))
    assert not usm.authentic(data, env, creds.localized(b"engine-2"))
    edited = bytearray(data)
    edited[-1] ^= 1
    assert not usm.authentic(bytes(edited), usm.decode_envelope(bytes(edited)),
                             creds.localized(b"engine-1"))


# --- malformed input: a clear error, never a traceback of another kind --------------------------


@settings(max_examples=15, deadline=None)
@given(v3_cases())
def test_every_truncation_is_a_ber_error(case: tuple[bytes, usm.Credentials, Any]) -> None:
    data, _, _ = case
    for n in range(len(data)):
        with pytest.raises(ber.BerError):
            usm.decode_envelope(data[:n])


@settings(max_examples=30, deadline=None)
@given(v3_cases(), st.data())
def test_edited_messages_are_ber_errors_or_read_consistently(
        case: tuple[bytes, usm.Credentials, Any], data: st.DataObject) -> None:
    raw, creds, _ = case
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    edited = bytes(buf)
    try:
        env = usm.decode_envelope(edited)
    except ber.BerError as exc:
        assert str(exc).startswith("BER offset ")
        return
    keys = creds.localized(env.engine_id)
    if env.encrypted and keys.priv_protocol is not None:
        try:
            plain = usm.decrypt(keys, env.boots, env.time, env.priv_params, env.scoped)
            usm.decode_scoped_pdu(plain, padded=True)
        except (ber.BerError, usm.UsmError) as exc:
            assert str(exc)
    elif not env.encrypted:
        try:
            usm.decode_scoped_pdu(env.scoped)
        except ber.BerError as exc:
            assert str(exc).startswith("BER offset ")
    if edited != raw and env.flags & usm.FLAG_AUTH and creds.auth_protocol is not None:
        # Any edit of an authenticated message (its digest included) fails the check.
        assert not usm.authentic(edited, env, keys)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_ber_errors(data: bytes) -> None:
    try:
        usm.decode_envelope(data)
    except ber.BerError:
        pass
    try:
        usm.decode_scoped_pdu(data, padded=True)
    except ber.BerError:
        pass


def _request(**kw: Any) -> bytes:
    args: dict[str, Any] = {"msg_id": 9, "flags": 4, "engine_id": b"engine-1", "boots": 1,
                            "time": 2, "user": b"u", "keys": None,
                            "pdu": ber.encode_pdu(pdu_type=ber.REPORT, request_id=9,
                                                  error_status=0, error_index=0, varbinds=[])}
    args.update(kw)
    return usm.encode_request(**args)


def _patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (data.hex(), old.hex())
    return data.replace(old, new)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda d: d[:2] + b"\x02\x01\x01" + d[5:], "msgVersion 1, not 3"),
    (lambda d: _patched(d, b"\x04\x01\x04", b"\x04\x01\x06"), "privacy without authentication"),
    (lambda d: _patched(d, b"\x04\x01\x04\x02\x01\x03", b"\x04\x01\x04\x02\x01\x02"),
     r"not USM \(3\)"),
    (lambda d: _patched(d, b"\x04\x01\x04", b"\x04\x02\x04\x04")[:-1], "msgFlags of 2 octets"),
    (lambda d: d + b"\x00", "bytes after the message"),
    (lambda d: b"\x30\x80" + d[2:], "indefinite length"),
    (lambda d: _patched(d, b"\x02\x03\x00\xff\xe3", b"\x02\x03\x00\x01\xe3"), "msgMaxSize 483"),
])
def test_each_envelope_fault_names_itself(edit: Any, reason: str) -> None:
    good = _request()
    usm.decode_envelope(good)
    with pytest.raises(ber.BerError, match=reason):
        usm.decode_envelope(edit(good))


def test_oversized_fields_and_messages_are_refused() -> None:
    with pytest.raises(ber.BerError, match="msgUserName of 33 octets"):
        usm.decode_envelope(_request(user=b"u" * 33))
    with pytest.raises(ber.BerError, match="msgAuthoritativeEngineID of 33 octets"):
        usm.decode_envelope(_request(engine_id=b"e" * 33))
    with pytest.raises(ber.BerError, match="beyond 65535"):
        usm.decode_envelope(b"\x30\x84" + (70_000).to_bytes(4, "big") + bytes(70_000))
    with pytest.raises(ValueError, match="USM user name of 33 octets"):
        usm.Credentials(b"u" * 33)


def test_decryption_parameter_faults_are_usm_errors() -> None:
    creds = usm.Credentials(b"u", auth_protocol="sha", auth_password=b"authpass1",
                            priv_protocol="des", priv_password=b"privpass1")
    keys = creds.localized(b"engine-1")
    with pytest.raises(usm.UsmError, match="msgPrivacyParameters of 7 octets") as info:
        usm.decrypt(keys, 1, 2, b"1234567", bytes(16))
    assert info.value.kind == "auth"
    with pytest.raises(usm.UsmError, match="DES ciphertext of 15 octets"):
        usm.decrypt(keys, 1, 2, b"12345678", bytes(15))


@pytest.mark.parametrize(("kw", "reason"), [
    ({"auth_protocol": "sha", "auth_password": b""}, "auth password must not be empty"),
    ({"priv_protocol": "aes", "priv_password": b"privpass1"}, "privacy needs authentication"),
    ({"auth_protocol": "sha", "auth_password": b"x" * 8, "priv_protocol": "3des",
      "priv_password": b"x" * 8}, "privacy protocol '3des' is not supported"),
    ({"auth_protocol": "sha1"}, "auth protocol 'sha1' is not supported"),
])
def test_credentials_refuse_what_usm_cannot_do(kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        usm.Credentials(b"u", **kw)


def test_credentials_and_keys_never_show_a_secret() -> None:
    creds = usm.Credentials(b"u", auth_protocol="sha", auth_password=b"s3cret-auth",
                            priv_protocol="aes", priv_password=b"s3cret-priv")
    keys = creds.localized(b"engine-1")
    for text in (repr(creds), repr(keys), str(creds)):
        assert "s3cret" not in text and keys.auth_key.hex() not in text


def test_report_oids_read_as_pysnmp_names_them() -> None:
    from pysnmp.proto import errind
    assert usm.report_text(usm.WRONG_DIGEST) == str(errind.wrongDigest)
    assert usm.report_text(usm.UNKNOWN_USER_NAME) == str(errind.unknownUserName)
    assert usm.report_text(usm.NOT_IN_TIME_WINDOW) == str(errind.notInTimeWindow)
    assert usm.report_text(usm.UNKNOWN_ENGINE_ID) == str(errind.unknownEngineID)
    assert usm.report_text(usm.DECRYPTION_ERROR) == str(errind.decryptionError)
    assert usm.report_text(usm.UNSUPPORTED_SEC_LEVEL) == str(errind.unsupportedSecurityLevel)
    assert usm.report_text((1, 3, 6, 1, 6, 3, 11, 2, 1, 3, 0)) == (
        "ReportPduReceived: 1.3.6.1.6.3.11.2.1.3.0")
    # The kind and words the poller files pysnmp's indication under (poller._AUTH).
    assert usm.report_failure(usm.WRONG_DIGEST) == ("auth", str(errind.wrongDigest))
    assert usm.report_failure(usm.UNKNOWN_ENGINE_ID) == (
        "protocol", f"UnknownEngineID: {errind.unknownEngineID}")
    assert usm.report_failure((1, 3, 6, 1, 6, 3, 11, 2, 1, 3, 0)) == (
        "protocol", "ReportPduReceived: 1.3.6.1.6.3.11.2.1.3.0")
    with pytest.raises(error.ProtocolError):  # the oracle's services are the real ones
        AUTH_SERVICES["sha"].authenticate_incoming_message(
            univ.OctetString(b"k" * 20), univ.OctetString(b"x" * 12), b"no digest here")
