"""sFlow v5 decoder: crash-shape fixtures, never-raise properties, encoder round trip."""

from __future__ import annotations

import dataclasses
import importlib.util
import struct
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_ntop
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.packets import flow_sample_from_frame
from rackwarden.drivers.sflow import decoder as dec
from rackwarden.drivers.sflow.decoder import (
    DatagramHeader,
    DecodeResult,
    Sample,
    decode_datagram,
    decode_unguarded,
)
from rackwarden.drivers.sflow.encoder import (
    encode_counter_sample,
    encode_datagram,
    encode_flow_sample,
    pack_datagrams,
)
from rackwarden.drivers.sflow.sequence import SeqEvent, SequenceTracker
from rackwarden.policies.flowfacts import (
    CounterSample,
    FlowSample,
    effective_sampling_rate,
    estimate,
    new_flow_sample,
    scale_count,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sflow"
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = 1234.5


def load(name: str) -> bytes:
    lines = (FIXTURES / f"{name}.hex").read_text().splitlines()
    return bytes.fromhex("".join(x for x in lines if not x.startswith("#")))


def decode(name: str) -> DecodeResult:
    r = decode_unguarded(load(name), NOW, AT)
    assert decode_datagram(load(name), NOW, AT) == r  # the guard changes nothing on these
    return r


def assert_dropped(r: DecodeResult, reason: str, offset: int) -> None:
    assert (r.error, r.error_offset, r.samples) == (reason, offset, [])


# -- crash-shape fixtures: one named test each ---------------------------------------------------

def test_fixture_files_match_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    on_disk = {p.stem for p in FIXTURES.glob("*.hex")}
    assert on_disk == set(mod.FIXTURES)
    for name, (expect, _what, data) in mod.FIXTURES.items():
        assert load(name) == data, name
        r = decode_datagram(data, NOW, AT)
        assert (r.error or "ok") == expect, name


def test_valid_flow_and_counter() -> None:
    r = decode("valid_flow_and_counter")
    assert (r.error, r.header) == (None, DatagramHeader("192.0.2.1", 0, 7, 123456))
    assert dict(r.skipped) == {}
    flow, counters = r.samples
    assert isinstance(flow, FlowSample) and isinstance(counters, CounterSample)
    assert (flow.source, flow.agent, flow.input_ifindex, flow.output_ifindex, flow.sampling_rate,
            flow.now, flow.at, flow.frame_length, len(flow.header)) == (
        "sflow", "192.0.2.1", 3, 7, 512, NOW, AT, 78, 74)
    assert (flow.src_mac, flow.dst_mac, flow.ethertype, flow.src_ip, flow.dst_ip, flow.protocol,
            flow.src_port, flow.dst_port, flow.tcp_flags, flow.ip_total_length,
            flow.parse_error) == (
        "02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, "192.0.2.10", "198.51.100.7", 6,
        40000, 25, 0x02, 60, None)
    assert (flow.sample_sequence, flow.source_id_type, flow.source_id_index, flow.sample_pool,
            flow.drops, flow.stripped, flow.header_protocol, flow.output_format) == (
        42, 0, 3, 512 * 42, 0, 4, 1, 0)
    assert (flow.estimated_packets, flow.estimated_bytes) == (512, 78 * 512)
    assert (counters.if_index, counters.if_speed_bps, counters.in_octets, counters.out_octets,
            counters.in_packets, counters.out_packets, counters.admin_up, counters.oper_up,
            counters.sample_sequence) == (3, 10**9, 123456789, 987654321, 13, 25, True, True, 9)


def test_header_length_larger_than_datagram() -> None:
    assert_dropped(decode("header_length_larger_than_datagram"), dec.HEADER_LENGTH_OVERFLOW, 88)


def test_header_length_past_record_end() -> None:
    r = decode("header_length_past_record_end")
    assert_dropped(r, dec.HEADER_LENGTH_OVERFLOW, 88)
    assert r.header == DatagramHeader("192.0.2.1", 0, 7, 123456)  # kept to blame the agent


def test_sample_count_ffffffff() -> None:
    assert_dropped(decode("sample_count_ffffffff"), dec.SAMPLE_COUNT_OVERFLOW, 24)


def test_sample_count_near_2_32() -> None:
    assert_dropped(decode("sample_count_near_2_32"), dec.SAMPLE_COUNT_OVERFLOW, 24)


def test_sample_count_one_too_many() -> None:
    assert_dropped(decode("sample_count_one_too_many"), dec.TRUNCATED_SAMPLE, 284)


def test_sample_length_ffffffff() -> None:
    assert_dropped(decode("sample_length_ffffffff"), dec.SAMPLE_LENGTH_OVERFLOW, 32)


def test_truncated_mid_sample() -> None:
    assert_dropped(decode("truncated_mid_sample"), dec.SAMPLE_LENGTH_OVERFLOW, 32)


def test_truncated_mid_header() -> None:
    r = decode("truncated_mid_header")
    assert_dropped(r, dec.TOO_SHORT, 12)
    assert r.header is None


def test_record_count_ffffffff() -> None:
    assert_dropped(decode("record_count_ffffffff"), dec.RECORD_COUNT_OVERFLOW, 64)


def test_nested_record_length_overflow() -> None:
    assert_dropped(decode("nested_record_length_overflow"), dec.RECORD_LENGTH_OVERFLOW, 72)


def test_zero_length_flow_sample() -> None:
    assert_dropped(decode("zero_length_flow_sample"), dec.SAMPLE_TOO_SHORT, 36)


def test_zero_length_raw_header_record() -> None:
    assert_dropped(decode("zero_length_raw_header_record"), dec.RECORD_TOO_SHORT, 76)


def test_short_generic_counters() -> None:
    assert_dropped(decode("short_generic_counters"), dec.RECORD_TOO_SHORT, 56)


def test_bad_version() -> None:
    assert_dropped(decode("bad_version"), dec.BAD_VERSION, 0)


def test_bad_address_type() -> None:
    assert_dropped(decode("bad_address_type"), dec.BAD_ADDRESS_TYPE, 4)


def test_unknown_enterprise_sample_is_skipped_by_length() -> None:
    r = decode("unknown_enterprise_sample")
    assert (r.error, dict(r.skipped), len(r.samples)) == (None, {dec.UNKNOWN_SAMPLE: 1}, 1)
    assert isinstance(r.samples[0], FlowSample) and r.samples[0].dst_port == 25


def test_unknown_flow_record_and_zero_length_record_are_skipped() -> None:
    r = decode("unknown_flow_record_and_zero_length_record")
    assert (r.error, dict(r.skipped)) == (None, {dec.UNKNOWN_FLOW_RECORD: 2})
    (s,) = r.samples
    assert isinstance(s, FlowSample) and (s.src_ip, s.tcp_flags) == ("192.0.2.10", 0x02)


def test_flow_sample_without_header_is_skipped() -> None:
    r = decode("flow_sample_without_header")
    assert (r.error, r.samples, dict(r.skipped)) == (
        None, [], {dec.UNKNOWN_FLOW_RECORD: 1, dec.FLOW_SAMPLE_WITHOUT_HEADER: 1})


def test_zero_length_header() -> None:
    r = decode("zero_length_header")
    (s,) = r.samples
    assert isinstance(s, FlowSample)
    assert (r.error, s.header, s.src_mac, s.src_ip, s.parse_error, s.frame_length) == (
        None, b"", None, None, "truncated", 78)


def test_trailing_bytes_are_noted_not_fatal() -> None:
    r = decode("trailing_bytes")
    assert (r.error, len(r.samples), dict(r.skipped)) == (None, 2, {dec.TRAILING_BYTES: 1})


def test_naive_datetime_is_refused_without_raising() -> None:
    r = decode_datagram(load("valid_flow_and_counter"), NOW, datetime(2025, 1, 1))
    assert (r.error, r.samples) == (dec.NAIVE_AT, [])


def test_a_decoder_bug_costs_one_datagram_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(dec, "parse_tuple", boom)
    r = decode_datagram(load("valid_flow_and_counter"), NOW, AT)
    assert (r.error, r.samples) == (dec.INTERNAL_ERROR, [])
    with pytest.raises(RuntimeError):
        decode_unguarded(load("valid_flow_and_counter"), NOW, AT)


# -- properties --------------------------------------------------------------------------------

def _check_invariants(data: bytes, r: DecodeResult) -> None:
    assert r.error is None or r.error in dec.ERROR_REASONS
    if r.error is not None:
        assert r.samples == []
        assert r.error_offset is not None and 0 <= r.error_offset <= len(data)
    # Bounded memory: the bytes we keep never exceed what came in.
    assert sum(len(s.header) for s in r.samples if isinstance(s, FlowSample)) <= len(data)
    assert len(r.samples) <= len(data) // 8


@settings(max_examples=3000, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check_invariants(data, decode_unguarded(data, NOW, AT))


VALID_PREFIX = struct.pack("!IIIIIII", 5, 1, 0xC0000201, 0, 1, 1000, 3)


@settings(max_examples=3000, deadline=None)
@given(body=st.lists(st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 88, 128, 0xFFFFFFFF, 0x7FFFFFFF, 1001, 4096 | 1]),
    st.integers(0, 0xFFFFFFFF)), max_size=80))
def test_random_words_after_a_valid_header_never_raise(body: list[int]) -> None:
    # Mostly small, format-like and length-like words, so the walk goes deep.
    data = VALID_PREFIX + struct.pack(f"!{len(body)}I", *body)
    _check_invariants(data, decode_unguarded(data, NOW, AT))


def _valid_datagrams() -> list[bytes]:
    return [load("valid_flow_and_counter"), load("unknown_flow_record_and_zero_length_record"),
            _scapy_datagram(expanded=False), _scapy_datagram(expanded=True)]


def _scapy_datagram(expanded: bool) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    frames = [bytes(Ether() / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
        flags="S") / (b"x" * 300)), bytes(Ether() / IPv6() / TCP(dport=443) / (b"y" * 100))]
    samples: list[Sample] = [flow_sample_from_frame(
        f, source="sflow", agent="2001:db8::7", now=NOW, at=AT, sampling_rate=1000,
        input_ifindex=5, output_ifindex=6, snaplen=128) for f in frames]
    samples.append(_counters())
    return encode_datagram(DatagramHeader("2001:db8::7", 1, 99, 5000), samples, expanded=expanded)


def test_truncation_at_every_offset_never_raises() -> None:
    for data in _valid_datagrams():
        full = decode_unguarded(data, NOW, AT)
        assert full.error is None
        for cut in range(len(data)):
            r = decode_unguarded(data[:cut], NOW, AT)
            _check_invariants(data[:cut], r)
            assert r.error is not None, cut  # every proper prefix of these is malformed


def test_every_word_set_to_extremes_never_raises() -> None:
    for data in _valid_datagrams():
        for off in range(0, len(data) - 3, 4):
            for word in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(data)):
                mutated = data[:off] + struct.pack("!I", word) + data[off + 4:]
                _check_invariants(mutated, decode_unguarded(mutated, NOW, AT))


def test_every_byte_flipped_never_raises() -> None:
    data = _valid_datagrams()[2]
    for i in range(len(data)):
        mutated = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        _check_invariants(mutated, decode_unguarded(mutated, NOW, AT))


def test_memoryview_and_bytearray_inputs() -> None:
    data = load("valid_flow_and_counter")
    want = decode_datagram(data, NOW, AT)
    assert decode_datagram(memoryview(data), NOW, AT) == want
    assert decode_datagram(bytearray(data), NOW, AT) == want


# -- round trip --------------------------------------------------------------------------------

def _counters(**over: Any) -> CounterSample:
    base: dict[str, Any] = dict(
        source="sflow", agent="2001:db8::7", now=NOW, at=AT, if_index=5, if_type=6,
        if_speed_bps=10_000_000_000, if_direction=1, if_status=3, in_octets=2**63 + 5,
        in_ucast_pkts=1, in_multicast_pkts=2, in_broadcast_pkts=3, in_discards=4, in_errors=5,
        in_unknown_protos=6, out_octets=7, out_ucast_pkts=8, out_multicast_pkts=9,
        out_broadcast_pkts=10, out_discards=11, out_errors=12, promiscuous_mode=0,
        sample_sequence=77, source_id_type=0, source_id_index=5)
    base.update(over)
    return CounterSample(**base)


U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


def _text(addr: IPv4Address | IPv6Address) -> str:
    # Addresses are formatted by inet_ntop (RFC 5952: ::ffff:192.0.2.1), which for mapped
    # IPv4 differs from Python 3.11's ipaddress str() (::ffff:c000:201).
    return inet_ntop(AF_INET if addr.version == 4 else AF_INET6, addr.packed)


AGENTS = st.one_of(st.just(""), st.ip_addresses().map(_text))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    l2 = Ether(src=draw(st.sampled_from(["02:00:00:00:00:01", "0a:1b:2c:3d:4e:5f"])),
               dst="02:00:00:00:00:02")
    if draw(st.booleans()):
        l2 = l2 / Dot1Q(vlan=draw(st.integers(0, 4095)))
    l3: Any
    if draw(st.booleans()):
        l3 = IP(src=str(draw(st.ip_addresses(v=4))), dst=str(draw(st.ip_addresses(v=4))))
    else:
        l3 = IPv6(src=_text(draw(st.ip_addresses(v=6))), dst=_text(draw(st.ip_addresses(v=6))))
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    l4 = (TCP(sport=sport, dport=dport, flags=draw(st.integers(0, 255))) if kind == "tcp"
          else UDP(sport=sport, dport=dport) if kind == "udp" else ICMP())
    return bytes(l2 / l3 / l4 / (b"\x00" * draw(st.integers(0, 1400))))


@st.composite
def flow_samples(draw: st.DrawFn, agent: str) -> FlowSample:
    frame = draw(st.one_of(frames(), st.binary(max_size=200)))
    snaplen = draw(st.sampled_from([None, 64, 128, 200]))
    out_fmt = draw(st.sampled_from([0, 0, 0, 1, 2]))
    ifindex = st.one_of(st.none(), st.integers(1, 2**32 - 1))
    s = flow_sample_from_frame(
        frame, source="sflow", agent=agent, now=NOW, at=AT,
        frame_length=draw(st.integers(len(frame), 2**32 - 1)),
        sampling_rate=draw(U32), input_ifindex=draw(ifindex),
        output_ifindex=draw(ifindex) if out_fmt == 0 else None, snaplen=snaplen)
    return dataclasses.replace(
        s, output_format=out_fmt, sample_sequence=draw(U32),
        source_id_type=draw(st.integers(0, 255) | U32), source_id_index=draw(U32),
        sample_pool=draw(U32), drops=draw(U32), stripped=draw(U32))


@st.composite
def counter_samples(draw: st.DrawFn, agent: str) -> CounterSample:
    return _counters(
        agent=agent, if_index=draw(U32), if_type=draw(U32), if_speed_bps=draw(U64),
        if_direction=draw(U32), if_status=draw(U32), in_octets=draw(U64), out_octets=draw(U64),
        in_ucast_pkts=draw(U32), out_errors=draw(U32), promiscuous_mode=draw(U32),
        sample_sequence=draw(U32), source_id_type=draw(U32), source_id_index=draw(U32))


@st.composite
def datagrams(draw: st.DrawFn) -> tuple[DatagramHeader, list[Sample]]:
    agent = draw(AGENTS)
    header = DatagramHeader(agent, draw(U32), draw(U32), draw(U32))
    samples = draw(st.lists(st.one_of(flow_samples(agent), counter_samples(agent)), max_size=6))
    return header, samples


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dg=datagrams(), expanded=st.sampled_from([None, True]))
def test_round_trip(dg: tuple[DatagramHeader, list[Sample]], expanded: bool | None) -> None:
    header, samples = dg
    data = encode_datagram(header, samples, expanded=expanded)
    r = decode_unguarded(data, NOW, AT)
    assert (r.error, r.header, dict(r.skipped)) == (None, header, {})
    assert r.samples == samples


def test_compact_form_is_used_when_values_fit_and_expanded_otherwise() -> None:
    s = flow_sample_from_frame(b"\x02" * 60, source="sflow", agent="192.0.2.1", now=NOW, at=AT,
                               input_ifindex=7)
    assert struct.unpack_from("!I", encode_flow_sample(s))[0] == dec.FLOW_SAMPLE
    big = dataclasses.replace(s, input_ifindex=0x40000000)
    assert struct.unpack_from("!I", encode_flow_sample(big))[0] == dec.FLOW_SAMPLE_EXPANDED
    c = _counters(source_id_index=0x1000000)
    assert struct.unpack_from("!I", encode_counter_sample(c))[0] == dec.COUNTER_SAMPLE_EXPANDED


def test_output_discarded_and_multiple_formats() -> None:
    s = flow_sample_from_frame(b"\x02" * 60, source="sflow", agent="192.0.2.1", now=NOW, at=AT,
                               input_ifindex=7)
    for fmt in (1, 2):
        x = dataclasses.replace(s, output_format=fmt, sample_sequence=1, source_id_type=0,
                                source_id_index=7, sample_pool=1, drops=0, stripped=0)
        (got,) = decode_unguarded(encode_datagram(DatagramHeader("192.0.2.1", 0, 1, 1), [x]),
                                  NOW, AT).samples
        assert isinstance(got, FlowSample)
        assert (got.output_format, got.output_ifindex, got.input_ifindex) == (fmt, None, 7)


def test_pack_datagrams_respects_size_and_numbers_sequences() -> None:
    s = flow_sample_from_frame(b"\x02" * 128, source="sflow", agent="192.0.2.1", now=NOW, at=AT,
                               frame_length=1500, sampling_rate=100, input_ifindex=1)
    out = pack_datagrams([s] * 20, agent="192.0.2.1", first_sequence=10, max_datagram_bytes=1400)
    assert all(len(d) <= 1400 for d in out)
    results = [decode_unguarded(d, NOW, AT) for d in out]
    assert [r.header.sequence for r in results if r.header] == list(range(10, 10 + len(out)))
    assert sum(len(r.samples) for r in results) == 20


def test_fast_builder_equals_the_checked_constructor() -> None:
    s = decode("valid_flow_and_counter").samples[0]
    values = [getattr(s, f) for f in FlowSample.__slots__]
    assert type(s) is FlowSample
    assert new_flow_sample(*values) == FlowSample(*values) == s
    assert hash(new_flow_sample(*values)) == hash(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.src_ip = "10.0.0.1"  # type: ignore[misc, unused-ignore]
    with pytest.raises(ValueError):
        dataclasses.replace(s, at=datetime(2025, 1, 1))  # naive: the checked path refuses it


# -- estimates ---------------------------------------------------------------------------------

def test_estimates_scale_by_each_samples_rate() -> None:
    base = flow_sample_from_frame(b"\x02" * 60, source="sflow", agent="a", now=NOW, at=AT,
                                  frame_length=1000, sampling_rate=512)
    other = dataclasses.replace(base, sampling_rate=2048, frame_length=64)
    zero = dataclasses.replace(base, sampling_rate=0)  # a broken agent: count it as 1-in-1
    e = estimate([base, other, zero])
    assert (e.samples, e.packets, e.octets) == (3, 512 + 2048 + 1,
                                                1000 * 512 + 64 * 2048 + 1000)
    assert scale_count(10, 512) == 5120 and scale_count(10, 0) == 10
    assert effective_sampling_rate(51_200, 100) == 512.0
    assert effective_sampling_rate(100, 0) is None


# -- sequence tracking -------------------------------------------------------------------------

@pytest.mark.parametrize("steps,events,lost,resets", [
    ([(1, 100), (2, 200), (3, 300)], ["first", "in_order", "in_order"], 0, 0),
    ([(1, 100), (5, 200)], ["first", "gap"], 3, 0),
    ([(1, 100), (3, 200), (2, 190)], ["first", "gap", "late"], 0, 0),
    ([(1, 100), (1, 100)], ["first", "duplicate"], 0, 0),
    ([(5000, 900_000), (1, 50)], ["first", "reset"], 0, 1),  # agent rebooted
    ([(3, 900_000), (1, 50)], ["first", "reset"], 0, 1),  # close numbers, but uptime says reboot
    ([(2**32 - 1, 100), (0, 200), (1, 300)], ["first", "in_order", "in_order"], 0, 0),  # wrap
    ([(10, 2**32 - 100), (11, 50)], ["first", "in_order"], 0, 0),  # uptime wrap is no reboot
    ([(100, 1000), (10, 2000)], ["first", "reset"], 0, 1),  # far back: restarted sequence
])
def test_sequence_tracker(steps: list[tuple[int, int]], events: list[str], lost: int,
                          resets: int) -> None:
    t = SequenceTracker()
    got = [t.observe("agent", seq, up)[0].value for seq, up in steps]
    assert got == events
    assert (t.lost.get("agent", 0), t.resets.get("agent", 0)) == (lost, resets)


def test_sequence_tracker_is_bounded() -> None:
    t = SequenceTracker(max_keys=3)
    for k in range(10):
        assert t.observe(k, 1)[0] is SeqEvent.FIRST
    assert t.evicted_keys == 3 and t.last(9) == 1


def test_receive_time_is_the_callers() -> None:
    later = AT + timedelta(seconds=5)
    r = decode_unguarded(load("valid_flow_and_counter"), 99.0, later)
    assert len(r.samples) == 2
    assert all((s.now, s.at) == (99.0, later) for s in r.samples)
