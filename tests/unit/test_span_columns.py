"""SPAN batch path: ring walk (C and Python), columns, raw frame ring against the per-frame path.

A synthetic TPACKET_V3 ring in an anonymous mmap, laid out as the kernel does (block
descriptor with status/num_pkts/first at offset 8, a tpacket3_hdr chain, tp_mac 82, 16-byte
aligned frames), is read by today's per-frame SpanCapture._loop_ring and by the batch mode;
the batch mode's columns, resolved raw frames and counters must equal the per-frame results.
Every test runs for both walkers; the compiled one is skipped only when it is not built.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.capture import ringwalk
from rackwarden.drivers.capture.afpacket import RawSocket
from rackwarden.drivers.capture.evidence import EvidenceRing
from rackwarden.drivers.capture.rawring import RawFrameRing
from rackwarden.drivers.capture.span import MirrorSource, SpanCapture
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FlowSample

AT = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TP_MAC = 82
BLOCK_SIZE = 8192
MACS = [f"02:00:00:00:00:{i:02x}" for i in range(1, 7)]
_BLOCK_HDR = struct.Struct("=III")
_PKT = struct.Struct("=IIIIIIHHIII")

if not ringwalk.compiled_available():
    # Said loudly: the compiled walker's tests are skipped below, which must not go unseen.
    print(f"\n*** test_span_columns: {ringwalk.unavailable_reason()}: C walker tests SKIPPED ***")

WALKERS = [
    pytest.param("c", marks=pytest.mark.skipif(
        not ringwalk.compiled_available(),
        reason=f"compiled ring walker not built: {ringwalk.unavailable_reason()}")),
    "python",
]


class FixedClock:
    """Both capture loops read now() then at() once per ring block: each block gets its own
    times, so a frame given its block's time wrongly shows."""

    def __init__(self) -> None:
        self.blocks = 0

    def now(self) -> float:
        return 100.0 + 0.5 * self.blocks

    def at(self) -> datetime:
        self.blocks += 1
        return AT + timedelta(seconds=self.blocks)


# ---- frames ------------------------------------------------------------------------------------

def _mac(i: int) -> bytes:
    return bytes.fromhex(MACS[i % len(MACS)].replace(":", ""))


@st.composite
def frames(draw: Any) -> bytes:
    """One frame: the mixes the vector path reads and the ones it hands to parse_tuple."""
    kind = draw(st.sampled_from(["tcp4", "udp4", "icmp4", "frag4", "other4", "tcp6", "udp6",
                                 "icmp6", "ext6", "arp", "garbage", "badver"]))
    eth = _mac(draw(st.integers(0, 8))) + _mac(draw(st.integers(0, 8)))
    tags = draw(st.sampled_from([0, 0, 1, 2]))
    tag = b"".join(struct.pack("!HH", draw(st.sampled_from([0x8100, 0x88A8, 0x9100])),
                               draw(st.integers(0, 0xFFFF))) for _ in range(tags))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    flags = draw(st.integers(0, 255))
    pad = b"\xab" * draw(st.sampled_from([0, 6, 40, 300]))
    src4, dst4 = draw(st.binary(min_size=4, max_size=4)), draw(st.binary(min_size=4, max_size=4))
    src6, dst6 = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16,
                                                                              max_size=16))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 1024, 0, 0)
    udp = struct.pack("!HHHH", sport, dport, 8, 0)
    icmp = struct.pack("!BBHI", draw(st.integers(0, 255)), 0, 0, 0)
    if kind == "garbage":
        return draw(st.binary(min_size=0, max_size=80))
    if kind == "arp":
        return eth + tag + b"\x08\x06" + b"\x00" * 28
    if kind.endswith("4") or kind == "badver":
        proto, l4 = {"tcp4": (6, tcp), "udp4": (17, udp), "icmp4": (1, icmp),
                     "frag4": (17, udp), "other4": (47, b"\x00" * 8),
                     "badver": (6, tcp)}[kind]
        opts = b"\x01" * 4 * draw(st.integers(0, 10))
        ver = 0x40 if kind != "badver" else 0x60
        ihl = draw(st.sampled_from([5 + len(opts) // 4, 5 + len(opts) // 4, 3]))
        frag = 0 if kind != "frag4" else draw(st.integers(1, 0x1FFF))
        ip = struct.pack("!BBHHHBBH4s4s", ver | (ihl & 0xF), 0, 20 + len(opts) + len(l4), 7,
                         frag, 64, proto, 0, src4, dst4) + opts
        body = b"\x08\x00" + ip + l4
    else:
        nh, l4 = {"tcp6": (6, tcp), "udp6": (17, udp), "icmp6": (58, icmp),
                  "ext6": (0, bytes([6, 0]) + b"\x00" * 6 + tcp)}[kind]
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(l4), nh, 64, src6, dst6)
        body = b"\x86\xdd" + ip + l4
    f = eth + tag + body + pad
    cut = draw(st.sampled_from([None, None, None, 0]))
    if cut is not None:
        cut = draw(st.integers(0, len(f)))
    return f if cut is None else f[:cut]


@dataclass
class Ring:
    data: bytes  # the ring's bytes; every block ready (TP_STATUS_USER) but the last
    block_size: int
    blocks: int  # including the free block at the end
    frames: int


def build_ring(fr: list[bytes], wire_extra: list[int], block_size: int = BLOCK_SIZE,
               per_block: int = 1 << 30, free: int = 1) -> Ring:
    """Frames packed into blocks as the kernel does, plus `free` free blocks at the end."""
    blocks: list[bytearray] = []
    cur: bytearray | None = None
    count = 0
    pos = 0
    last_hdr = 0
    for i, f in enumerate(fr):
        size = (TP_MAC + len(f) + 15) & ~15
        if cur is None or pos + size > block_size or count == per_block:
            cur = bytearray(block_size)
            blocks.append(cur)
            pos = 48
            count = 0
            _BLOCK_HDR.pack_into(cur, 8, 1, 0, 48)
        elif count:
            struct.pack_into("=I", cur, last_hdr, pos - last_hdr)  # chain from the previous
        vlan_valid = i % 7 == 3
        _PKT.pack_into(cur, pos, 0, 1_700_000_000 + i, i * 1000, len(f), len(f) + wire_extra[i],
                       1 | (0x10 if vlan_valid else 0), TP_MAC, TP_MAC, 0,
                       (i & 0xFFF) if vlan_valid else 0, 0x8100 if vlan_valid else 0)
        cur[pos + TP_MAC:pos + TP_MAC + len(f)] = f
        last_hdr = pos
        pos += size
        count += 1
        struct.pack_into("=I", cur, 12, count)
    blocks += [bytearray(block_size) for _ in range(free)]  # TP_STATUS_KERNEL: the walk stops
    return Ring(b"".join(blocks), block_size, len(blocks), len(fr))


class FakeRaw(RawSocket):
    """A RawSocket over a synthetic ring; stops the capture loop once no block is ready."""

    def __init__(self, ring: Ring, cap: SpanCapture) -> None:
        super().__init__("fake")
        m = mmap.mmap(-1, len(ring.data))
        m[:] = ring.data
        self.ring = m
        self.block_size = ring.block_size
        self.block_nr = ring.blocks
        self._cap = cap
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def ready_blocks(self) -> Iterator[tuple[int, int, int]]:
        yield from super().ready_blocks()
        self._cap._stop.set()

    def close(self) -> None:
        super().close()
        os.close(self._r)
        os.close(self._w)


def _sources(kind: str) -> tuple[list[MirrorSource], dict[str, int]]:
    if kind == "ingress":
        return [MirrorSource("m0", input_ifindex=7)], {}
    if kind == "egress":
        return [MirrorSource("m0", output_ifindex=9)], {}
    # Shared mirror: some MACs known (one spelled in capitals), some not.
    return [MirrorSource("m0")], {MACS[0]: 1, MACS[1].upper(): 2, MACS[2]: 3, "bogus": 4}


def per_frame(ring: Ring, kind: str, every: int = 1) -> tuple[list[FlowSample], SpanCapture]:
    """Today's path: SpanCapture._loop_ring on the ring."""
    got: list[FlowSample] = []
    srcs, macs = _sources(kind)
    cap = SpanCapture(srcs, got.extend, FixedClock(), agent="span:sw1", mac_ports=macs,
                      sample_every=every)  # type: ignore[arg-type]
    raw = FakeRaw(ring, cap)
    cap.sources[0].raw = raw
    cap._loop_ring()
    raw.close()
    return got, cap


def batched(ring: Ring, kind: str, walker: str, every: int = 1, batch_frames: int = 5,
            raw_ring: RawFrameRing | None = None) -> tuple[list[SampleColumns], SpanCapture]:
    got: list[SampleColumns] = []
    srcs, macs = _sources(kind)
    cap = SpanCapture(srcs, None, FixedClock(), agent="span:sw1", mac_ports=macs,
                      sample_every=every, on_columns=got.append, raw_ring=raw_ring,
                      batch_frames=batch_frames, walker=walker)  # type: ignore[arg-type]
    raw = FakeRaw(ring, cap)
    cap.sources[0].raw = raw
    cap._loop_ring_columns()
    raw.close()
    return got, cap


def _counters(cap: SpanCapture) -> dict[str, Any]:
    c = cap.counters
    return {"packets": c.packets, "bytes": c.bytes, "samples": c.samples,
            "decode_errors": c.decode_errors, "exceptions": c.exceptions,
            "unattributed": c.unattributed, "callback_errors": c.callback_errors}


ROW_FIELDS = ("agent", "input_ifindex", "output_ifindex", "sampling_rate", "now",
              "frame_length", "ip_version", "src_ip", "dst_ip", "protocol", "src_port",
              "dst_port", "tcp_flags", "icmp_type", "sample_sequence", "source_id_type",
              "source_id_index", "sample_pool")


def assert_same(cols: list[SampleColumns], cap: SpanCapture, want: list[FlowSample],
                kept: Callable[[FlowSample, str], object] = getattr) -> None:
    """The batches' rows are the per-frame FlowSamples' fields (`kept(sample, field)`: a field
    as the columns hold it; fuzz/span_frames_fuzz.py allows the one documented difference),
    and the raw ring resolves each row's frame to its whole FlowSample."""
    rows = [c.row(i) for c in cols for i in range(len(c))]
    assert len(rows) == len(want), f"{len(rows)} rows, {len(want)} frames"
    for i, (row, s) in enumerate(zip(rows, want, strict=True)):
        exp = {f: kept(s, f) for f in ROW_FIELDS}
        assert row == exp, f"row {i}: {({f: (row[f], exp[f]) for f in exp if row[f] != exp[f]})}"
    refs = [int(r) for c in cols for r in c.ref]
    assert refs == sorted(refs) and len(set(refs)) == len(refs), f"refs {refs}"
    assert cap.raw_ring is not None
    # Whole FlowSamples: header, at, MACs, errors.
    assert cap.raw_ring.resolve(refs) == want, "the raw ring resolves other FlowSamples"


# ---- the walkers -----------------------------------------------------------------------------

@pytest.mark.parametrize("walker", WALKERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=0, max_size=60), st.data())
def test_columns_equal_the_per_frame_path(walker: str, fr: list[bytes], data: Any) -> None:
    extra = [data.draw(st.sampled_from([0, 0, 100])) for _ in fr]
    kind = data.draw(st.sampled_from(["ingress", "egress", "shared"]))
    every = data.draw(st.sampled_from([1, 1, 3]))
    ring = build_ring(fr, extra, per_block=data.draw(st.sampled_from([3, 1 << 30])))
    want, old = per_frame(ring, kind, every)
    cols, cap = batched(ring, kind, walker, every, batch_frames=data.draw(st.integers(1, 40)))
    assert_same(cols, cap, want)
    assert _counters(cap) == _counters(old)
    assert cap.counters.packets == len(fr)


@pytest.mark.parametrize("walker", WALKERS)
def test_walk_reports_each_frame_with_its_ring_header(walker: str) -> None:
    fr = [bytes([i]) * (60 + i) for i in range(40)]
    ring = build_ring(fr, [i % 3 for i in range(40)], per_block=16)
    bases = [b * ring.block_size for b in range(ring.blocks - 1)]
    w = ringwalk.walk(ring.data, bases, ring.block_size, impl=walker)  # type: ignore[arg-type]
    assert len(w) == 40 and w.bad_blocks == []
    assert [ring.data[o] for o in w.data_off.tolist()] == list(range(40))
    assert w.snaplen.tolist() == [60 + i for i in range(40)]
    assert w.wire_len.tolist() == [60 + i + i % 3 for i in range(40)]
    assert w.sec.tolist() == [1_700_000_000 + i for i in range(40)]
    assert w.nsec.tolist() == [i * 1000 for i in range(40)]
    assert w.block.tolist() == [i // 16 for i in range(40)]
    assert np.flatnonzero(w.vlan_valid).tolist() == [i for i in range(40) if i % 7 == 3]
    assert w.vlan_tci[w.vlan_valid].tolist() == [i for i in range(40) if i % 7 == 3]
    assert set(w.vlan_tpid[w.vlan_valid].tolist()) == {0x8100}


def _guarded(data: bytes) -> tuple[mmap.mmap, memoryview]:
    """The ring followed by an inaccessible page: a read past the ring faults at once."""
    page = mmap.PAGESIZE
    size = (len(data) + page - 1) // page * page
    m = mmap.mmap(-1, size + page)
    start = size - len(data)  # the ring ends exactly where the guard page begins
    m[start:size] = data
    anchor = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(anchor)
    del anchor
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + size, page, 0) == 0  # PROT_NONE
    return m, memoryview(m)[start:size]


def _corrupted_ring(fr: list[bytes], data: Any, least: int) -> tuple[Ring, bytearray]:
    """The frames' ring and its bytes with `least` to least + 3 words of the block and frame
    headers overwritten (next offsets, num_pkts, first, tp_mac, tp_snaplen), from small
    values to huge."""
    ring = build_ring(fr, [0] * len(fr), per_block=data.draw(st.sampled_from([4, 1 << 30])))
    buf = bytearray(ring.data)
    for _ in range(data.draw(st.integers(least, least + 3))):
        b = data.draw(st.integers(0, ring.blocks - 2)) * ring.block_size
        at = data.draw(st.sampled_from([12, 16, 48, 48 + 12, 48 + 24]) | st.integers(48, 400))
        val = data.draw(st.sampled_from([0, 1, 47, 48, 4096, ring.block_size, 0xFFFF,
                                         0xFFFF_FFFF]) | st.integers(0, 1 << 20))
        struct.pack_into("=I", buf, b + at, val)
    return ring, buf


@pytest.mark.parametrize("walker", WALKERS)
@settings(max_examples=80, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=30), st.data())
def test_broken_chains_are_counted_never_read_outside(walker: str, fr: list[bytes],
                                                      data: Any) -> None:
    ring, buf = _corrupted_ring(fr, data, least=1)
    nblocks = ring.blocks - 1
    m, view = _guarded(bytes(buf))
    try:
        bases = [b * ring.block_size for b in range(nblocks)]
        w = ringwalk.walk(view, bases, ring.block_size, impl=walker)  # type: ignore[arg-type]
        py = ringwalk.walk(view, bases, ring.block_size, impl="python")
        assert w.bad_blocks == py.bad_blocks
        for f in ("data_off", "snaplen", "wire_len", "sec", "nsec", "status", "vlan_tci",
                  "vlan_tpid", "block"):
            assert getattr(w, f).tolist() == getattr(py, f).tolist()
        ends = w.data_off + w.snaplen
        block_end = (w.block + 1) * ring.block_size
        assert bool(np.all(ends <= block_end))  # every frame lies inside its own block
        frames_ = ringwalk.copy_frames(view, w.data_off, np.minimum(w.snaplen, 256), 256,
                                       impl=walker)  # type: ignore[arg-type]
        assert frames_.shape == (len(w), 256)
    finally:
        view.release()
        m.close()
    # Through the capture: counted in `exceptions`, never raised.
    cap_ring = Ring(bytes(buf), ring.block_size, ring.blocks, ring.frames)
    cols, cap = batched(cap_ring, "shared", walker, batch_frames=8)
    assert cap.counters.exceptions == len(w.bad_blocks)
    assert cap.counters.packets == len(w) == sum(len(c) for c in cols)


@pytest.mark.skipif(not ringwalk.compiled_available(),
                    reason=f"compiled ring walker not built: {ringwalk.unavailable_reason()}")
@settings(max_examples=80, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=30), st.data())
def test_the_one_pass_walk_copy_read_equals_its_three_steps(fr: list[bytes], data: Any) -> None:
    """rw_batch (the capture's path when nothing is sampled out) gives what walk, copy_frames
    and the column read give one after the other, on good rings and on rings with corrupted
    headers, for any snaplen limit and slot; it reads nothing outside the ring."""
    from rackwarden.drivers.capture.columns import READ_TABLES

    ring, buf = _corrupted_ring(fr, data, least=0)
    nblocks = ring.blocks - 1
    limit = data.draw(st.sampled_from([64, 100, 256, 4096]))
    slot = data.draw(st.sampled_from([256, 300])) if limit <= 256 else 256
    expect = data.draw(st.sampled_from([0, len(fr), 10_000]))
    m, view = _guarded(bytes(buf))
    try:
        bases = [b * ring.block_size for b in range(nblocks)]
        w, rows, caplen, read = ringwalk.walk_copy_read_c(
            view, bases, ring.block_size, expect, limit, slot, READ_TABLES)
        w3 = ringwalk.walk(view, bases, ring.block_size, impl="c")
        cap3 = np.minimum(w3.snaplen, limit)
        rows3 = ringwalk.copy_frames(view, w3.data_off, cap3, slot, impl="c")
        read3 = ringwalk.read_columns_c(rows3, cap3, READ_TABLES)
    finally:
        view.release()
        m.close()
    assert w.bad_blocks == w3.bad_blocks
    for f in ("data_off", "snaplen", "wire_len", "sec", "nsec", "status", "vlan_tci",
              "vlan_tpid", "block"):
        assert getattr(w, f).tolist() == getattr(w3, f).tolist(), f
    assert caplen.tolist() == cap3.tolist()
    assert rows.shape == rows3.shape and rows.tobytes() == rows3.tobytes()
    assert read.ok.tolist() == read3.ok.tolist()
    assert read.ints.tolist() == read3.ints.tolist()
    assert read.words.tolist() == read3.words.tolist()


@pytest.mark.parametrize("walker", WALKERS)
def test_a_broken_chain_keeps_the_frames_before_the_break(walker: str) -> None:
    fr = [bytes(60)] * 10
    ring = build_ring(fr, [0] * 10, per_block=5)
    buf = bytearray(ring.data)
    # Block 0: frame 2's next offset 0 (a chain that does not go on); block 1: a next
    # offset far past the block.
    off = 48 + 2 * ((TP_MAC + 60 + 15) & ~15)
    struct.pack_into("=I", buf, off, 0)
    struct.pack_into("=I", buf, ring.block_size + 48, 0x7FFF_0000)
    w = ringwalk.walk(bytes(buf), [0, ring.block_size], ring.block_size,
                      impl=walker)  # type: ignore[arg-type]
    assert w.bad_blocks == [0, 1]
    assert w.block.tolist() == [0, 0, 0, 1]


def test_walker_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ringwalk.ENV_VAR, "python")
    assert ringwalk.choose() == "python"
    assert ringwalk.choose("python") == "python"
    monkeypatch.setenv(ringwalk.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="RACKWARDEN_RINGWALK"):
        ringwalk.choose()
    monkeypatch.delenv(ringwalk.ENV_VAR)
    assert ringwalk.choose() == ("c" if ringwalk.compiled_available() else "python")


def test_the_compiled_walker_is_built_here() -> None:
    # The editable install builds it (pyproject ext-modules); this venv must have it, or the
    # C half of every test above is skipped.
    assert ringwalk.compiled_available(), ringwalk.unavailable_reason()


# ---- the raw frame ring ------------------------------------------------------------------------

@pytest.mark.parametrize("walker", WALKERS)
def test_raw_ring_resolves_until_evicted(walker: str) -> None:
    fr = [bytes.fromhex(MACS[i % 3].replace(":", "")) * 2 + b"\x08\x00"
          + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 17, 0, bytes([10, 0, 0, i]),
                        bytes([10, 0, 1, i])) + struct.pack("!HHHH", 1000 + i, 53, 8, 0)
          + bytes(40) for i in range(50)]
    ring = build_ring(fr, [0] * 50)
    want, _ = per_frame(ring, "shared")
    small = RawFrameRing(byte_budget=20 * 256, slot=256)  # 20 frames
    cols, cap = batched(ring, "shared", walker, batch_frames=7, raw_ring=small)
    refs = [int(r) for c in cols for r in c.ref]
    assert refs == list(range(50))
    got = small.resolve(refs)
    assert got[:30] == [None] * 30  # overwritten
    assert got[30:] == want[30:]
    assert small.resolve([50, -1]) == [None, None]  # never given out
    # EvidenceRing's question, answered from raw frames (MACS[0] -> port 1 as the source).
    snap = small.snapshot([("span:sw1", 1)])
    assert snap == [s for s in want[30:] if 1 in (s.input_ifindex, s.output_ifindex)]
    assert small.snapshot([("span:sw1", 1)], since=1000.0) == []
    assert small.snapshot([("other", 1)]) == []


def test_raw_ring_keeps_the_tail_of_a_batch_larger_than_itself() -> None:
    r = RawFrameRing(byte_budget=4 * 64, slot=64)
    n = 10
    frames_ = np.zeros((n, 64), dtype=np.uint8)
    frames_[:, 0] = np.arange(n)
    ints = np.arange(n, dtype=np.int64)
    refs = r.add(frames_, np.full(n, 64, dtype=np.int64), ints + 64, ints.astype(np.float64),
                 ints, ints, ints, "a", 1)
    assert refs.tolist() == list(range(n))
    got = r.resolve(refs)
    assert got[:6] == [None] * 6
    kept = [s for s in got[6:] if s is not None]
    assert [s.header[0] for s in kept] == [6, 7, 8, 9]
    assert [s.frame_length for s in kept] == [70, 71, 72, 73]


def test_batch_mode_needs_the_ring_and_room_for_the_snaplen() -> None:
    src = [MirrorSource("m0", input_ifindex=1)]
    clock = FixedClock()
    with pytest.raises(ValueError, match="mode must be 'ring'"):
        SpanCapture(src, None, clock, mode="recv", on_columns=lambda c: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="snaplen"):
        SpanCapture(src, None, clock, snaplen=512, on_columns=lambda c: None,  # type: ignore[arg-type]
                    raw_ring=RawFrameRing(slot=256))
    with pytest.raises(ValueError, match="exactly one"):
        SpanCapture(src, None, clock)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="raw_ring, not an EvidenceRing"):
        SpanCapture(src, None, clock, on_columns=lambda c: None,  # type: ignore[arg-type]
                    evidence=EvidenceRing())


@pytest.mark.parametrize("walker", WALKERS)
def test_a_failing_columns_callback_is_counted(walker: str) -> None:
    ring = build_ring([bytes(60)] * 5, [0] * 5)
    cap = SpanCapture([MirrorSource("m0", input_ifindex=1)], None, FixedClock(),  # type: ignore[arg-type]
                      on_columns=lambda c: 1 / 0, walker=walker)  # type: ignore[arg-type]
    raw = FakeRaw(ring, cap)
    cap.sources[0].raw = raw
    cap._loop_ring_columns()
    raw.close()
    assert cap.counters.callback_errors == 1 and cap.counters.samples == 5


@functools.cache
def _mix(count: int) -> list[bytes]:
    """Ordinary traffic, mostly what the vector read covers, in batches of thousands."""
    out = []
    for i in range(count):
        eth = _mac(i) + _mac(i + 1)
        opts = b"\x01" * 4 * (i % 3)
        k = i % 8
        if k < 3:
            l4, proto = struct.pack("!HHIIBBHHH", 1024 + i % 60000, (25, 80, 443)[i % 3], i, 0,
                                    0x50, i % 64, 512, 0, 0), 6
        elif k < 5:
            l4, proto = struct.pack("!HHHH", i % 65536, 53, 8, 0) + b"d" * (i % 400), 17
        elif k == 5:
            l4, proto = struct.pack("!BBHI", i % 20, 0, 0, 0), 1
        if k == 6:
            ip6 = struct.pack("!IHBB16s16s", 0x60000000, 8, 17, 64, i.to_bytes(16, "big"),
                              bytes(15) + b"\x01")
            out.append(eth + b"\x86\xdd" + ip6 + struct.pack("!HHHH", 7, i % 999, 8, 0))
            continue
        if k == 7:
            l4, proto = struct.pack("!HHIIBBHHH", 4000, 22, 0, 0, 0x50, 2, 512, 0, 0), 6
        ip = struct.pack("!BBHHHBBH4s4s", 0x45 + len(opts) // 4, 0, 20 + len(opts) + len(l4), i,
                         0, 64, proto, 0, bytes([198, 51, 100, i % 50]),
                         bytes([203, 0, 113, i % 251])) + opts
        tag = struct.pack("!HH", 0x8100, i % 4000) if k == 7 else b""
        out.append(eth + tag + b"\x08\x00" + ip + l4)
    return out


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("kind", ["ingress", "shared"])
def test_large_batches_of_ordinary_traffic_equal_the_per_frame_path(
        walker: str, kind: str, one_pass: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SpanCapture, "one_pass", one_pass)
    fr = _mix(2500)
    ring = build_ring(fr, [i % 2 for i in range(2500)], block_size=1 << 16)
    want, old = per_frame(ring, kind)
    cols, cap = batched(ring, kind, walker, batch_frames=1024)
    assert len(cols) >= 2 and max(len(c) for c in cols) >= 1024
    assert_same(cols, cap, want)
    assert _counters(cap) == _counters(old)


def _header_rows(draw: Any, n: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of bytes that steer the read into every branch: an EtherType (or a tag and one)
    from those it knows, an IP version/IHL byte, a protocol, fragment bits; the rest random."""
    rows = np.frombuffer(draw(st.binary(min_size=n * slot, max_size=n * slot)),
                         dtype=np.uint8).reshape(n, slot).copy()
    ethertypes = [0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x0806, 0x0000]
    for i in range(n):
        at = 12
        for _ in range(draw(st.integers(0, 2))):
            rows[i, at:at + 2] = list(draw(st.sampled_from([0x8100, 0x88A8, 0x9100])).to_bytes(
                2, "big"))
            at += 4
        et = draw(st.sampled_from(ethertypes))
        rows[i, at:at + 2] = list(et.to_bytes(2, "big"))
        at += 2
        if draw(st.booleans()):
            rows[i, at] = draw(st.sampled_from([0x45, 0x46, 0x4F, 0x44, 0x60, 0x65, 0x40]))
            proto = draw(st.sampled_from([6, 17, 132, 1, 58, 0, 43, 44, 60, 47]))
            rows[i, at + 9] = proto  # IPv4's protocol
            rows[i, at + 6] = proto  # IPv6's next header
            if draw(st.booleans()):
                rows[i, at + 6:at + 8] = 0  # IPv4: not a fragment
    caplen = np.array([draw(st.sampled_from([0, 13, 14, 17, 18, 33, 34, 37, 38, 53, 54, 57,
                                             58, 61, 62, 66, 70, 80, slot, slot]))
                       for _ in range(n)], dtype=np.int64)
    caplen = np.minimum(caplen, slot)
    for i in range(n):  # zero past the captured length, as copy_frames leaves a row
        rows[i, caplen[i]:] = 0
    return rows, caplen


@pytest.mark.skipif(not ringwalk.compiled_available(),
                    reason=f"compiled ring walker not built: {ringwalk.unavailable_reason()}")
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_compiled_column_read_equals_numpys_on_any_bytes(data: Any) -> None:
    """rw_columns (C) and the numpy read give the same SampleColumns, column by column, for
    rows of any bytes at any captured length and any slot from the least allowed up."""
    from rackwarden.drivers.capture.columns import MacTable, frames_to_columns

    slot = data.draw(st.sampled_from([60, 64, 96, 128, 256]))
    n = data.draw(st.integers(1, 12))
    rows, caplen = _header_rows(data.draw, n, slot)
    macs = MacTable({m: 10 + i for i, m in enumerate(MACS)})
    for i in range(n):  # some rows from known MACs
        if data.draw(st.booleans()):
            rows[i, 6:12] = list(bytes.fromhex(MACS[i % len(MACS)].replace(":", "")))
    now = np.arange(n, dtype=np.float64)
    for shared in (True, False):
        got = {}
        for impl in ("c", "python"):
            cols, stats = frames_to_columns(
                rows, caplen, caplen + 4, now, agent="span:x", sampling_rate=1,
                input_ifindex=None if shared else 3, output_ifindex=None,
                macs=macs if shared else None, impl=impl)  # type: ignore[arg-type]
            got[impl] = (cols, stats)
        (c, cs), (p, ps) = got["c"], got["python"]
        assert cs == ps
        for name in ("input_ifindex", "output_ifindex", "ip_version", "src_hi", "src_lo",
                     "has_src", "dst_hi", "dst_lo", "has_dst", "protocol", "src_port",
                     "dst_port", "tcp_flags", "icmp_type", "frame_length"):
            a, b = getattr(c, name), getattr(p, name)
            assert a.dtype == b.dtype, name
            assert a.tolist() == b.tolist(), name


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.sampled_from([b"", bytes(12), bytes(10) + b"\xff\xff",
                                                           bytes(15)]))
def test_column_address_text_is_the_parsers(raw: bytes, prefix: bytes) -> None:
    """words_ip spells an address as packets.parse_tuple does (inet_ntop): also the IPv6 ones
    whose first 96 bits are 0 (::a.b.c.d; ipaddress writes ::a0b:c0d) and the one difference
    SampleColumns documents, an IPv4-mapped address, kept as the IPv4 address."""
    from rackwarden.drivers.packets import parse_tuple
    from rackwarden.policies.flowcols import ip_words, words_ip

    addr = (prefix + raw)[:16]
    frame = (bytes.fromhex("020000000001020000000002") + b"\x86\xdd"
             + struct.pack("!IHBB", 0x60000000, 8, 17, 64) + addr + addr + bytes(8))
    text = parse_tuple(frame, 1)[5]
    v = int.from_bytes(addr, "big")
    got = words_ip(v >> 64, v & ((1 << 64) - 1))
    mapped = addr[:12] == bytes(10) + b"\xff\xff"
    assert got == (text[len("::ffff:"):] if mapped else text)
    assert ip_words(got)[:2] == (v >> 64, v & ((1 << 64) - 1))  # and back


@dataclass
class _Det:
    detector: str = "flood"
    kind: str = "udp"
    server: str = "s1"
    first_seen: float = 100.0
    last_seen: float = 101.0
    last_at: datetime = AT
    evidence: tuple[FlowSample, ...] = ()
    ports: tuple[tuple[str, int], ...] = (("span:sw1", 7),)


def test_write_evidence_reads_the_raw_ring(tmp_path: Path) -> None:
    from rackwarden.drivers.capture.evidence import write_evidence
    from scapy.utils import rdpcap

    fr = _mix(40)
    ring = build_ring(fr, [0] * 40)
    want, _ = per_frame(ring, "ingress")
    cols, cap = batched(ring, "ingress", "python")
    assert cap.raw_ring is not None
    path, n = write_evidence(tmp_path, _Det(), cap.raw_ring)  # type: ignore[arg-type]
    assert n == 40
    assert [bytes(p) for p in rdpcap(str(path))] == [s.header for s in want]


def test_write_evidence_writes_a_frame_in_both_the_detection_and_the_raw_ring_once(
        tmp_path: Path) -> None:
    # The vector detector's evidence is rebuilt from the raw ring (new objects each read), so
    # the detection's samples and the ring's snapshot are equal values, never the same object.
    from rackwarden.drivers.capture.evidence import write_evidence
    from scapy.utils import rdpcap

    fr = _mix(40)
    ring = build_ring(fr, [0] * 40)
    cols, cap = batched(ring, "ingress", "python")
    assert cap.raw_ring is not None
    refs = np.concatenate([c.ref for c in cols])
    rebuilt = [s for s in cap.raw_ring.resolve(refs[-8:]) if s is not None]
    assert len(rebuilt) == 8
    path, n = write_evidence(tmp_path, _Det(evidence=tuple(rebuilt)), cap.raw_ring)  # type: ignore[arg-type]
    want = [s.header for s in cap.raw_ring.snapshot([("span:sw1", 7)], since=95.0)]
    assert n == len(want) == 40
    assert sorted(bytes(p) for p in rdpcap(str(path))) == sorted(want)


class _MonoClock:
    def now(self) -> float:
        return time.monotonic()

    def at(self) -> datetime:
        return datetime.now(UTC)


@pytest.mark.parametrize("walker", WALKERS)
def test_held_blocks_do_not_spin_the_capture_loop(walker: str) -> None:
    # A TPACKET_V3 socket polls readable while the block before the kernel's current one is
    # ours: holding blocks for a batch, poll() returns at once. The loop must not spin on it
    # (it cost 3/4 of the capture thread's CPU at 200k frames/s before it slept instead).
    got: list[SampleColumns] = []
    cap = SpanCapture([MirrorSource("m0", input_ifindex=1)], None, _MonoClock(),  # type: ignore[arg-type]
                      on_columns=got.append, batch_frames=1 << 20, batch_wait_s=0.3,
                      walker=walker)  # type: ignore[arg-type]
    calls = [0]

    class Held(FakeRaw):
        def ready_blocks(self) -> Iterator[tuple[int, int, int]]:
            calls[0] += 1
            yield from RawSocket.ready_blocks(self)

    raw = Held(build_ring([bytes(60)] * 5, [0] * 5, free=7), cap)  # 1 block held of 8
    os.write(raw._w, b"x")  # readable for good, as the socket is while a block is held
    cap.sources[0].raw = raw
    t = threading.Thread(target=cap._loop_ring_columns)
    t.start()
    time.sleep(0.2)
    cap._stop.set()
    t.join(5)
    raw.close()
    assert sum(len(c) for c in got) == 5  # delivered at stop
    assert calls[0] < 400, f"{calls[0]} passes over the ring in 0.2 s: the loop spins"
    # Nor does it wake every 2 ms while the batch is far from full: at the rate seen (5 frames
    # in the first block) it would take hours to fill, so it sleeps the longest step (10 ms;
    # a slow machine only oversleeps, giving fewer passes, never more).
    assert calls[0] < 50, f"{calls[0]} passes over the ring in 0.2 s: it wakes too often"
