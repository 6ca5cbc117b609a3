"""The shared header parser against scapy-built packets, truncation and garbage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.drivers.packets import (
    BAD_IHL,
    BAD_IP_VERSION,
    IPV6_EXT_LIMIT,
    TOO_MANY_VLAN_TAGS,
    TRUNCATED,
    UNSUPPORTED_HEADER_PROTOCOL,
    ParsedHeader,
    _parse_general,
    flow_sample_from_frame,
    parse_header,
    parse_tuple,
)
from rackwarden.policies.flowfacts import HEADER_IPV4, HEADER_IPV6, FlowSample
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SRC_MAC = "02:00:00:00:00:0a"
DST_MAC = "02:00:00:00:00:0b"


def eth() -> Packet:
    return Ether(src=SRC_MAC, dst=DST_MAC)


def test_ipv4_tcp_syn_matches_scapy() -> None:
    pkt = eth() / IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=40000, dport=25,
                                                                  flags="S")
    h = parse_header(bytes(pkt))
    assert h == ParsedHeader(
        src_mac=SRC_MAC, dst_mac=DST_MAC, vlan=None, ethertype=0x0800, ip_version=4,
        src_ip="192.0.2.10", dst_ip="198.51.100.7", protocol=6, src_port=40000, dst_port=25,
        tcp_flags=0x02, icmp_type=None, icmp_code=None, ip_total_length=40, error=None)
    assert h.complete


@pytest.mark.parametrize("flags,value", [("S", 0x02), ("SA", 0x12), ("FPA", 0x19), ("R", 0x04),
                                         ("SEC", 0xC2), ("", 0x00)])
def test_tcp_flags(flags: str, value: int) -> None:
    pkt = eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags=flags)
    h = parse_header(bytes(pkt))
    assert h.tcp_flags == value == int(pkt[TCP].flags)


def test_udp_with_payload_total_length_from_ip_header() -> None:
    pkt = eth() / IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=5353, dport=53) / (b"q" * 500)
    h = parse_header(bytes(pkt)[:128])  # sFlow-style truncation keeps the real IP length
    assert (h.protocol, h.src_port, h.dst_port, h.ip_total_length, h.error) == (
        17, 5353, 53, 528, None)
    assert h.ip_total_length == Ether(bytes(pkt))[IP].len


def test_icmp_echo() -> None:
    pkt = eth() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, code=0)
    h = parse_header(bytes(pkt))
    assert (h.protocol, h.icmp_type, h.icmp_code, h.src_port, h.dst_port) == (1, 8, 0, None, None)


def test_icmp_unreachable_code() -> None:
    pkt = eth() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3, code=13)
    assert (parse_header(bytes(pkt)).icmp_type, parse_header(bytes(pkt)).icmp_code) == (3, 13)


def test_vlan_tagged() -> None:
    pkt = eth() / Dot1Q(vlan=123, prio=5) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(
        sport=1000, dport=2000)
    h = parse_header(bytes(pkt))
    assert (h.vlan, h.ethertype, h.src_ip, h.src_port, h.dst_port, h.error) == (
        123, 0x0800, "10.0.0.1", 1000, 2000, None)


def test_qinq_reports_outer_vlan() -> None:
    pkt = eth() / Dot1AD(vlan=300) / Dot1Q(vlan=42) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
        sport=1, dport=443, flags="S")
    h = parse_header(bytes(pkt))
    assert (h.vlan, h.ethertype, h.dst_port, h.tcp_flags) == (300, 0x0800, 443, 0x02)


def test_three_vlan_tags_stop_with_reason() -> None:
    pkt = eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / TCP()
    h = parse_header(bytes(pkt))
    assert (h.vlan, h.ethertype, h.ip_version, h.error) == (1, None, None, TOO_MANY_VLAN_TAGS)


def test_ipv6_udp() -> None:
    pkt = eth() / IPv6(src="2001:db8::1", dst="2001:db8:0:1::2") / UDP(sport=4000, dport=443) / (
        b"x" * 10)
    h = parse_header(bytes(pkt))
    assert (h.ethertype, h.ip_version, h.src_ip, h.dst_ip, h.protocol, h.src_port, h.dst_port,
            h.ip_total_length, h.error) == (
        0x86DD, 6, "2001:db8::1", "2001:db8:0:1::2", 17, 4000, 443, 58, None)


def test_ipv6_tcp_after_extension_headers() -> None:
    pkt = (eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / TCP(sport=5000, dport=22, flags="SA"))
    h = parse_header(bytes(pkt))
    assert (h.protocol, h.src_port, h.dst_port, h.tcp_flags, h.error) == (6, 5000, 22, 0x12, None)


def test_ipv6_first_fragment_has_ports_later_fragment_does_not() -> None:
    first = eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(
        offset=0, m=1, nh=17) / UDP(sport=7, dport=9)
    later = eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(
        offset=100, m=0, nh=17) / Raw(b"\x00\x07\x00\x09" * 4)
    assert (parse_header(bytes(first)).src_port, parse_header(bytes(first)).dst_port) == (7, 9)
    h = parse_header(bytes(later))
    assert (h.protocol, h.src_port, h.dst_port, h.error) == (17, None, None, None)


def test_ipv6_extension_chain_is_bounded() -> None:
    pkt = eth() / IPv6(src="2001:db8::1", dst="2001:db8::2")
    for _ in range(9):
        pkt = pkt / IPv6ExtHdrDestOpt()
    pkt = pkt / UDP(sport=1, dport=2)
    h = parse_header(bytes(pkt))
    assert (h.src_ip, h.protocol, h.src_port, h.error) == (
        "2001:db8::1", None, None, IPV6_EXT_LIMIT)


def test_icmpv6() -> None:
    pkt = eth() / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest()
    h = parse_header(bytes(pkt))
    assert (h.protocol, h.icmp_type, h.icmp_code) == (58, 128, 0)


def test_ipv4_options_move_the_l4_header() -> None:
    pkt = eth() / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_NOP()] * 8) / TCP(
        sport=1234, dport=80, flags="PA")
    raw = bytes(pkt)
    assert raw[14] == 0x47  # IHL 7: the fast path must not take it
    h = parse_header(raw)
    assert (h.src_port, h.dst_port, h.tcp_flags, h.error) == (1234, 80, 0x18, None)


def test_ipv4_later_fragment_has_no_ports() -> None:
    pkt = eth() / IP(src="10.0.0.1", dst="10.0.0.2", proto=17, frag=185) / Raw(b"\x00\x35" * 8)
    h = parse_header(bytes(pkt))
    assert (h.protocol, h.src_port, h.dst_port, h.error) == (17, None, None, None)


def test_bad_ihl_keeps_addresses() -> None:
    raw = bytearray(bytes(eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()))
    raw[14] = 0x43  # IHL 3 (12 bytes) is impossible
    h = parse_header(bytes(raw))
    assert (h.src_ip, h.dst_ip, h.protocol, h.src_port, h.error) == (
        "10.0.0.1", "10.0.0.2", 6, None, BAD_IHL)


def test_ethertype_ipv4_with_version_6_nibble() -> None:
    raw = bytearray(bytes(eth() / IP() / TCP()))
    raw[14] = 0x65
    h = parse_header(bytes(raw))
    assert (h.ethertype, h.ip_version, h.src_ip, h.error) == (0x0800, None, None, BAD_IP_VERSION)


def test_arp_is_not_ip_and_not_an_error() -> None:
    h = parse_header(bytes(eth() / ARP()))
    assert (h.ethertype, h.ip_version, h.error) == (0x0806, None, None)


def test_bare_ip_header_protocols() -> None:
    v4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=3, dport=4, flags="S"))
    h4, h6 = parse_header(v4, HEADER_IPV4), parse_header(v6, HEADER_IPV6)
    assert (h4.src_mac, h4.ethertype, h4.src_ip, h4.src_port, h4.error) == (
        None, None, "10.0.0.1", 1, None)
    assert (h6.src_ip, h6.dst_port, h6.tcp_flags, h6.error) == ("2001:db8::1", 4, 0x02, None)
    assert parse_header(v4, 99).error == UNSUPPORTED_HEADER_PROTOCOL


def test_memoryview_and_bytearray_inputs() -> None:
    raw = bytes(eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2))
    assert parse_header(memoryview(raw)) == parse_header(bytearray(raw)) == parse_header(raw)


SAMPLES: list[Packet] = [
    eth() / IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=40000, dport=25, flags="S"),
    eth() / IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=5353, dport=53) / (b"q" * 200),
    eth() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
    eth() / Dot1Q(vlan=7) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2),
    eth() / Dot1AD(vlan=300) / Dot1Q(vlan=42) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(),
    eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP(flags="S"),
    eth() / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_NOP()] * 4) / UDP(),
    eth() / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest(),
]


def scapy_fields(raw: bytes) -> tuple[object, ...]:
    """The same fields read by scapy's full dissector: the oracle for parse_tuple."""
    p = Ether(raw)
    vlan = p[Dot1AD].vlan if Dot1AD in p else (p[Dot1Q].vlan if Dot1Q in p else None)
    ethertype = p[Dot1Q].type if Dot1Q in p else p.type  # the innermost tag names the payload
    ip = p[IP] if IP in p else (p[IPv6] if IPv6 in p else None)
    l4 = p[TCP] if TCP in p else (p[UDP] if UDP in p else None)
    icmp = p[ICMP] if ICMP in p else (p[ICMPv6EchoRequest] if ICMPv6EchoRequest in p else None)
    if ip is None:
        version = src = dst = proto = total = None
    elif isinstance(ip, IP):
        version, src, dst, proto, total = 4, ip.src, ip.dst, ip.proto, ip.len
    else:
        version, src, dst, total = 6, ip.src, ip.dst, ip.plen + 40
        proto = 6 if TCP in p else 17 if UDP in p else 58 if icmp is not None else ip.nh
    return (
        p.src, p.dst, vlan, ethertype, version, src, dst, proto,
        None if l4 is None else l4.sport, None if l4 is None else l4.dport,
        int(p[TCP].flags) if TCP in p else None,
        None if icmp is None else icmp.type, None if icmp is None else icmp.code, total, None,
    )


@pytest.mark.parametrize("pkt", SAMPLES, ids=lambda p: p.summary())
def test_fields_match_scapy_dissection(pkt: Packet) -> None:
    raw = bytes(pkt)
    assert parse_tuple(raw) == scapy_fields(raw)


@pytest.mark.parametrize("pkt", SAMPLES, ids=lambda p: p.summary())
def test_truncation_at_every_length_never_raises_and_agrees(pkt: Packet) -> None:
    """A cut header gives a subset of the full answer: every field it does report is right."""
    raw = bytes(pkt)
    full = parse_tuple(raw)
    assert full[-1] is None
    for cut in range(len(raw) + 1):
        part = parse_tuple(raw[:cut])
        for i, (got, want) in enumerate(zip(part[:-1], full[:-1], strict=True)):
            assert got is None or got == want, (cut, i, got, want)
        if cut < len(raw) and part != full:
            assert part[-1] == TRUNCATED, (cut, part)


@pytest.mark.parametrize("pkt", SAMPLES, ids=lambda p: p.summary())
def test_fast_path_agrees_with_general_path(pkt: Packet) -> None:
    raw = bytes(pkt) + b"\0" * 64
    assert parse_tuple(raw) == _parse_general(raw, len(raw), 1)


@settings(max_examples=300, deadline=None)
@given(
    src=st.ip_addresses(v=4).map(str), dst=st.ip_addresses(v=4).map(str),
    sport=st.integers(0, 65535), dport=st.integers(0, 65535), flags=st.integers(0, 255),
    proto=st.sampled_from(["tcp", "udp"]), pad=st.integers(0, 100),
)
def test_fast_path_property(src: str, dst: str, sport: int, dport: int, flags: int, proto: str,
                            pad: int) -> None:
    l4 = TCP(sport=sport, dport=dport, flags=flags) if proto == "tcp" else UDP(sport=sport,
                                                                               dport=dport)
    raw = bytes(eth() / IP(src=src, dst=dst) / l4 / (b"z" * pad))
    fast = parse_tuple(raw)
    assert fast == _parse_general(raw, len(raw), 1)
    assert (fast[5], fast[6], fast[8], fast[9]) == (src, dst, sport, dport)


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=200), proto=st.sampled_from([1, 11, 12, 0, 99]))
def test_random_bytes_never_raise(data: bytes, proto: int) -> None:
    out = parse_tuple(data, proto)
    assert len(out) == 15
    assert out[-1] is None or isinstance(out[-1], str)


@settings(max_examples=1000, deadline=None)
@given(tail=st.binary(max_size=120), tpid=st.sampled_from([b"\x08\x00", b"\x86\xdd",
                                                           b"\x81\x00", b"\x88\xa8"]))
def test_random_bytes_after_a_plausible_ethertype_never_raise(tail: bytes, tpid: bytes) -> None:
    parse_tuple(b"\x02" * 12 + tpid + tail)


def test_flow_sample_from_frame_for_span() -> None:
    pkt = eth() / IP(src="192.0.2.10", dst="198.51.100.7") / UDP(sport=9, dport=53) / (
        b"p" * 900)
    raw = bytes(pkt)
    s = flow_sample_from_frame(raw, source="span", agent="span0", now=5.0, at=AT,
                               input_ifindex=12, snaplen=128)
    assert isinstance(s, FlowSample)
    assert (s.source, s.agent, s.input_ifindex, s.output_ifindex, s.sampling_rate, s.now, s.at,
            s.frame_length, len(s.header)) == ("span", "span0", 12, None, 1, 5.0, AT, 942, 128)
    assert (s.src_ip, s.dst_ip, s.protocol, s.src_port, s.dst_port, s.ip_total_length,
            s.parse_error, s.sample_sequence) == ("192.0.2.10", "198.51.100.7", 17, 9, 53, 928,
                                                  None, None)
    assert s == FlowSample(*(getattr(s, f) for f in FlowSample.__slots__))
    assert (s.estimated_packets, s.estimated_bytes) == (1, 942)
