"""The varbind loop in C (drivers/snmp/_bervb.c) against its Python twin in ber.py.

The C loop must read exactly what the Python loop reads: on every input, either both give the
same varbinds (the same values of the same types) and tags, or the Python loop raises a
BerError and the C loop returns None (the decoder then runs the Python loop, which names the
fault). Inputs are well-formed VarBindLists of every value type in short, long-form and
non-minimal lengths, the same with bytes flipped, replaced, cut or added, integers at and past
their types' bounds and OIDs at the arc bounds, and random bytes. A long run of the C loop
neither leaks objects nor references. The C tests are skipped, loudly, only when the module
is not built; tests/unit/test_snmp_ber.py runs the whole codec's tests with each loop.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.snmp import ber
from rackwarden.drivers.snmp.ifmib import Absent

from tests.unit.test_snmp_ber import MALFORMED

if ber.BERVB_C_ERROR is not None:
    print(f"\n*** test_snmp_ber_c: {ber.BERVB_C_ERROR}: C varbind loop tests SKIPPED ***")
pytestmark = pytest.mark.skipif(ber.BERVB_C_ERROR is not None, reason=str(ber.BERVB_C_ERROR))

U32, U64 = 2**32 - 1, 2**64 - 1
INT_TAGS = [ber.INTEGER, ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64]


def c_loop(data: bytes, pos: int, vend: int) -> Any:
    return ber.varbind_loop("c")[1](data, pos, vend, ber._ABSENTS)


def typed(vbs: list[Any]) -> list[Any]:
    """Varbinds with every value's type beside it (True == 1, but an int is not a bool)."""
    return [(oid, type(oid), tuple(map(type, oid)), value, type(value)) for oid, value in vbs]


def agree(data: bytes, pos: int = 0, vend: int | None = None) -> bool:
    """Both loops on data[pos:vend]; True when they read it, False when both refused it."""
    vend = len(data) if vend is None else vend
    try:
        want = ber._varbinds_py(data, pos, vend)
    except ber.BerError:
        want = None
    got = c_loop(data, pos, vend)
    if want is None:
        assert got is None, f"C read what Python refuses: {data[pos:vend].hex()}"
        return False
    assert got is not None, f"C refused what Python reads: {data[pos:vend].hex()}"
    assert typed(got[0]) == typed(want[0]) and got[1] == want[1]
    return True


def _len(n: int, width: int) -> bytes:
    """A definite length: short when width is 0 and it fits, else `width` long-form octets."""
    if width == 0 and n < 0x80:
        return bytes((n,))
    w = max(width, (n.bit_length() + 7) // 8, 1)
    return bytes((0x80 | w,)) + n.to_bytes(w, "big")


def tlv(tag: int, content: bytes, width: int = 0) -> bytes:
    return bytes((tag,)) + _len(len(content), width) + content


def int_content(value: int, pad: int = 0) -> bytes:
    """Two's complement, minimal, then `pad` redundant sign octets (BER allows them)."""
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return (b"\xff" if value < 0 else b"\x00") * pad + body


arc = st.one_of(st.integers(0, 300), st.integers(0, U32))
# Valid OIDs, and raw content octets leaning on the bytes the sub-identifier rules are about.
oid_contents = st.one_of(
    st.tuples(st.integers(0, 1), st.integers(0, 39), st.lists(arc, max_size=20)),
    st.tuples(st.just(2), st.integers(0, U32 - 80), st.lists(arc, max_size=20)),
).map(lambda t: ber.encode_oid_content((t[0], t[1], *t[2]))) | st.lists(
    st.sampled_from([0x00, 0x01, 0x2B, 0x7F, 0x80, 0x81, 0x8F, 0xFF]), max_size=8).map(bytes)
# Integers around every bound the C loop checks by hand (the 64-bit edges, 9 octets).
edges = [0, 1, -1, 127, 128, -128, -129, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, U32, 2**32,
         2**63 - 1, 2**63, -(2**63), -(2**63) - 1, U64, 2**64, -(2**64)]
ints = st.one_of(st.sampled_from(edges), st.integers(-(2**66), 2**66))


@st.composite
def values(draw: st.DrawFn, width: int) -> bytes:
    kind = draw(st.sampled_from(["int", "bytes", "ip", "absent", "null", "oid", "raw"]))
    if kind == "int":
        content = int_content(draw(ints), draw(st.integers(0, 2)))
        return tlv(draw(st.sampled_from(INT_TAGS)), content[: ber.MAX_INT_OCTETS + 1], width)
    if kind == "bytes":
        tag = draw(st.sampled_from([ber.OCTET_STRING, ber.OPAQUE]))
        return tlv(tag, draw(st.binary(max_size=300)), width)
    if kind == "ip":
        return tlv(ber.IP_ADDRESS, draw(st.binary(min_size=3, max_size=5)), width)
    if kind == "absent":
        tag = draw(st.sampled_from([ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW]))
        return tlv(tag, b"", width)
    if kind == "null":
        return tlv(ber.NULL, b"", width)
    if kind == "oid":
        return tlv(ber.OBJECT_IDENTIFIER, draw(oid_contents), width)
    return tlv(draw(st.integers(0, 255)), draw(st.binary(max_size=6)), width)


@st.composite
def varbind_lists(draw: st.DrawFn) -> bytes:
    out = bytearray()
    for _ in range(draw(st.integers(0, 10))):
        width = draw(st.sampled_from([0, 0, 1, 2, 4]))
        body = tlv(ber.OBJECT_IDENTIFIER, draw(oid_contents), width) + draw(values(width))
        out += tlv(ber.SEQUENCE, body, draw(st.sampled_from([0, 2, 2, 3])))
    return bytes(out)


@settings(max_examples=400)
@given(varbind_lists(), st.binary(max_size=3), st.binary(max_size=3))
def test_c_reads_what_python_reads(vbs: bytes, before: bytes, after: bytes) -> None:
    data = before + vbs + after
    agree(data, len(before), len(before) + len(vbs))


@settings(max_examples=400)
@given(varbind_lists(), st.data())
def test_edited_lists_are_read_alike_or_refused_alike(vbs: bytes, data: st.DataObject) -> None:
    raw = bytearray(vbs or b"\x30\x00")
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        edit = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        if edit == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif edit == "set":
            raw[i] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x85,
                                                0x1F, 0xFF]))
        elif edit == "cut":
            del raw[i:]
            if not raw:
                break
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=3))
    agree(bytes(raw))


@settings(max_examples=300)
@given(varbind_lists())
def test_every_cut_is_read_alike_or_refused_alike(vbs: bytes) -> None:
    for cut in range(len(vbs)):
        agree(vbs, 0, cut)
        agree(vbs[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=120))
@example(b"\x30\x06\x06\x01\x2b\x41\x01\xff")
@example(b"\x30\x0d\x06\x01\x2b\x46\x09\xff\x80\x00\x00\x00\x00\x00\x00\x00")
def test_random_bytes_are_read_alike_or_refused_alike(data: bytes) -> None:
    agree(data)


@pytest.mark.parametrize("tag", INT_TAGS)
@pytest.mark.parametrize("value", edges)
@pytest.mark.parametrize("pad", [0, 1, 2])
def test_integers_at_their_bounds(tag: int, value: int, pad: int) -> None:
    oid = tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06")
    vb = tlv(ber.SEQUENCE, oid + tlv(tag, int_content(value, pad)))
    low, high = ber._INT_RANGE[tag]
    fits = low <= value <= high and len(int_content(value, pad)) <= ber.MAX_INT_OCTETS
    assert agree(vb) is fits


@settings(max_examples=400)
@given(st.sampled_from(INT_TAGS), st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]),
       st.one_of(st.sampled_from(edges), st.integers(-(2**63), U64)))
def test_nine_octet_integers(tag: int, first: int, low64: int) -> None:
    """Only 0x00, and 0xFF before a set bit, lead a 9-octet integer into any type's range."""
    content = bytes((first,)) + (low64 & U64).to_bytes(8, "big")
    value = int.from_bytes(content, "big", signed=True)
    low, high = ber._INT_RANGE[tag]
    vb = tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06") + tlv(tag, content))
    assert agree(vb) is (low <= value <= high)


@pytest.mark.parametrize(("varbind", "reason"), MALFORMED)
def test_each_malformation_is_refused_alike(varbind: bytes, reason: str) -> None:
    good = tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06") + tlv(ber.NULL, b""))
    assert not agree(varbind)
    assert not agree(good + varbind)
    if not varbind.startswith((b"\x30\x7f", b"\x30\x80")):  # these swallow what follows
        assert not agree(good + varbind + good)


@pytest.mark.parametrize("arcs", [127, 128, 129])
@pytest.mark.parametrize("last", [0, 127, 128, U32, U32 + 1])
def test_oids_at_the_arc_bounds(arcs: int, last: int) -> None:
    oid = (1, 3, *([7] * (arcs - 3)), last)
    content = bytes([0x2B] + [7] * (arcs - 3)) + _subid(last)
    vb = tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, content) + tlv(ber.NULL, b""))
    fits = arcs <= ber.MAX_OID_ARCS and last <= U32
    assert agree(vb) is fits
    if fits:
        assert c_loop(vb, 0, len(vb))[0] == [(oid, Absent.NO_SUCH_OBJECT)]


def _subid(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def test_the_varbind_count_bound() -> None:
    one = tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06") + tlv(ber.NULL, b""))
    assert agree(one * ber.MAX_VARBINDS)
    assert not agree(one * (ber.MAX_VARBINDS + 1))


def test_bounds_outside_the_data_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        c_loop(b"\x30\x00", 0, 3)
    with pytest.raises(ValueError, match="outside"):
        c_loop(b"\x30\x00", -1, 2)


def test_a_long_run_leaks_nothing() -> None:
    vb = b"".join(
        tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06\x01\x02\x01\x1f\x01\x01\x01\x06"
                                                     + _subid(i)) + tlv(tag, content))
        for i, (tag, content) in enumerate([
            (ber.COUNTER64, int_content(2**64 - 1)), (ber.OCTET_STRING, b"gi1"),
            (ber.INTEGER, int_content(-5)), (ber.END_OF_MIB_VIEW, b""),
            (ber.OBJECT_IDENTIFIER, b"\x2b\x06\x01"), (ber.IP_ADDRESS, b"\x0a\x00\x00\x01")])
    )
    bad = vb + b"\x30\x03\x06\x01"  # a cut varbind at the end: every object made is released
    for data in (vb, bad):
        for _ in range(2000):
            c_loop(data, 0, len(data))
        gc.collect()
        refs = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
        tracemalloc.start()
        snap = tracemalloc.take_snapshot()
        for _ in range(20_000):
            c_loop(data, 0, len(data))
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap, "filename"))
        tracemalloc.stop()
        assert grown < 64 * 1024, f"{grown} bytes kept after 20,000 runs"
        if refs is not None:
            assert sys.gettotalrefcount() - refs < 100


def test_the_choice_of_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ber.BER_ENV, "python")
    assert ber.varbind_loop()[0] == "python"
    assert ber.varbind_loop("c")[0] == "c"
    monkeypatch.setenv(ber.BER_ENV, "c")
    assert ber.varbind_loop()[0] == "c"
    monkeypatch.setenv(ber.BER_ENV, "fast")
    with pytest.raises(ValueError, match="RACKWARDEN_SNMP_BER must be 'c' or 'python'"):
        ber.varbind_loop()
    monkeypatch.delenv(ber.BER_ENV)
    assert ber.varbind_loop()[0] == "c"
    monkeypatch.setattr(ber, "_varbinds_c", None)
    assert ber.varbind_loop()[0] == "python"
    with pytest.raises(RuntimeError, match="RACKWARDEN_SNMP_BER=c but"):
        ber.varbind_loop("c")


def test_a_decode_uses_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_message goes through the C loop when it is chosen, and through Python when C
    declines: a fault is named by the Python loop either way."""
    calls: list[str] = []
    real_c, real_py = ber.varbind_loop("c")[1], ber._varbinds_py

    def spy_c(*args: Any) -> Any:
        calls.append("c")
        return real_c(*args)

    def spy_py(*args: Any) -> Any:
        calls.append("python")
        return real_py(*args)

    monkeypatch.setattr(ber, "_varbinds", spy_c)
    monkeypatch.setattr(ber, "_varbinds_py", spy_py)
    good = tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06") + tlv(ber.COUNTER32, b"\x05"))
    msg = ber.encode_message(community=b"c", pdu_type=ber.RESPONSE, request_id=1, error_status=0,
                             error_index=0, varbinds=[((1, 3, 6), ber.COUNTER32, 5)])
    assert ber.decode_message(msg).varbinds == [((1, 3, 6), 5)] and calls == ["c"]
    calls.clear()
    bad = msg.replace(good, tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, b"\x2b\x06")
                                + tlv(ber.COUNTER32, b"\xff")))
    assert bad != msg
    with pytest.raises(ber.BerError, match="Counter32 -1 is outside"):
        ber.decode_message(bad)
    assert calls == ["c", "python"]
