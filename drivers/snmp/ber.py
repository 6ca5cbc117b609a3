"""A bounded, strict BER codec for exactly the SNMPv2c messages the poller sends and receives.

Message ::= SEQUENCE { version INTEGER, community OCTET STRING, pdu }, where pdu is a
GetBulkRequest, a Response (or any other v2 PDU of the same shape) holding request-id, two
INTEGERs (error-status/error-index, or non-repeaters/max-repetitions) and a VarBindList.

Decoding is what the poller's CPU goes to (pyasn1 spends ~107 µs per varbind), so this module
reads the fixed structure directly: no recursion, no generic ASN.1 objects. It is strict where
BER leaves room a hostile or broken agent could use: every length is checked against its
enclosing one, indefinite lengths, constructed strings, multi-byte tags, trailing bytes,
integers wider than 9 octets or outside their SNMP type's range, OID sub-identifiers above
2**32-1 and messages or varbind lists past fixed bounds are all a `BerError` naming the offset.
Long-form and non-minimal definite lengths are accepted: real agents send them (net-snmp writes
every SEQUENCE length as 0x82 hi lo). Anything refused here is safe to refuse: the poller then
falls back to pysnmp for that switch.

Values come out as the poller's plain `SnmpValue`s (what `poller.plain_value` makes of pysnmp's
objects): ints for INTEGER/Counter32/Gauge32/TimeTicks/Counter64, bytes for OCTET STRING,
IpAddress and Opaque, a tuple for an OID, `Absent` for the v2 exceptions and NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..compiled import choose_side
from .ifmib import Absent, Oid, SnmpValue, VarBind

# The varbind loop in C (drivers/snmp/_bervb.c): an optional extension, so a machine without a
# compiler or Python's headers still installs and decodes with the Python loop below. It reads
# well-formed replies only and hands everything else back to that loop, which names the fault.
try:
    from ._bervb_c import varbinds as _varbinds_c
except ImportError as exc:  # pragma: no cover - depends on the build
    _varbinds_c = None
    BERVB_C_ERROR: str | None = f"the compiled varbind loop is not built ({exc})"
else:
    BERVB_C_ERROR = None

BER_ENV = "RACKWARDEN_SNMP_BER"  # "python" forces the Python varbind loop, "c" the C one

# Universal and SNMP application tags (RFC 2578 / RFC 3416), as the one-byte identifiers.
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

# PDU tags (context-specific, constructed).
GET_REQUEST = 0xA0
GET_NEXT_REQUEST = 0xA1
RESPONSE = 0xA2
SET_REQUEST = 0xA3
GET_BULK_REQUEST = 0xA5
INFORM_REQUEST = 0xA6
SNMPV2_TRAP = 0xA7
REPORT = 0xA8
PDU_TAGS = frozenset(
    {GET_REQUEST, GET_NEXT_REQUEST, RESPONSE, SET_REQUEST, GET_BULK_REQUEST, INFORM_REQUEST,
     SNMPV2_TRAP, REPORT}
)

VERSION_2C = 1

# Bounds. A UDP datagram holds at most 65,507 bytes, so a bigger message is not one we sent or
# received.
MAX_MESSAGE_BYTES = 65_535
MAX_VARBINDS = 4096  # the poller asks for at most 2,000 + scalars
MAX_OID_ARCS = 128  # RFC 2578 3.5: at most 128 sub-identifiers
MAX_INT_OCTETS = 9  # Counter64 needs 9 (a leading 0x00 for values >= 2**63)
_MAX_LENGTH_OCTETS = 4
_UINT32 = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_UINT64 = 2**64 - 1
_SUBID_MAX = 2**32 - 1

_ABSENT_BY_TAG = {
    NO_SUCH_OBJECT: Absent.NO_SUCH_OBJECT,
    NO_SUCH_INSTANCE: Absent.NO_SUCH_INSTANCE,
    END_OF_MIB_VIEW: Absent.END_OF_MIB_VIEW,
}
_TAG_BY_ABSENT = {v: k for k, v in _ABSENT_BY_TAG.items()}
# The (low, high) an integer-valued tag's decoded value must lie in.
_INT_RANGE = {
    INTEGER: (_INT32_MIN, _INT32_MAX),
    COUNTER32: (0, _UINT32),
    GAUGE32: (0, _UINT32),
    TIMETICKS: (0, _UINT32),
    COUNTER64: (0, _UINT64),
}
_BYTES_TAGS = frozenset({OCTET_STRING, IP_ADDRESS, OPAQUE})
TAG_NAMES = {
    INTEGER: "INTEGER", OCTET_STRING: "OCTET STRING", NULL: "NULL",
    OBJECT_IDENTIFIER: "OBJECT IDENTIFIER", IP_ADDRESS: "IpAddress", COUNTER32: "Counter32",
    GAUGE32: "Gauge32", TIMETICKS: "TimeTicks", OPAQUE: "Opaque", COUNTER64: "Counter64",
    NO_SUCH_OBJECT: "noSuchObject", NO_SUCH_INSTANCE: "noSuchInstance",
    END_OF_MIB_VIEW: "endOfMibView",
}


class BerError(ValueError):
    """A message this codec will not read (or write): `offset` is where in the bytes it failed."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"BER offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """One SNMPv2c message. For a GetBulkRequest, `error_status` is non-repeaters and
    `error_index` is max-repetitions (the same two INTEGERs, RFC 3416 section 3)."""

    version: int
    community: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]
    tags: list[int]  # the BER tag of each varbind's value, parallel to varbinds


# OID content bytes -> tuple. A poll repeats the same ifIndex OIDs every time, so this makes
# most OIDs free; it is cleared when full, which bounds it whatever an agent sends.
_OID_CACHE: dict[bytes, Oid] = {}
_OID_CACHE_MAX = 65_536


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The definite length at data[pos] and the offset after it; checked against `end`."""
    if pos >= end:
        raise BerError(pos, "truncated: length octet missing")
    n = data[pos]
    pos += 1
    if n & 0x80:
        k = n & 0x7F
        if k == 0:
            raise BerError(pos - 1, "indefinite length is not allowed")
        if k > _MAX_LENGTH_OCTETS:
            raise BerError(pos - 1, f"length of {k} octets is beyond {_MAX_LENGTH_OCTETS}")
        if pos + k > end:
            raise BerError(pos, "truncated: long-form length runs past the end")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if n > end - pos:
        raise BerError(pos, f"length {n} runs past the end ({end - pos} bytes left)")
    return n, pos


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at data[pos], inside data[:end]."""
    if pos >= end:
        raise BerError(pos, "truncated: element expected")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError(pos, f"multi-byte tag 0x{tag:02x} is not an SNMP type")
    n, start = _length(data, pos + 1, end)
    return tag, start, start + n


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _tlv(data, pos, end)
    if got != tag:
        raise BerError(pos, f"{what}: expected tag 0x{tag:02x}, got 0x{got:02x}")
    return start, stop


def _int(data: bytes, start: int, stop: int, tag: int) -> int:
    size = stop - start
    if size == 0:
        raise BerError(start, f"{TAG_NAMES.get(tag, 'INTEGER')} with no content octets")
    if size > MAX_INT_OCTETS:
        raise BerError(start, f"integer of {size} octets is beyond {MAX_INT_OCTETS}")
    value = int.from_bytes(data[start:stop], "big", signed=True)
    low, high = _INT_RANGE[tag]
    if not low <= value <= high:
        raise BerError(start, f"{TAG_NAMES[tag]} {value} is outside {low}..{high}")
    return value


def _oid(content: bytes, offset: int) -> Oid:
    """An OBJECT IDENTIFIER's content octets as a tuple (X.690 8.19)."""
    if not content:
        raise BerError(offset, "empty OBJECT IDENTIFIER")
    if content[-1] & 0x80:
        raise BerError(offset + len(content) - 1, "OBJECT IDENTIFIER ends inside a sub-identifier")
    arcs: list[int] = []
    sub = 0
    fresh = True
    # Checked as it grows: a run of continuation octets must not build a huge int.
    limit = _SUBID_MAX + 80  # the first sub-identifier carries 40*X on top
    for i, b in enumerate(content):
        if fresh and b == 0x80:
            raise BerError(offset + i, "sub-identifier with a leading 0x80 (not minimal)")
        sub = (sub << 7) | (b & 0x7F)
        if sub > limit:
            raise BerError(offset + i, "OBJECT IDENTIFIER sub-identifier above 2**32-1")
        if b & 0x80:
            fresh = False
            continue
        if len(arcs) >= MAX_OID_ARCS - 1:
            raise BerError(offset + i, f"OBJECT IDENTIFIER of more than {MAX_OID_ARCS} arcs")
        arcs.append(sub)
        limit = _SUBID_MAX
        sub = 0
        fresh = True
    first = arcs[0]
    # The first sub-identifier packs two arcs: 40*X+Y, X in 0..2 (2 takes every value >= 80).
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return (*head, *arcs[1:])


def decode_oid(content: bytes) -> Oid:
    """An OID from its content octets (no tag or length); BerError if malformed."""
    return _oid(content, 0)


def decode_message(data: bytes) -> Message:
    """Decode one SNMPv2c (or v1-shaped) message; BerError for anything outside the grammar."""
    end = len(data)
    if end > MAX_MESSAGE_BYTES:
        raise BerError(0, f"message of {end} bytes is beyond {MAX_MESSAGE_BYTES}")
    pos, stop = _expect(data, 0, end, SEQUENCE, "message")
    if stop != end:
        raise BerError(stop, f"{end - stop} bytes after the message")
    s, e = _expect(data, pos, stop, INTEGER, "version")
    version = _int(data, s, e, INTEGER)
    s, e = _expect(data, e, stop, OCTET_STRING, "community")
    community = data[s:e]
    pdu = _decode_pdu(data, e, stop)
    return Message(version, bytes(community), *pdu)


def decode_pdu(data: bytes, start: int, end: int) -> tuple[int, int, int, int, list[VarBind],
                                                           list[int]]:
    """One PDU that fills data[start:end] exactly (an SNMPv3 scopedPDU's last element):
    (pdu_type, request_id, error_status, error_index, varbinds, tags); BerError otherwise."""
    if not 0 <= start <= end <= len(data):
        raise BerError(start, f"PDU bounds {start}..{end} outside the {len(data)} bytes")
    return _decode_pdu(data, start, end)


def _decode_pdu(data: bytes, pdu_at: int, stop: int) -> tuple[int, int, int, int, list[VarBind],
                                                              list[int]]:
    pdu_type, pos, pdu_end = _tlv(data, pdu_at, stop)
    if pdu_type not in PDU_TAGS:
        raise BerError(pdu_at, f"PDU tag 0x{pdu_type:02x} is not an SNMPv2 PDU")
    if pdu_end != stop:
        raise BerError(pdu_end, "bytes after the PDU inside the message")
    s, e = _expect(data, pos, pdu_end, INTEGER, "request-id")
    request_id = _int(data, s, e, INTEGER)
    bulk = pdu_type == GET_BULK_REQUEST
    s, e = _expect(data, e, pdu_end, INTEGER, "error-status")
    error_status = _int(data, s, e, INTEGER)
    if bulk and error_status < 0:  # RFC 3416: non-repeaters INTEGER (0..max-bindings)
        raise BerError(s, f"non-repeaters {error_status} is below 0")
    s, e = _expect(data, e, pdu_end, INTEGER, "error-index")
    error_index = _int(data, s, e, INTEGER)
    if error_index < 0:  # error-index and max-repetitions are INTEGER (0..max-bindings)
        raise BerError(s, f"{'max-repetitions' if bulk else 'error-index'} {error_index} is "
                          "below 0")
    pos, vend = _expect(data, e, pdu_end, SEQUENCE, "variable-bindings")
    if vend != pdu_end:
        raise BerError(vend, "bytes after the variable-bindings inside the PDU")
    if _varbinds is not _varbinds_py and type(data) is bytes:
        got = _varbinds(data, pos, vend, _ABSENTS)
        if got is not None:
            return pdu_type, request_id, error_status, error_index, got[0], got[1]
    varbinds, tags = _varbinds_py(data, pos, vend)
    return pdu_type, request_id, error_status, error_index, varbinds, tags


def _varbinds_py(data: bytes, pos: int, vend: int) -> tuple[list[VarBind], list[int]]:
    """The VarBindList's contents at data[pos:vend]: (varbinds, tags); BerError if malformed."""
    varbinds: list[VarBind] = []
    tags: list[int] = []
    append_vb, append_tag = varbinds.append, tags.append
    cache = _OID_CACHE
    value: SnmpValue
    while pos < vend:
        if len(varbinds) >= MAX_VARBINDS:
            raise BerError(pos, f"more than {MAX_VARBINDS} varbinds")
        # The common encodings are read inline (short lengths; net-snmp's 0x82 hi lo for the
        # SEQUENCE): ~40 % of the decode time was _tlv calls. Anything else, and every fault,
        # goes through _tlv, which reads every form and names the fault.
        s = -1
        if data[pos] == SEQUENCE and pos + 1 < vend:
            n = data[pos + 1]
            if n < 0x80:
                s = pos + 2
            elif n == 0x82 and pos + 3 < vend:
                n = (data[pos + 2] << 8) | data[pos + 3]
                s = pos + 4
            e = s + n
        if s < 0 or e > vend:
            tag, s, e = _tlv(data, pos, vend)
            if tag != SEQUENCE:
                raise BerError(pos, f"varbind: expected tag 0x30, got 0x{tag:02x}")
        if e - s >= 2 and data[s] == OBJECT_IDENTIFIER and data[s + 1] < 0x80:
            os_ = s + 2
            oe = os_ + data[s + 1]
        else:
            os_ = oe = e + 1  # not read inline
        if oe > e:
            tag, os_, oe = _tlv(data, s, e)
            if tag != OBJECT_IDENTIFIER:
                raise BerError(s, f"varbind name: expected tag 0x06, got 0x{tag:02x}")
        key = data[os_:oe]
        oid = cache.get(key)
        if oid is None:
            oid = _oid(key, os_)
            if len(cache) >= _OID_CACHE_MAX:
                cache.clear()
            cache[key] = oid
        if e - oe >= 2 and data[oe + 1] < 0x80 and data[oe] & 0x1F != 0x1F:
            tag = data[oe]
            vs = oe + 2
            ve = vs + data[oe + 1]
        else:
            ve = e + 1  # not read inline
        if ve > e:
            tag, vs, ve = _tlv(data, oe, e)
        if ve != e:
            raise BerError(ve, "bytes after the value inside a varbind")
        if tag in _INT_RANGE:
            value = _int(data, vs, ve, tag)
        elif tag in _BYTES_TAGS:
            value = data[vs:ve]
            if tag == IP_ADDRESS and len(value) != 4:
                raise BerError(vs, f"IpAddress of {len(value)} octets, not 4")
        elif tag in _ABSENT_BY_TAG:
            if ve != vs:
                raise BerError(vs, f"{TAG_NAMES[tag]} with content octets")
            value = _ABSENT_BY_TAG[tag]
        elif tag == NULL:
            if ve != vs:
                raise BerError(vs, "NULL with content octets")
            value = Absent.NO_SUCH_OBJECT  # as poller.plain_value reads pysnmp's Null
        elif tag == OBJECT_IDENTIFIER:
            value = _oid(data[vs:ve], vs)
        else:
            raise BerError(oe, f"value tag 0x{tag:02x} is not an SNMPv2 value type")
        append_vb((oid, value))
        append_tag(tag)
        pos = e
    return varbinds, tags


_ABSENTS = (Absent.NO_SUCH_OBJECT, Absent.NO_SUCH_INSTANCE, Absent.END_OF_MIB_VIEW)
VarbindLoop = Callable[..., "tuple[list[VarBind], list[int]] | None"]


def varbind_loop(impl: str | None = None) -> tuple[str, VarbindLoop]:
    """The varbind loop to use: `impl` ("c" or "python"), else $RACKWARDEN_SNMP_BER, else the
    compiled one when built. ValueError for another value, RuntimeError when "c" is asked for
    and it is not built."""
    side = choose_side(impl, BER_ENV, lambda: _varbinds_c is not None, lambda: BERVB_C_ERROR)
    if side == "c" and _varbinds_c is not None:
        return "c", _varbinds_c
    return "python", _varbinds_py


def use_varbind_loop(impl: str | None = None) -> str:
    """Choose the loop every decode uses from now on (see varbind_loop); returns its name."""
    global _varbinds
    name, _varbinds = varbind_loop(impl)
    return name


try:
    _varbinds: VarbindLoop = varbind_loop()[1]
except (ValueError, RuntimeError):
    # A bad $RACKWARDEN_SNMP_BER: `rackwarden run` refuses to start on it (cli.py); anything
    # else importing this module decodes with the Python loop meanwhile.
    _varbinds = _varbinds_py


# --- encoding --------------------------------------------------------------------------------


def _len_octets(n: int, long_form: bool) -> bytes:
    # long_form writes every length as 0x82 hi lo, as net-snmp does for SEQUENCEs.
    if long_form and n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > _MAX_LENGTH_OCTETS:
        raise BerError(0, f"length {n} does not fit {_MAX_LENGTH_OCTETS} octets")
    return bytes((0x80 | len(body),)) + body


def _tlv_bytes(tag: int, content: bytes, long_form: bool = False) -> bytes:
    return bytes((tag,)) + _len_octets(len(content), long_form) + content


# OID tuple -> content bytes: every request of a poll names the same column OIDs again.
_OID_BYTES_CACHE: dict[tuple[int, ...], bytes] = {}


def encode_oid_content(oid: Sequence[int]) -> bytes:
    """The content octets of an OID; ValueError if it is not a valid SNMP OID."""
    key = tuple(oid)
    cached = _OID_BYTES_CACHE.get(key)
    if cached is None:
        cached = _encode_oid_content(key)
        if len(_OID_BYTES_CACHE) >= _OID_CACHE_MAX:
            _OID_BYTES_CACHE.clear()
        _OID_BYTES_CACHE[key] = cached
    return cached


def _encode_oid_content(oid: tuple[int, ...]) -> bytes:
    if len(oid) < 2 or len(oid) > MAX_OID_ARCS:
        raise ValueError(f"OID needs 2..{MAX_OID_ARCS} arcs: {oid!r}")
    x, y = oid[0], oid[1]
    if x not in (0, 1, 2) or y < 0 or (x < 2 and y > 39):
        raise ValueError(f"OID first arcs {x}.{y} are not encodable")
    out = bytearray()
    for sub in (40 * x + y, *oid[2:]):
        if not 0 <= sub <= (_SUBID_MAX + 80 if sub == 40 * x + y else _SUBID_MAX):
            raise ValueError(f"OID sub-identifier {sub} out of range")
        chunk = [sub & 0x7F]
        sub >>= 7
        while sub:
            chunk.append(0x80 | (sub & 0x7F))
            sub >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def _int_content(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


def encode_value(tag: int, value: SnmpValue | None, long_form: bool = False) -> bytes:
    """One value's TLV. ValueError if the value does not fit the tag."""
    if tag in _INT_RANGE:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{TAG_NAMES[tag]} needs an int, not {value!r}")
        low, high = _INT_RANGE[tag]
        if not low <= value <= high:
            raise ValueError(f"{TAG_NAMES[tag]} {value} is outside {low}..{high}")
        return _tlv_bytes(tag, _int_content(value), long_form)
    if tag in _BYTES_TAGS:
        if not isinstance(value, bytes):
            raise ValueError(f"{TAG_NAMES[tag]} needs bytes, not {value!r}")
        if tag == IP_ADDRESS and len(value) != 4:
            raise ValueError("IpAddress needs 4 octets")
        return _tlv_bytes(tag, value, long_form)
    if tag == OBJECT_IDENTIFIER:
        if not isinstance(value, tuple):
            raise ValueError(f"OBJECT IDENTIFIER needs a tuple, not {value!r}")
        return _tlv_bytes(tag, encode_oid_content(value), long_form)
    if tag == NULL or tag in _ABSENT_BY_TAG:
        return bytes((tag, 0))
    raise ValueError(f"tag 0x{tag:02x} is not an SNMPv2 value type")


def tag_of(value: SnmpValue) -> int:
    """The natural tag of a plain value (ints as INTEGER or Counter64 when wider)."""
    if isinstance(value, Absent):
        return _TAG_BY_ABSENT[value]
    if isinstance(value, bytes):
        return OCTET_STRING
    if isinstance(value, tuple):
        return OBJECT_IDENTIFIER
    if isinstance(value, int):
        return INTEGER if _INT32_MIN <= value <= _INT32_MAX else COUNTER64
    raise ValueError(f"no SNMP tag for {value!r}")


def encode_message(
    *,
    community: bytes,
    pdu_type: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Sequence[tuple[Oid, int, SnmpValue | None]],
    version: int = VERSION_2C,
    long_form: bool = False,
) -> bytes:
    """A whole message from (oid, tag, value) varbinds. `long_form` writes every SEQUENCE and
    PDU length as 0x82 hi lo (net-snmp's style) to exercise decoders on non-minimal lengths."""
    msg = (
        encode_value(INTEGER, version)
        + encode_value(OCTET_STRING, community)
        + encode_pdu(pdu_type=pdu_type, request_id=request_id, error_status=error_status,
                     error_index=error_index, varbinds=varbinds, long_form=long_form)
    )
    out = _tlv_bytes(SEQUENCE, msg, long_form)
    if len(out) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(out)} bytes is beyond {MAX_MESSAGE_BYTES}")
    return out


def encode_pdu(
    *,
    pdu_type: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Sequence[tuple[Oid, int, SnmpValue | None]],
    long_form: bool = False,
) -> bytes:
    """One PDU's TLV (what a v2c message or an SNMPv3 scopedPDU carries last)."""
    if pdu_type not in PDU_TAGS:
        raise ValueError(f"PDU tag 0x{pdu_type:02x} is not an SNMPv2 PDU")
    body = bytearray()
    for oid, tag, value in varbinds:
        vb = _tlv_bytes(OBJECT_IDENTIFIER, encode_oid_content(oid)) + encode_value(tag, value)
        body += _tlv_bytes(SEQUENCE, vb, long_form)
    pdu = (
        encode_value(INTEGER, request_id)
        + encode_value(INTEGER, error_status)
        + encode_value(INTEGER, error_index)
        + _tlv_bytes(SEQUENCE, bytes(body), long_form)
    )
    return _tlv_bytes(pdu_type, pdu, long_form)


def tlv_bytes(tag: int, content: bytes) -> bytes:
    """tag, minimal definite length, content."""
    return _tlv_bytes(tag, content)


def read_tlv(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """(content start, content end) of the element at data[pos] inside data[:end], which must
    carry `tag`; BerError naming `what` otherwise."""
    return _expect(data, pos, end, tag, what)


def read_int(data: bytes, start: int, stop: int, low: int, high: int, what: str) -> int:
    """The INTEGER content data[start:stop], which must lie in low..high."""
    value = _int(data, start, stop, INTEGER) if stop - start <= 5 else None
    if value is None or not low <= value <= high:
        shown = "too wide" if value is None else str(value)
        raise BerError(start, f"{what} {shown} is outside {low}..{high}")
    return value


def encode_getbulk(
    community: bytes,
    request_id: int,
    non_repeaters: int,
    max_repetitions: int,
    oids: Sequence[Oid],
) -> bytes:
    """The GetBulkRequest the poller sends: every varbind value NULL."""
    return encode_message(
        community=community,
        pdu_type=GET_BULK_REQUEST,
        request_id=request_id,
        error_status=non_repeaters,
        error_index=max_repetitions,
        varbinds=[(oid, NULL, None) for oid in oids],
    )
