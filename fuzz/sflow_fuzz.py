"""Coverage-guided fuzzer (atheris) for the sFlow v5 decoders (exact and batch) and the header parser.

    python fuzz/sflow_fuzz.py -max_total_time=600 [libFuzzer flags] [corpus dirs]

Seeds come from tests/fixtures/sflow and from the encoder. Unlike plain libFuzzer, a crash is
recorded (crash-<sha1> under -artifact_prefix, default fuzz/artifacts/) and the run goes on,
so a 10-minute run reports every distinct crash. At the end it prints executions, crashes,
RSS at start and end and peak RSS, and one JSON line; the exit status is 1 if anything
crashed or the RSS grew by more than --max-rss-growth-mb.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import atheris
from _harness import Harness, write_seeds  # fuzz/ is this script's folder on sys.path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sflow"
AT = datetime(2025, 1, 1, tzinfo=UTC)

with atheris.instrument_imports():
    from rackwarden.drivers import packets
    from rackwarden.drivers.sflow import decoder

# The batch decoder is imported after, uninstrumented (it reuses the instrumented decoder and
# parser): inputs are steered by their coverage, and every one is also checked through the batch
# decoder. Instrumented, RSS grew ~4 MB/s for the whole of a 2-minute run (the cause inside
# atheris was not traced); the same loop without atheris stays flat.
from rackwarden.drivers.sflow import batch, cwalk  # noqa: E402

# The compiled walker (cwalk.py) is held to the numpy walker's answers on every input, when built.
C_WALK = cwalk.compiled_available()


def _columns(impl: str, data: list[bytes]) -> batch.ColumnBatch:
    os.environ[cwalk.ENV_VAR] = impl
    try:
        return batch.decode_batch_columns_unguarded(data, [1.0] * len(data), [AT] * len(data),
                                                    first_number=5)
    finally:
        del os.environ[cwalk.ENV_VAR]


def check_walkers(data: list[bytes]) -> None:
    """The bulk column decode walked in C gives the numpy walk's very arrays and results."""
    c, py = _columns("c", data), _columns("python", data)
    for f in batch._COLUMN_FIELDS:
        a, b = getattr(c.cols, f), getattr(py.cols, f)
        if a.dtype != b.dtype or a.shape != b.shape or (a != b).any():
            raise AssertionError(f"C walk differs from the numpy walk in column {f}")
    for f in ("header_agent", "sub_agent", "sequence", "uptime_ms", "flows"):
        if (getattr(c, f) != getattr(py, f)).any():
            raise AssertionError(f"C walk differs from the numpy walk in {f}")
    if (c.cols.agent_names, c.fallback, c.partial) != (py.cols.agent_names, py.fallback,
                                                       py.partial):
        raise AssertionError("C walk differs from the numpy walk in its results")


def check(data: bytes) -> None:
    r = decoder.decode_unguarded(data, 1.0, AT)
    # The properties the unit tests hold, checked on every input the fuzzer finds.
    if r.error is not None and r.samples:
        raise AssertionError("an errored datagram kept samples")
    if sum(len(s.header) for s in r.samples if hasattr(s, "header")) > len(data):
        raise AssertionError("kept more header bytes than the datagram had")
    # The bulk decoder must give the exact decoder's answer, alone and beside a copy of
    # the input cut at a 4-byte boundary (so the batch buffer has two layouts to walk).
    cut = data[:len(data) & ~3]
    if batch.decode_batch_unguarded([data, cut], [1.0, 1.0], [AT, AT]) != [
            r, decoder.decode_unguarded(cut, 1.0, AT)]:
        raise AssertionError("decode_batch differs from decode_datagram")
    if C_WALK:
        check_walkers([data, cut, data])
    packets.parse_tuple(data)  # the same bytes as a frame: parser reached directly
    packets.parse_tuple(data, 11)
    packets.parse_tuple(data, 12)


def seed_corpus(into: Path) -> int:
    """Fixtures plus encoder output (every sample shape we produce) as starting inputs."""
    from rackwarden.drivers.packets import flow_sample_from_frame
    from rackwarden.drivers.sflow.decoder import DatagramHeader, Sample
    from rackwarden.drivers.sflow.encoder import encode_datagram
    from rackwarden.policies.flowfacts import CounterSample

    seeds: list[bytes] = []
    for p in sorted(FIXTURES.glob("*.hex")):
        lines = p.read_text().splitlines()
        seeds.append(bytes.fromhex("".join(x for x in lines if not x.startswith("#"))))
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Dot1Q, Ether

    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    frames = [bytes(p) for p in (
        e / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=25, flags="S"),
        e / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01" * 4) / UDP(),
        e / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
        e / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP(flags="S"),
    )]
    for agent in ("192.0.2.1", "2001:db8::1", ""):
        samples: list[Sample] = [
            flow_sample_from_frame(f, source="sflow", agent=agent, now=0.0, at=AT,
                                   sampling_rate=512, input_ifindex=3, output_ifindex=4,
                                   snaplen=128) for f in frames]
        samples.append(CounterSample("sflow", agent, 0.0, AT, 3, 6, 10**9, 1, 3, 1, 2, 3, 4, 5,
                                     6, 7, 8, 9, 10, 11, 12, 13, 0))
        for expanded in (None, True):
            seeds.append(encode_datagram(DatagramHeader(agent, 0, 1, 100), samples,
                                         expanded=expanded))
    seeds.extend(frames)
    return write_seeds(into, seeds)


# A datagram rarely exceeds one MTU.
HARNESS = Harness("sflow", check, seed_corpus, max_len=4096)

if __name__ == "__main__":
    HARNESS.run(sys.argv)
