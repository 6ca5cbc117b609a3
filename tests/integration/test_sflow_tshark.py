"""Our sFlow encoder/decoder against tshark's sFlow dissector, and the collector over real UDP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.drivers.packets import flow_sample_from_frame
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.decoder import DatagramHeader, Sample, decode_datagram
from rackwarden.drivers.sflow.encoder import encode_datagram, pack_datagrams
from rackwarden.policies.flowfacts import CounterSample, FlowSample
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AGENT = "192.0.2.1"
AGENT6 = "2001:db8::a"


def _frames() -> list[bytes]:
    """The lab's traffic shapes: floods, SMTP fan-out, scan, spoofing, IPv6, VLAN."""
    e = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:00:fe")
    pad = b"\x00" * 400
    return [bytes(p) for p in (
        e / IP(src="10.0.1.10", dst="198.51.100.7") / UDP(sport=40000, dport=80) / pad,
        e / IP(src="10.0.1.10", dst="198.51.100.8") / TCP(sport=40001, dport=80, flags="S"),
        e / IP(src="10.0.1.10", dst="203.0.113.25") / TCP(sport=40002, dport=25, flags="PA") / pad,
        e / IP(src="10.0.1.10", dst="198.51.100.9") / TCP(sport=40003, dport=3389, flags="S"),
        e / IP(src="10.9.9.9", dst="198.51.100.9") / ICMP(type=8, code=0) / pad,  # spoofed
        e / Dot1Q(vlan=120) / IP(src="10.0.1.11", dst="198.51.100.1") / UDP(sport=53, dport=5353),
        e / IP(src="10.0.1.10", dst="198.51.100.7", options=b"\x01\x01\x01\x01") / TCP(
            sport=1, dport=443, flags="FA"),
        e / IPv6(src="2001:db8:1::10", dst="2001:db8:2::1") / TCP(sport=5555, dport=587,
                                                                  flags="S") / pad,
        e / IPv6(src="2001:db8:1::10", dst="2001:db8:2::2") / UDP(sport=9, dport=123) / pad,
    )]


def _flow(frame: bytes, i: int, agent: str) -> FlowSample:
    s = flow_sample_from_frame(frame, source="sflow", agent=agent, now=1.0, at=AT,
                               frame_length=len(frame) + 4, sampling_rate=512 * (1 + i % 3),
                               input_ifindex=10 + i, output_ifindex=48, snaplen=128)
    return dataclasses.replace(s, sample_sequence=1000 + i, source_id_type=0,
                               source_id_index=10 + i, sample_pool=51_200 + i, drops=i,
                               stripped=4)


def _counters(if_index: int, agent: str) -> CounterSample:
    return CounterSample(
        "sflow", agent, 1.0, AT, if_index, 6, 10_000_000_000, 1, 3, 2**40 + if_index,
        1_000_000 + if_index, 2000, 300, 4, 5, 6, 2**35 + 7, 2_000_000, 3000, 400, 8, 9, 0,
        sample_sequence=500 + if_index, source_id_type=0, source_id_index=if_index)


def _datagrams() -> list[bytes]:
    flows = [_flow(f, i, AGENT) for i, f in enumerate(_frames())]
    out = pack_datagrams(flows[:6], agent=AGENT, first_sequence=7, uptime_ms=90_000,
                         max_datagram_bytes=600)
    out.append(encode_datagram(DatagramHeader(AGENT, 3, 42, 91_000),
                               [*flows[6:], _counters(10, AGENT), _counters(11, AGENT)],
                               expanded=True))
    out.append(encode_datagram(DatagramHeader(AGENT6, 0, 1, 5),
                               [_flow(f, 20 + i, AGENT6) for i, f in enumerate(_frames()[:3])]
                               + [_counters(12, AGENT6)]))
    return out


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # tshark repeats keys inside one object; keep every value so nothing is silently lost.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


def _tshark(pcap: Path) -> list[dict[str, Any]]:
    exe = shutil.which("tshark")
    assert exe is not None, "tshark is a Debian dependency (Makefile DEB_PACKAGES)"
    proc = subprocess.run([exe, "-r", str(pcap), "-T", "json"], capture_output=True, text=True,
                          timeout=120, check=True)
    packets = json.loads(proc.stdout, object_pairs_hook=_pairs_hook)
    return [p["_source"]["layers"]["sflow"] for p in packets]


def _one(v: Any) -> Any:
    assert not isinstance(v, list), v
    return v


def _int(v: Any) -> int:
    s = _one(v)
    return int(s, 16) if s.startswith("0x") else int(s)


def _samples(layer: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v) for k, v in layer.items() if isinstance(v, dict) and "sample, seq" in k]


def _check_header(tree: dict[str, Any], s: FlowSample) -> None:
    """tshark's dissection of the sampled header against our parse of it."""
    eth = tree["eth"]
    assert (_one(eth["eth.src"]), _one(eth["eth.dst"])) == (s.src_mac, s.dst_mac)
    if s.vlan is not None:
        assert _int(tree["vlan"]["vlan.id"]) == s.vlan
        assert _int(tree["vlan"]["vlan.etype"]) == s.ethertype
    else:
        assert "vlan" not in tree and _int(eth["eth.type"]) == s.ethertype
    if s.ip_version == 4:
        ip = tree["ip"]
        assert (_one(ip["ip.src"]), _one(ip["ip.dst"]), _int(ip["ip.proto"]),
                _int(ip["ip.len"])) == (s.src_ip, s.dst_ip, s.protocol, s.ip_total_length)
    else:
        ip6 = tree["ipv6"]
        assert (_one(ip6["ipv6.src"]), _one(ip6["ipv6.dst"]), _int(ip6["ipv6.nxt"]),
                _int(ip6["ipv6.plen"]) + 40) == (s.src_ip, s.dst_ip, s.protocol,
                                                 s.ip_total_length)
    if s.protocol == 6:
        tcp = tree["tcp"]
        assert (_int(tcp["tcp.srcport"]), _int(tcp["tcp.dstport"]),
                _int(tcp["tcp.flags"]) & 0xFF) == (s.src_port, s.dst_port, s.tcp_flags)
    elif s.protocol == 17:
        udp = tree["udp"]
        assert (_int(udp["udp.srcport"]), _int(udp["udp.dstport"])) == (s.src_port, s.dst_port)
    elif s.protocol == 1:
        icmp = tree["icmp"]
        assert (_int(icmp["icmp.type"]), _int(icmp["icmp.code"])) == (s.icmp_type, s.icmp_code)


def _check_flow(name: str, ts: dict[str, Any], s: FlowSample) -> None:
    expanded = name.startswith("Expanded")
    assert _int(ts["sflow.flow_sample.sequence_number"]) == s.sample_sequence
    assert _int(ts["sflow.flow_sample.sampling_rate"]) == s.sampling_rate
    assert _int(ts["sflow.flow_sample.sample_pool"]) == s.sample_pool
    assert _int(ts["sflow.flow_sample.dropped_packets"]) == s.drops
    if expanded:
        assert _int(ts["sflow.flow_sample.source_id_type"]) == s.source_id_type
        assert _int(ts["sflow.flow_sample.source_id_index"]) == s.source_id_index
        assert _int(ts["sflow.flow_sample.input_interface_format"]) == 0
        assert _int(ts["sflow.flow_sample.input_interface_value"]) == s.input_ifindex
        assert _int(ts["sflow.flow_sample.output_interface.format"]) == s.output_format
        assert _int(ts["sflow.flow_sample.output_interface_value"]) == s.output_ifindex
    else:
        assert _int(ts["sflow.flow_sample.source_id_class"]) == s.source_id_type
        assert _int(ts["sflow.flow_sample.index"]) == s.source_id_index
        assert _int(ts["sflow.flow_sample.input_interface"]) == s.input_ifindex
        out = ts["sflow.flow_sample.output_interface_tree"]
        assert _int(out["sflow.flow_sample.output_interface_format"]) == s.output_format
        assert _int(out["sflow.flow_sample.output_interface_value"]) == s.output_ifindex
    raw = ts["Raw packet header"]
    assert _int(raw["sflow_245.header_protocol"]) == s.header_protocol
    assert _int(raw["sflow_245.header.frame_length"]) == s.frame_length
    assert _int(raw["sflow_245.header.payload_stripped"]) == s.stripped
    assert _int(raw["sflow_245.header.sampled_header_length"]) == len(s.header)
    # tshark shows the header opaque with its XDR padding to 4 bytes; the padding is zeros.
    shown = bytes.fromhex(_one(raw["sflow_245.header"]).replace(":", ""))
    assert shown == s.header + b"\0" * (-len(s.header) % 4)
    _check_header(raw["sflow_245.header_tree"], s)


COUNTER_FIELDS = {
    "sflow_245.ifindex": "if_index", "sflow_245.iftype": "if_type",
    "sflow_245.ifspeed": "if_speed_bps", "sflow_245.ifdirection": "if_direction",
    "sflow_245.ifinoct": "in_octets", "sflow_245.ifinpkt": "in_ucast_pkts",
    "sflow_245.ifinmcast": "in_multicast_pkts", "sflow_245.ifinbcast": "in_broadcast_pkts",
    "sflow_245.ifindisc": "in_discards", "sflow_245.ifinerr": "in_errors",
    "sflow_245.ifinunk": "in_unknown_protos", "sflow_245.ifoutoct": "out_octets",
    "sflow_245.ifoutpkt": "out_ucast_pkts", "sflow_245.ifoutmcast": "out_multicast_pkts",
    "sflow_245.ifoutbcast": "out_broadcast_pkts", "sflow_245.ifoutdisc": "out_discards",
    "sflow_245.ifouterr": "out_errors", "sflow_245.ifpromisc": "promiscuous_mode",
}


def _check_counters(ts: dict[str, Any], c: CounterSample) -> None:
    assert _int(ts["sflow.counters_sample.sequence_number"]) == c.sample_sequence
    assert _int(ts["sflow.counters_sample.source_id_type"]) == c.source_id_type
    assert _int(ts["sflow.counters_sample.source_id_index"]) == c.source_id_index
    g = ts["Generic interface counters"]
    for ts_name, ours in COUNTER_FIELDS.items():
        assert _int(g[ts_name]) == getattr(c, ours), ts_name
    assert (_int(g["sflow_245.ifadmin_status"]), _int(g["sflow_245.ifoper_status"])) == (
        int(c.admin_up), int(c.oper_up))


def test_decoder_agrees_with_tshark_field_by_field(tmp_path: Path) -> None:
    datagrams = _datagrams()
    pcap = tmp_path / "sflow.pcap"
    wrpcap(str(pcap), [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="192.0.2.1", dst="192.0.2.200") / UDP(sport=50000 + i, dport=6343)
        / Raw(d) for i, d in enumerate(datagrams)])
    layers = _tshark(pcap)
    assert len(layers) == len(datagrams) >= 4

    checked_flows = checked_counters = 0
    for d, ts in zip(datagrams, layers, strict=True):
        ours = decode_datagram(d, 1.0, AT)
        assert ours.error is None and ours.header is not None
        h = ours.header
        v4 = _int(ts["sflow_245.agenttype"]) == 1
        agent_key = "sflow_245.agent" if v4 else "sflow_245.agent.v6"
        assert (_one(ts[agent_key]), _int(ts["sflow_245.sub_agent_id"]),
                _int(ts["sflow_245.sequence_number"]), _int(ts["sflow_245.sysuptime"]),
                _int(ts["sflow_245.numsamples"])) == (h.agent, h.sub_agent_id, h.sequence,
                                                      h.uptime_ms, len(ours.samples))
        their = _samples(ts)
        assert len(their) == len(ours.samples)
        for (name, t), s in zip(their, ours.samples, strict=True):
            if isinstance(s, FlowSample):
                assert "low sample" in name
                _check_flow(name, t, s)
                checked_flows += 1
            else:
                assert "ounters sample" in name
                _check_counters(t, s)
                checked_counters += 1
    assert (checked_flows, checked_counters) == (12, 3)
    # The sequence numbers pack_datagrams handed out are what tshark saw.
    packed = len(datagrams) - 2
    assert packed >= 2  # the 600-byte limit split the six flow samples
    assert [_int(t["sflow_245.sequence_number"]) for t in layers[:packed]] == list(
        range(7, 7 + packed))


def test_decoded_samples_are_the_encoded_ones() -> None:
    flows = [_flow(f, i, AGENT) for i, f in enumerate(_frames())]
    datagrams = pack_datagrams(flows, agent=AGENT)
    assert len(datagrams) == 2  # nine samples do not fit one 1400-byte datagram
    assert [s for d in datagrams for s in decode_datagram(d, 1.0, AT).samples] == flows


# -- the collector over real UDP on loopback ---------------------------------------------------

class _Clock:
    def now(self) -> float:
        return time.monotonic()

    def at(self) -> datetime:
        return datetime.now(UTC)


def _datagram(seq: int, uptime_ms: int, frame: bytes) -> bytes:
    return encode_datagram(DatagramHeader(AGENT, 0, seq, uptime_ms),
                           [_flow(frame, seq, AGENT)])


async def _wait_for(cond: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "datagrams did not arrive"
        await asyncio.sleep(0.01)


def test_collector_over_loopback() -> None:
    received: list[Sample] = []

    def sink(samples: Sequence[Sample]) -> None:
        received.extend(samples)

    async def run() -> tuple[SflowCollector, SflowCollector]:
        allowed = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=sink, clock=_Clock(),
                                 bind="127.0.0.1", port=0)
        refused = SflowCollector(allowed_agents=["192.0.2.0/24"], on_samples=sink,
                                 clock=_Clock(), bind="127.0.0.1", port=0)
        assert allowed.bound_port is None  # the constructor did no I/O
        await allowed.start()
        await refused.start()
        assert allowed.bound_port and refused.bound_port
        frame = _frames()[1]
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        try:
            for seq, up in ((1, 1000), (2, 2000), (5, 5000), (6, 6000)):  # 3 and 4 lost
                tx.sendto(_datagram(seq, up, frame), ("127.0.0.1", allowed.bound_port))
            tx.sendto(b"\x00\x00\x00\x05garbage", ("127.0.0.1", allowed.bound_port))
            tx.sendto(_datagram(1, 10, frame), ("127.0.0.1", allowed.bound_port))  # reboot
            for seq in (1, 2):
                tx.sendto(_datagram(seq, 1000, frame), ("127.0.0.1", refused.bound_port))
            await _wait_for(lambda: allowed.datagrams_total == 6 and refused.rejected_total == 2)
        finally:
            tx.close()
            allowed.stop()
            refused.stop()
        return allowed, refused

    allowed, refused = asyncio.run(run())
    key = (AGENT, 0)
    assert allowed.datagrams_by_agent == {"127.0.0.1": 6}
    assert (allowed.rejected_total, allowed.decode_errors) == (0, {"bad_address_type": 1})
    assert (allowed.sequence.lost[key], allowed.sequence.resets[key]) == (2, 1)
    assert (allowed.flow_samples_total, allowed.counter_samples_total) == (5, 0)
    assert [s.sample_sequence for s in received if isinstance(s, FlowSample)] == [
        1001, 1002, 1005, 1006, 1001]
    assert all(isinstance(s, FlowSample) and s.dst_port == 80 and s.tcp_flags == 0x02
               for s in received)
    assert (refused.datagrams_total, refused.rejected_total) == (0, 2)
    assert refused.rejected_by_source == {"127.0.0.1": 2}
    # 16 MiB asked; Linux reports double what it granted. As root SO_RCVBUFFORCE gets past
    # net.core.rmem_max.
    assert allowed.rcvbuf_bytes is not None and allowed.rcvbuf_bytes >= 16 * 1024 * 1024


def test_collector_survives_a_failing_consumer() -> None:
    def sink(samples: Sequence[Sample]) -> None:
        raise RuntimeError("consumer bug")

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.0/8"], on_samples=sink, clock=_Clock(),
                           bind="127.0.0.1", port=0)
        await c.start()
        assert c.bound_port
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # One at a time: the receive thread hands over what the socket holds as one batch,
            # and the consumer is called once per batch; each failure must leave the next one
            # still taken in.
            for seq in (1, 2, 3):
                tx.sendto(_datagram(seq, seq * 1000, _frames()[0]), ("127.0.0.1", c.bound_port))
                await _wait_for(lambda: c.callback_errors_total == seq)  # noqa: B023
            await _wait_for(lambda: c.datagrams_total == 3)
        finally:
            tx.close()
            c.stop()
        return c

    c = asyncio.run(run())
    assert (c.callback_errors_total, c.flow_samples_total, c.decode_errors) == (3, 3, {})


@pytest.mark.parametrize("payload", [b"", b"\x00", struct.pack("!II", 5, 1)])
def test_collector_counts_tiny_datagrams(payload: bytes) -> None:
    c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None, clock=_Clock())
    c.datagram_received(payload, ("127.0.0.1", 6343))
    c.datagram_received(payload, ("::ffff:127.0.0.1", 6343, 0, 0))  # dual-stack form
    assert (c.datagrams_total, c.decode_errors) == (2, {"too_short": 2})
