"""Evidence (R10): a bounded ring of recent frames per switch port, and pcap files of detections."""

from __future__ import annotations

import os
import re
import struct
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from rackwarden.policies.flowfacts import FlowSample

PortKey = tuple[str, int]
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4/IPv6 headers, as some sFlow agents export
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class DetectionLike(Protocol):
    """What evidence needs from a policies.detect.Detection."""

    @property
    def detector(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def first_seen(self) -> float: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def evidence(self) -> tuple[FlowSample, ...]: ...
    @property
    def ports(self) -> tuple[PortKey, ...]: ...
    @property
    def last_at(self) -> datetime: ...


class EvidenceSource(Protocol):
    """What write_evidence reads: EvidenceRing (per-frame capture) or rawring.RawFrameRing
    (the batch capture, which keeps raw frames and rebuilds their FlowSamples on demand)."""

    def snapshot(self, ports: Iterable[PortKey], since: float | None = None,
                 until: float | None = None) -> list[FlowSample]: ...


class EvidenceRing:
    """The last `per_port` samples seen on each switch port, both directions.

    Filled by the capture thread once per batch (one lock round per batch, not per frame),
    read by whoever writes evidence. Ports are (agent, ifIndex) as in the detectors; the
    number of ports is bounded by `max_ports` so a flood of unknown ports cannot grow it.
    """

    def __init__(self, per_port: int = 1024, max_ports: int = 4096) -> None:
        self.per_port = per_port
        self.max_ports = max_ports
        self._rings: dict[PortKey, deque[FlowSample]] = {}
        self._lock = threading.Lock()

    def add(self, samples: Iterable[FlowSample]) -> None:
        rings = self._rings
        with self._lock:
            for s in samples:
                for ifx in (s.input_ifindex, s.output_ifindex):
                    if ifx is None:
                        continue
                    key = (s.agent, ifx)
                    ring = rings.get(key)
                    if ring is None:
                        if len(rings) >= self.max_ports:
                            continue
                        ring = rings[key] = deque(maxlen=self.per_port)
                    ring.append(s)

    def snapshot(self, ports: Iterable[PortKey], since: float | None = None,
                 until: float | None = None) -> list[FlowSample]:
        """Samples of these ports in time order, optionally within [since, until]."""
        with self._lock:
            got = [s for p in ports for s in self._rings.get(p, ())]
        if since is not None:
            got = [s for s in got if s.now >= since]
        if until is not None:
            got = [s for s in got if s.now <= until]
        seen: set[int] = set()
        out = []
        for s in sorted(got, key=lambda x: x.now):
            if id(s) not in seen:  # a port-to-port frame sits in both ports' rings
                seen.add(id(s))
                out.append(s)
        return out


def write_pcap(path: Path, samples: Sequence[FlowSample]) -> int:
    """Write samples' headers as a classic pcap (µs timestamps from each sample's `at`);
    returns the number of records. Written to a temporary name and renamed into place, so a
    reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    link = LINKTYPE_ETHERNET
    if samples and all(s.header_protocol != 1 for s in samples):
        link = LINKTYPE_RAW
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        f.write(_PCAP_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, 65535, link))
        for s in samples:
            if (link == LINKTYPE_ETHERNET) != (s.header_protocol == 1):
                continue  # one pcap holds one link type
            ts = s.at.timestamp()
            sec = int(ts)
            usec = int(round((ts - sec) * 1e6))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            data = s.header
            f.write(_PCAP_RECORD.pack(sec, usec, len(data), max(len(data), s.frame_length)))
            f.write(data)
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def evidence_path(state_dir: Path, d: DetectionLike) -> Path:
    stamp = d.last_at.strftime("%Y%m%dT%H%M%S.%fZ")
    name = _SAFE.sub("_", f"{stamp}-{d.detector}-{d.kind}.pcap")
    return state_dir / "evidence" / _SAFE.sub("_", d.server) / name


def _frame_key(s: FlowSample) -> tuple[object, ...]:
    return (s.agent, s.input_ifindex, s.output_ifindex, s.now, s.frame_length, s.header)


def write_evidence(state_dir: Path, d: DetectionLike, ring: EvidenceSource | None = None,
                   before_s: float = 5.0, max_records: int = 4096) -> tuple[Path, int]:
    """The detection's pcap under `state_dir/evidence/<server>/`: the recent frames of its
    ports from the ring (from `before_s` before it was first seen) plus the sampled packets
    the detection itself carries (all there is on the sFlow path). Returns (path, records)."""
    uniq: list[FlowSample] = list(d.evidence)
    if ring is not None:
        # A frame both in the detection's evidence and in the ring is written once. Compared by
        # value, not identity: a raw ring rebuilds its FlowSamples on every read, so the two
        # copies are different objects. As a multiset, so a flood of identical frames keeps
        # every copy the ring holds.
        held = Counter(_frame_key(s) for s in uniq)
        for s in ring.snapshot(d.ports, since=d.first_seen - before_s):
            k = _frame_key(s)
            if held[k] > 0:
                held[k] -= 1
            else:
                uniq.append(s)
    uniq.sort(key=lambda x: x.now)
    if len(uniq) > max_records:
        uniq = uniq[-max_records:]
    path = evidence_path(state_dir, d)
    return path, write_pcap(path, uniq)
