"""Pure packet-header parser (Ethernet, VLAN, IPv4, IPv6, TCP, UDP, ICMP) that never raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from socket import AF_INET6, inet_ntoa, inet_ntop
from struct import Struct

from rackwarden.policies.flowfacts import (
    HEADER_ETHERNET,
    HEADER_IPV4,
    HEADER_IPV6,
    OUTPUT_IFINDEX,
    FlowSample,
    FlowSourceKind,
    new_flow_sample,
)

# Why parsing stopped early. None in the result means it got as far as the packet goes.
TRUNCATED = "truncated"
BAD_IP_VERSION = "bad_ip_version"
BAD_IHL = "bad_ihl"
TOO_MANY_VLAN_TAGS = "too_many_vlan_tags"
IPV6_EXT_LIMIT = "ipv6_ext_limit"
UNSUPPORTED_HEADER_PROTOCOL = "unsupported_header_protocol"

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
MAX_VLAN_TAGS = 2  # QinQ; a third tag is not something an IDC access port carries
MAX_IPV6_EXT_HEADERS = 8  # bounds the walk on a crafted chain of extension headers

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
_PORT_PROTOS = frozenset((PROTO_TCP, PROTO_UDP, PROTO_SCTP))
_ICMP_PROTOS = frozenset((PROTO_ICMP, PROTO_ICMPV6))
# Extension headers laid out as (next header, length in 8-octet units beyond the first 8).
_IPV6_EXT_8OCTET = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_U16 = Struct("!H").unpack_from
_U16X2 = Struct("!HH").unpack_from
_IPV4_FIXED = Struct("!BxHxxHxB").unpack_from  # ver/ihl, total length, flags/frag, protocol
_IPV6_LEN_NH = Struct("!HB").unpack_from

# Address text is memoized: formatting costs about 3x a dict hit here, and the addresses seen
# on a switch repeat. Each cache is dropped whole when full, so random (spoofed, scanning)
# addresses cost one miss each and memory stays bounded.
_CACHE_MAX = 16384  # about 2.5 MiB per cache when full
_MAC_TEXT: dict[bytes, str] = {}
_IP4_TEXT: dict[bytes, str] = {}
_IP6_TEXT: dict[bytes, str] = {}


def _mac(raw: bytes) -> str:
    if len(_MAC_TEXT) >= _CACHE_MAX:
        _MAC_TEXT.clear()
    text = _MAC_TEXT[raw] = raw.hex(":")
    return text


def _ip4(raw: bytes) -> str:
    if len(_IP4_TEXT) >= _CACHE_MAX:
        _IP4_TEXT.clear()
    text = _IP4_TEXT[raw] = inet_ntoa(raw)
    return text


def _ip6(raw: bytes) -> str:
    if len(_IP6_TEXT) >= _CACHE_MAX:
        _IP6_TEXT.clear()
    text = _IP6_TEXT[raw] = inet_ntop(AF_INET6, raw)
    return text


def mac_text(raw: bytes) -> str:
    """aa:bb:cc:dd:ee:ff for 6 raw bytes, from the same bounded cache parse_tuple uses."""
    return _MAC_TEXT.get(raw) or _mac(raw)


def ip4_text(raw: bytes) -> str:
    """Dotted quad for 4 raw bytes, from the same bounded cache parse_tuple uses."""
    return _IP4_TEXT.get(raw) or _ip4(raw)


# The order of HeaderTuple is the order of FlowSample's header fields (src_mac .. parse_error).
HeaderTuple = tuple[
    str | None, str | None, int | None, int | None, int | None, str | None, str | None,
    int | None, int | None, int | None, int | None, int | None, int | None, int | None,
    str | None,
]
_EMPTY: HeaderTuple = (
    None, None, None, None, None, None, None, None, None, None, None, None, None, None, None
)


_ETH_IPV4 = Struct("!6s6sHBxHxxHxBxx4s4s")  # untagged Ethernet + IPv4 fixed header, 34 bytes
_ETH_IPV4_FIELDS = _ETH_IPV4.unpack_from
_TCP_PORTS_FLAGS = Struct("!HH9xB").unpack_from


def parse_tuple(
    buf: bytes | bytearray | memoryview, header_protocol: int = HEADER_ETHERNET
) -> HeaderTuple:
    """Parse a (possibly truncated) header into a HeaderTuple; the hot path behind parse_header.

    Every read is bounds-checked against the buffer, so garbage and truncation end the parse
    with a reason instead of an exception.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)  # slicing to dict keys and inet_ntoa want bytes; 128 bytes copy cheaply
    n = len(buf)
    # Fast path for the common frame, untagged IPv4 without options: one unpack instead of
    # six. It must give exactly what _parse_general gives (a property test holds it to that).
    if n >= 48 and header_protocol == HEADER_ETHERNET:
        dmac, smac, et, verihl, total, frag, protocol, sip, dip = _ETH_IPV4_FIELDS(buf, 0)
        if et == ETH_IPV4 and verihl == 0x45 and not frag & 0x1FFF:
            if protocol == PROTO_TCP:
                sport, dport, flags = _TCP_PORTS_FLAGS(buf, 34)
                return (_MAC_TEXT.get(smac) or _mac(smac), _MAC_TEXT.get(dmac) or _mac(dmac),
                        None, ETH_IPV4, 4, _IP4_TEXT.get(sip) or _ip4(sip),
                        _IP4_TEXT.get(dip) or _ip4(dip), PROTO_TCP, sport, dport, flags, None,
                        None, total, None)
            if protocol == PROTO_UDP:
                sport, dport = _U16X2(buf, 34)
                return (_MAC_TEXT.get(smac) or _mac(smac), _MAC_TEXT.get(dmac) or _mac(dmac),
                        None, ETH_IPV4, 4, _IP4_TEXT.get(sip) or _ip4(sip),
                        _IP4_TEXT.get(dip) or _ip4(dip), PROTO_UDP, sport, dport, None, None,
                        None, total, None)
    return _parse_general(buf, n, header_protocol)


def _parse_general(buf: bytes, n: int, header_protocol: int) -> HeaderTuple:
    src_mac = dst_mac = None
    vlan = ethertype = ip_version = None
    if header_protocol == HEADER_ETHERNET:
        if n < 14:
            if n >= 6:
                dst_mac = _mac(buf[0:6])
            if n >= 12:
                src_mac = _mac(buf[6:12])
            return (src_mac, dst_mac, None, None, None, None, None, None, None, None, None,
                    None, None, None, TRUNCATED)
        k = buf[0:6]
        dst_mac = _MAC_TEXT.get(k) or _mac(k)
        k = buf[6:12]
        src_mac = _MAC_TEXT.get(k) or _mac(k)
        et = _U16(buf, 12)[0]
        off = 14
        tags = 0
        while et in _VLAN_TPIDS:
            if tags == MAX_VLAN_TAGS:
                return (src_mac, dst_mac, vlan, None, None, None, None, None, None, None, None,
                        None, None, None, TOO_MANY_VLAN_TAGS)
            if off + 4 > n:
                return (src_mac, dst_mac, vlan, None, None, None, None, None, None, None, None,
                        None, None, None, TRUNCATED)
            tci, et = _U16X2(buf, off)
            if vlan is None:
                vlan = tci & 0x0FFF
            off += 4
            tags += 1
        ethertype = et
        if et == ETH_IPV4:
            want = 4
        elif et == ETH_IPV6:
            want = 6
        else:
            return (src_mac, dst_mac, vlan, et, None, None, None, None, None, None, None, None,
                    None, None, None)
    elif header_protocol == HEADER_IPV4 or header_protocol == HEADER_IPV6:
        off = 0
        want = 4 if header_protocol == HEADER_IPV4 else 6
    else:
        return _EMPTY[:14] + (UNSUPPORTED_HEADER_PROTOCOL,)

    if off >= n:
        return (src_mac, dst_mac, vlan, ethertype, None, None, None, None, None, None, None,
                None, None, None, TRUNCATED)
    if buf[off] >> 4 != want:
        return (src_mac, dst_mac, vlan, ethertype, None, None, None, None, None, None, None,
                None, None, None, BAD_IP_VERSION)
    ip_version = want
    src_ip = dst_ip = None
    protocol = total = None
    if want == 4:
        if off + 20 > n:
            # Keep whatever fixed fields made it in before the cut.
            if off + 4 <= n:
                total = _U16(buf, off + 2)[0]
            if off + 10 <= n:
                protocol = buf[off + 9]
            if off + 16 <= n:
                src_ip = _ip4(buf[off + 12:off + 16])
            return (src_mac, dst_mac, vlan, ethertype, 4, src_ip, None, protocol, None, None,
                    None, None, None, total, TRUNCATED)
        verihl, total, frag, protocol = _IPV4_FIXED(buf, off)
        k = buf[off + 12:off + 16]
        src_ip = _IP4_TEXT.get(k) or _ip4(k)
        k = buf[off + 16:off + 20]
        dst_ip = _IP4_TEXT.get(k) or _ip4(k)
        ihl = (verihl & 0x0F) * 4
        if ihl < 20:
            return (src_mac, dst_mac, vlan, ethertype, 4, src_ip, dst_ip, protocol, None, None,
                    None, None, None, total, BAD_IHL)
        if frag & 0x1FFF:
            # A later fragment carries no L4 header: its first bytes are payload, not ports.
            return (src_mac, dst_mac, vlan, ethertype, 4, src_ip, dst_ip, protocol, None, None,
                    None, None, None, total, None)
        p = off + ihl
    else:
        if off + 40 > n:
            if off + 7 <= n:
                plen, nh = _IPV6_LEN_NH(buf, off + 4)
                total = plen + 40
                if not (nh in _IPV6_EXT_8OCTET or nh == _IPV6_FRAGMENT or nh == _IPV6_AH):
                    protocol = nh  # an extension header hides the real protocol further on
            if off + 24 <= n:
                src_ip = _ip6(buf[off + 8:off + 24])
            return (src_mac, dst_mac, vlan, ethertype, 6, src_ip, None, protocol, None, None,
                    None, None, None, total, TRUNCATED)
        plen, nh = _IPV6_LEN_NH(buf, off + 4)
        total = plen + 40
        k = buf[off + 8:off + 24]
        src_ip = _IP6_TEXT.get(k) or _ip6(k)
        k = buf[off + 24:off + 40]
        dst_ip = _IP6_TEXT.get(k) or _ip6(k)
        p = off + 40
        walked = 0
        while nh in _IPV6_EXT_8OCTET or nh == _IPV6_FRAGMENT or nh == _IPV6_AH:
            if walked == MAX_IPV6_EXT_HEADERS:
                return (src_mac, dst_mac, vlan, ethertype, 6, src_ip, dst_ip, None, None, None,
                        None, None, None, total, IPV6_EXT_LIMIT)
            if p + 8 > n:  # every extension header is at least 8 octets
                return (src_mac, dst_mac, vlan, ethertype, 6, src_ip, dst_ip, None, None, None,
                        None, None, None, total, TRUNCATED)
            walked += 1
            if nh == _IPV6_FRAGMENT:
                nh = buf[p]
                offset_units = _U16(buf, p + 2)[0] >> 3
                p += 8
                if offset_units:
                    return (src_mac, dst_mac, vlan, ethertype, 6, src_ip, dst_ip, nh, None,
                            None, None, None, None, total, None)
            elif nh == _IPV6_AH:
                nh, hlen = buf[p], buf[p + 1]
                p += (hlen + 2) * 4
            else:
                nh, hlen = buf[p], buf[p + 1]
                p += (hlen + 1) * 8
        protocol = nh

    if protocol in _PORT_PROTOS:
        if p + 4 > n:
            return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                    None, None, None, None, None, total, TRUNCATED)
        sport, dport = _U16X2(buf, p)
        if protocol == PROTO_TCP:
            if p + 14 > n:
                return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                        sport, dport, None, None, None, total, TRUNCATED)
            return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                    sport, dport, buf[p + 13], None, None, total, None)
        return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                sport, dport, None, None, None, total, None)
    if protocol in _ICMP_PROTOS:
        if p + 2 > n:
            return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                    None, None, None, None, None, total, TRUNCATED)
        return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
                None, None, None, buf[p], buf[p + 1], total, None)
    return (src_mac, dst_mac, vlan, ethertype, ip_version, src_ip, dst_ip, protocol,
            None, None, None, None, None, total, None)


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    """What parse_header could read; `error` is None when it reached the end of the headers."""

    src_mac: str | None
    dst_mac: str | None
    vlan: int | None
    ethertype: int | None
    ip_version: int | None
    src_ip: str | None
    dst_ip: str | None
    protocol: int | None
    src_port: int | None
    dst_port: int | None
    tcp_flags: int | None
    icmp_type: int | None
    icmp_code: int | None
    ip_total_length: int | None
    error: str | None

    @property
    def complete(self) -> bool:
        return self.error is None


def parse_header(
    buf: bytes | bytearray | memoryview, header_protocol: int = HEADER_ETHERNET
) -> ParsedHeader:
    """Parse an Ethernet frame (or a bare IPv4/IPv6 packet) from its first bytes."""
    return ParsedHeader(*parse_tuple(buf, header_protocol))


def flow_sample_from_frame(
    frame: bytes | bytearray | memoryview,
    *,
    source: FlowSourceKind,
    agent: str,
    now: float,
    at: datetime,
    frame_length: int | None = None,
    sampling_rate: int = 1,
    input_ifindex: int | None = None,
    output_ifindex: int | None = None,
    snaplen: int | None = None,
) -> FlowSample:
    """A FlowSample from a captured or mirrored frame (the SPAN path and the lab exporter).

    `frame_length` defaults to the bytes given; `snaplen` keeps only the first bytes as the
    header, as an sFlow agent does (128 is the usual). The sFlow bookkeeping fields stay None.
    `at` must be aware; it is not checked here, on the capture's per-packet path.
    """
    data = bytes(frame)
    length = len(data) if frame_length is None else frame_length
    header = data if snaplen is None else data[:snaplen]
    return new_flow_sample(
        source, agent, input_ifindex, output_ifindex, sampling_rate, now, at, length, header,
        *parse_tuple(header, HEADER_ETHERNET),
        HEADER_ETHERNET, OUTPUT_IFINDEX, None, None, None, None, None, None,
    )
