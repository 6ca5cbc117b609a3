"""drivers/snmp/ber.py against pyasn1/pysnmp as the oracle: same answers, or a BerError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api, rfc1902, rfc1905
from rackwarden.drivers.snmp import ber
from rackwarden.drivers.snmp.ifmib import Absent, Oid, SnmpValue
from rackwarden.drivers.snmp.poller import plain_value

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
U32 = 2**32 - 1

# Every test here runs with each varbind loop that is built (drivers/snmp/_bervb.c and its
# Python twin); a missing C build is printed loudly, and its runs are not collected.
LOOPS = ["python"] if ber.BERVB_C_ERROR is not None else ["python", "c"]
if ber.BERVB_C_ERROR is not None:
    print(f"\n*** test_snmp_ber: {ber.BERVB_C_ERROR}: the C varbind loop's runs NOT RUN ***")


@pytest.fixture(autouse=True, scope="module", params=LOOPS)
def varbind_loop(request: pytest.FixtureRequest) -> Iterator[str]:
    before = ber.use_varbind_loop()
    yield ber.use_varbind_loop(request.param)
    ber.use_varbind_loop(before)

# --- strategies: every value type the codec knows, as (pysnmp object, tag, plain value) ---------

arc = st.integers(0, U32)
oids = st.one_of(
    st.tuples(st.integers(0, 1), st.integers(0, 39), st.lists(arc, max_size=20)),
    st.tuples(st.just(2), st.integers(0, U32 - 80), st.lists(arc, max_size=20)),
).map(lambda t: (t[0], t[1], *t[2]))
ints32 = st.integers(-(2**31), 2**31 - 1)
uints32 = st.one_of(st.integers(0, U32), st.sampled_from([0, 2**31 - 1, 2**31, U32]))
uints64 = st.one_of(
    st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1])
)
octets = st.binary(max_size=300)  # past 127 bytes the lengths are long-form


def _typed(tag: int, make: Any, plain: Any = None) -> Any:
    return lambda v: (make(v), tag, v if plain is None else plain)


values = st.one_of(
    ints32.map(_typed(ber.INTEGER, rfc1902.Integer32)),
    octets.map(_typed(ber.OCTET_STRING, rfc1902.OctetString)),
    st.just((rfc1902.Null(""), ber.NULL, Absent.NO_SUCH_OBJECT)),
    oids.map(_typed(ber.OBJECT_IDENTIFIER, rfc1902.ObjectIdentifier)),
    st.binary(min_size=4, max_size=4).map(_typed(ber.IP_ADDRESS, rfc1902.IpAddress)),
    uints32.map(_typed(ber.COUNTER32, rfc1902.Counter32)),
    uints32.map(_typed(ber.GAUGE32, rfc1902.Gauge32)),
    uints32.map(_typed(ber.TIMETICKS, rfc1902.TimeTicks)),
    octets.map(_typed(ber.OPAQUE, rfc1902.Opaque)),
    uints64.map(_typed(ber.COUNTER64, rfc1902.Counter64)),
    st.just((rfc1905.noSuchObject, ber.NO_SUCH_OBJECT, Absent.NO_SUCH_OBJECT)),
    st.just((rfc1905.noSuchInstance, ber.NO_SUCH_INSTANCE, Absent.NO_SUCH_INSTANCE)),
    st.just((rfc1905.endOfMibView, ber.END_OF_MIB_VIEW, Absent.END_OF_MIB_VIEW)),
)
varbind_lists = st.lists(st.tuples(oids, values), max_size=12)
PDU_KINDS = {
    ber.RESPONSE: V2C.ResponsePDU,
    ber.GET_BULK_REQUEST: V2C.GetBulkRequestPDU,
    ber.GET_REQUEST: V2C.GetRequestPDU,
    ber.REPORT: V2C.ReportPDU,
}


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A v2c message encoded by pyasn1, and what it holds as plain values."""
    pdu_type = draw(st.sampled_from(sorted(PDU_KINDS)))
    pdu = PDU_KINDS[pdu_type]()
    V2C.apiPDU.set_defaults(pdu)
    request_id = draw(ints32)
    a, b = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
    pdu.setComponentByPosition(0, request_id)
    pdu.setComponentByPosition(1, a)
    pdu.setComponentByPosition(2, b)
    vbs = draw(varbind_lists)
    V2C.apiPDU.set_varbinds(pdu, [(oid, obj) for oid, (obj, _, _) in vbs])
    msg = V2C.Message()
    V2C.apiMessage.set_defaults(msg)
    community = draw(st.binary(max_size=40))
    V2C.apiMessage.set_community(msg, community)
    V2C.apiMessage.set_pdu(msg, pdu)
    want = {
        "version": 1, "community": community, "pdu_type": pdu_type, "request_id": request_id,
        "error_status": a, "error_index": b,
        "varbinds": [(oid, plain) for oid, (_, _, plain) in vbs],
        "tags": [tag for _, (_, tag, _) in vbs],
    }
    return encoder.encode(msg), want


def as_dict(m: ber.Message) -> dict[str, Any]:
    return {
        "version": m.version, "community": m.community, "pdu_type": m.pdu_type,
        "request_id": m.request_id, "error_status": m.error_status,
        "error_index": m.error_index, "varbinds": m.varbinds, "tags": m.tags,
    }


def pyasn1_view(data: bytes) -> dict[str, Any]:
    """What pysnmp makes of a message, in the same plain form (the oracle)."""
    msg, rest = decoder.decode(data, asn1Spec=V2C.Message())
    assert not rest
    pdu = V2C.apiMessage.get_pdu(msg)
    tags = []
    for _, value in V2C.apiPDU.get_varbinds(pdu):
        t = value.tagSet[0]
        tags.append(int(t.tagClass) | int(t.tagFormat) | int(t.tagId))
    pt = pdu.tagSet[0]
    return {
        "version": int(msg[0]), "community": bytes(msg[1]),
        "pdu_type": int(pt.tagClass) | int(pt.tagFormat) | int(pt.tagId),
        "request_id": int(pdu[0]), "error_status": int(pdu[1]), "error_index": int(pdu[2]),
        "varbinds": [(tuple(o), plain_value(v)) for o, v in V2C.apiPDU.get_varbinds(pdu)],
        "tags": tags,
    }


def long_form(data: bytes, width: int) -> bytes:
    """The same TLVs with every length rewritten in `width` long-form octets (non-minimal, as
    BER allows and net-snmp does with width 2). A re-encoder independent of ber.py."""

    def walk(buf: bytes) -> bytes:
        out, pos = bytearray(), 0
        while pos < len(buf):
            tag = buf[pos]
            n = buf[pos + 1]
            pos += 2
            if n & 0x80:
                k = n & 0x7F
                n = int.from_bytes(buf[pos : pos + k], "big")
                pos += k
            content = buf[pos : pos + n]
            pos += n
            body = walk(content) if tag & 0x20 else content
            w = max(width, (len(body).bit_length() + 7) // 8)
            out += bytes((tag, 0x80 | w)) + len(body).to_bytes(w, "big") + body
        return bytes(out)

    return walk(data)


# --- equivalence ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(messages())
def test_every_message_decodes_as_pysnmp_decodes_it(case: tuple[bytes, dict[str, Any]]) -> None:
    data, want = case
    got = as_dict(ber.decode_message(data))
    assert got == want
    assert got == pyasn1_view(data)


@settings(max_examples=100)
@given(messages(), st.sampled_from([1, 2, 3, 4]))
def test_long_form_lengths_decode_as_pysnmp_decodes_them(
    case: tuple[bytes, dict[str, Any]], width: int
) -> None:
    data = long_form(case[0], width)
    assert as_dict(ber.decode_message(data)) == pyasn1_view(data) == case[1]


@settings(max_examples=100)
@given(messages(), st.booleans())
def test_encoder_output_decodes_identically_with_pyasn1(
    case: tuple[bytes, dict[str, Any]], net_snmp_style: bool
) -> None:
    _, want = case
    data = ber.encode_message(
        community=want["community"], pdu_type=want["pdu_type"], request_id=want["request_id"],
        error_status=want["error_status"], error_index=want["error_index"],
        varbinds=[(oid, tag, v) for (oid, v), tag in zip(want["varbinds"], want["tags"],
                                                         strict=True)],
        long_form=net_snmp_style,
    )
    assert pyasn1_view(data) == want
    assert as_dict(ber.decode_message(data)) == want
    if not net_snmp_style:  # minimal lengths: byte for byte what pyasn1 writes (X.690 DER-like)
        assert data == case[0]


@settings(max_examples=30)
@given(oids, st.integers(0, 10), st.integers(1, 1000), st.lists(oids, min_size=1, max_size=10))
def test_getbulk_request_is_what_pysnmp_reads(
    _o: Oid, non_repeaters: int, max_repetitions: int, request: list[Oid]
) -> None:
    data = ber.encode_getbulk(b"public", 77, non_repeaters, max_repetitions, request)
    msg, _ = decoder.decode(data, asn1Spec=V2C.Message())
    pdu = V2C.apiMessage.get_pdu(msg)
    assert isinstance(pdu, V2C.GetBulkRequestPDU)
    assert V2C.apiBulkPDU.get_non_repeaters(pdu) == non_repeaters
    assert V2C.apiBulkPDU.get_max_repetitions(pdu) == max_repetitions
    assert [tuple(o) for o, _ in V2C.apiPDU.get_varbinds(pdu)] == request
    assert bytes(V2C.apiMessage.get_community(msg)) == b"public"


# --- malformed input: a BerError, never another exception ----------------------------------


def decode_or_ber_error(data: bytes) -> ber.Message | None:
    try:
        return ber.decode_message(data)
    except ber.BerError as exc:
        assert 0 <= exc.offset <= len(data), (exc.offset, len(data))
        return None


def agrees_if_accepted(data: bytes) -> None:
    """Whatever ber.py accepts, pysnmp accepts too and reads the same (ber.py is the stricter)."""
    got = decode_or_ber_error(data)
    if got is not None:
        assert as_dict(got) == pyasn1_view(data)


@settings(max_examples=100)
@given(messages())
def test_every_truncation_is_a_ber_error(case: tuple[bytes, dict[str, Any]]) -> None:
    data = case[0]
    for cut in range(len(data)):
        with pytest.raises(ber.BerError):
            ber.decode_message(data[:cut])


@settings(max_examples=200)
@given(messages(), st.data())
def test_bit_flips_and_byte_edits_are_ber_errors_or_agree(
    case: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    raw = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        else:
            raw[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0x85, 0xFF]))
    try:
        agrees_if_accepted(bytes(raw))
    except PyAsn1Error as exc:  # ber.py accepted bytes pysnmp refuses: that is a finding
        raise AssertionError(f"ber.py accepted what pyasn1 refuses: {exc}") from exc


@settings(max_examples=30)
@given(messages(), st.binary(min_size=1, max_size=8))
def test_trailing_garbage_is_a_ber_error(case: tuple[bytes, dict[str, Any]], tail: bytes) -> None:
    with pytest.raises(ber.BerError, match="after the message"):
        ber.decode_message(case[0] + tail)


@settings(max_examples=300)
@given(st.binary(max_size=200))
@example(b"\x30\x80\x02\x01\x01\x00\x00")
def test_random_bytes_are_a_ber_error_or_agree(data: bytes) -> None:
    try:
        agrees_if_accepted(data)
    except PyAsn1Error as exc:
        raise AssertionError(f"ber.py accepted what pyasn1 refuses: {exc}") from exc


def vb_message(varbind_bytes: bytes) -> bytes:
    """A Response whose VarBindList is exactly these bytes (to plant one malformed element)."""
    head = b"\x02\x01\x01\x04\x06public"
    pdu_body = b"\x02\x01\x05\x02\x01\x00\x02\x01\x00" + bytes((0x30,)) + _len(varbind_bytes)
    pdu = bytes((0xA2,)) + _len(pdu_body + varbind_bytes) + pdu_body + varbind_bytes
    return b"\x30" + _len(head + pdu) + head + pdu


def _len(b: bytes) -> bytes:
    n = len(b)
    return bytes((n,)) if n < 128 else b"\x82" + n.to_bytes(2, "big")


OID_SYS = b"\x06\x08\x2b\x06\x01\x02\x01\x01\x03\x00"


# One malformed varbind each, and the words its BerError must carry (test_snmp_ber_c.py
# holds the C varbind loop to refusing each of them too).
MALFORMED: list[tuple[bytes, str]] = [
    (b"\x30\x80" + OID_SYS + b"\x05\x00\x00\x00", "indefinite length"),
    (b"\x30\x0c" + OID_SYS + b"\x05\x80", "indefinite length"),
    (b"\x30\x0d" + OID_SYS + b"\x05\x00\x00", "bytes after the value"),
    (b"\x30\x7f" + OID_SYS + b"\x05\x00", "runs past the end"),
    (b"\x30\x85\x00\x00\x00\x00\x0c" + OID_SYS + b"\x05\x00", "beyond 4"),
    (b"\x30\x16" + OID_SYS + b"\x46\x0a" + b"\x00" * 10, "integer of 10 octets"),
    (b"\x30\x0d" + OID_SYS + b"\x41\x01\xff", "Counter32 -1 is outside"),
    (b"\x30\x0c" + OID_SYS + b"\x00\x00", "not an SNMPv2 value type"),
    (b"\x30\x0c\x06\x08\x2b\x06\x01\x02\x01\x8f\xff\xff\x05\x00",
     "ends inside a sub-identifier"),
    (b"\x30\x0e\x06\x0a\x2b\x06\x01\x9f\xff\xff\xff\x7f\x01\x00\x05\x00",
     "above 2\\*\\*32-1"),
    (b"\x30\x0b\x06\x07\x2b\x06\x01\x80\x01\x01\x00\x05\x00", "leading 0x80"),
    (b"\x30\x04\x06\x00\x05\x00", "empty OBJECT IDENTIFIER"),
    (b"\x30\x0e" + OID_SYS + b"\x40\x02\x0a\x00", "IpAddress of 2 octets"),
    (b"\x30\x10" + OID_SYS + b"\x24\x04\x04\x02ab", "not an SNMPv2 value type"),
    (b"\x30\x0d" + OID_SYS + b"\x1f\x01\x00", "multi-byte tag"),
    (b"\x30\x0d" + OID_SYS + b"\x80\x01\x00", "noSuchObject with content"),
    (b"\x30\x0c" + OID_SYS + b"\x02\x00", "INTEGER with no content"),
    (b"\x31\x0c" + OID_SYS + b"\x05\x00", "varbind: expected tag 0x30"),
]


@pytest.mark.parametrize(("varbinds", "reason"), MALFORMED)
def test_each_malformation_names_itself(varbinds: bytes, reason: str) -> None:
    with pytest.raises(ber.BerError, match=reason) as info:
        ber.decode_message(vb_message(varbinds))
    assert info.value.offset > 0


def test_oid_of_129_arcs_and_too_many_varbinds_are_refused() -> None:
    content = bytes([0x2B] + [7] * 127)  # 1.3 then 127 arcs: 129 in all
    name = b"\x06\x81\x80" + content
    vb = b"\x30" + _len(name + b"\x05\x00") + name + b"\x05\x00"
    with pytest.raises(ber.BerError, match="more than 128 arcs"):
        ber.decode_message(vb_message(vb))
    name = b"\x06\x7f" + content[:-1]  # 128 arcs: the most RFC 2578 allows
    vb = b"\x30" + _len(name + b"\x05\x00") + name + b"\x05\x00"
    assert len(ber.decode_message(vb_message(vb)).varbinds[0][0]) == 128
    one = b"\x30\x0c" + OID_SYS + b"\x05\x00"
    assert len(ber.decode_message(vb_message(one * ber.MAX_VARBINDS)).varbinds) == ber.MAX_VARBINDS
    with pytest.raises(ber.BerError, match="more than 4096 varbinds"):
        ber.decode_message(vb_message(one * (ber.MAX_VARBINDS + 1)))


def test_message_past_the_size_bound_is_refused_before_reading() -> None:
    with pytest.raises(ber.BerError, match="beyond 65535"):
        ber.decode_message(b"\x30" + b"\x00" * ber.MAX_MESSAGE_BYTES)


def test_negative_error_index_max_repetitions_and_non_repeaters_are_refused() -> None:
    """RFC 3416 gives error-index, non-repeaters and max-repetitions 0..max-bindings, as
    pysnmp's PDU types do (hypothesis found ber.py reading error-index -128 where pyasn1
    refuses it); error-status has no such bound there and stays readable."""
    def pdu_message(tag: int, second: bytes, third: bytes) -> bytes:
        body = b"\x02\x01\x07" + second + third + b"\x30\x00"
        pdu = bytes((tag, len(body))) + body
        head = b"\x02\x01\x01\x04\x01c"
        return b"\x30" + bytes((len(head + pdu),)) + head + pdu

    zero, minus = b"\x02\x01\x00", b"\x02\x01\x80"  # 0 and -128
    with pytest.raises(ber.BerError, match="error-index -128 is below 0"):
        ber.decode_message(pdu_message(ber.GET_REQUEST, zero, minus))
    with pytest.raises(ber.BerError, match="max-repetitions -128 is below 0"):
        ber.decode_message(pdu_message(ber.GET_BULK_REQUEST, zero, minus))
    with pytest.raises(ber.BerError, match="non-repeaters -128 is below 0"):
        ber.decode_message(pdu_message(ber.GET_BULK_REQUEST, minus, zero))
    assert ber.decode_message(pdu_message(ber.RESPONSE, minus, zero)).error_status == -128
    for tag, second, third in ((ber.GET_REQUEST, zero, minus), (ber.GET_BULK_REQUEST, minus, zero),
                               (ber.GET_BULK_REQUEST, zero, minus)):
        with pytest.raises(PyAsn1Error):  # the oracle refuses them too
            pyasn1_view(pdu_message(tag, second, third))


def test_pdu_and_message_level_faults() -> None:
    good = vb_message(b"\x30\x0c" + OID_SYS + b"\x05\x00")
    assert ber.decode_message(good).varbinds == [((1, 3, 6, 1, 2, 1, 1, 3, 0),
                                                  Absent.NO_SUCH_OBJECT)]
    with pytest.raises(ber.BerError, match="not an SNMPv2 PDU"):
        ber.decode_message(good.replace(b"\xa2", b"\xa4", 1))  # v1 Trap-PDU
    with pytest.raises(ber.BerError, match="version: expected tag 0x02"):
        ber.decode_message(b"\x30\x03\x04\x01\x01")
    with pytest.raises(ber.BerError, match="outside"):  # request-id beyond Integer32
        ber.decode_message(_msg_with_request_id(2**31))
    assert ber.decode_message(_msg_with_request_id(2**31 - 1)).request_id == 2**31 - 1


def _msg_with_request_id(rid: int) -> bytes:
    content = rid.to_bytes(rid.bit_length() // 8 + 1, "big", signed=True)
    pdu_body = b"\x02" + bytes((len(content),)) + content + b"\x02\x01\x00\x02\x01\x00\x30\x00"
    pdu = b"\xa2" + bytes((len(pdu_body),)) + pdu_body
    head = b"\x02\x01\x01\x04\x06public"
    return b"\x30" + bytes((len(head + pdu),)) + head + pdu


@pytest.mark.parametrize(
    ("tag", "value"),
    [(ber.INTEGER, 2**31), (ber.COUNTER32, -1), (ber.COUNTER64, 2**64), (ber.IP_ADDRESS, b"\1"),
     (ber.OBJECT_IDENTIFIER, (3, 1)), (ber.OBJECT_IDENTIFIER, (1, 40)), (0x47, 1),
     (ber.OCTET_STRING, "text")],
)
def test_encoder_refuses_what_the_type_cannot_hold(tag: int, value: SnmpValue) -> None:
    with pytest.raises(ValueError):
        ber.encode_value(tag, value)
