"""SPAN/mirror-port capture: AF_PACKET frames to FlowSample batches or SampleColumns, with evidence pcaps."""

from rackwarden.drivers.capture.afpacket import CaptureError, enter_netns, run_in_netns
from rackwarden.drivers.capture.evidence import EvidenceRing, write_evidence, write_pcap
from rackwarden.drivers.capture.rawring import RawFrameRing
from rackwarden.drivers.capture.span import CaptureCounters, MirrorSource, SpanCapture

__all__ = [
    "CaptureCounters",
    "CaptureError",
    "EvidenceRing",
    "MirrorSource",
    "RawFrameRing",
    "SpanCapture",
    "enter_netns",
    "run_in_netns",
    "write_evidence",
    "write_pcap",
]
