"""Lab SPAN: each customer port's ingress and egress mirrored with tc to capture veths.

This kernel has only the u32 classifier and the mirred action (no 8021q, no act_vlan, no
matchall), so a shared SPAN port cannot be tagged per source port. Each mirrored port gets two
veth pairs in the switch namespace instead: `miN`->`ciN` carries what entered the switch on
pN (the server sent it), `moN`->`coN` what left on pN (the server receives it). The capture
listens on ciN/coN, so every frame is attributed to the real port whatever addresses it
carries: a spoofed source is still pinned to the port it came in on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from rackwarden.drivers.capture import MirrorSource

from tests.lab.netlab import Lab, LabError

SPAN_AGENT = "span"


class LabSpan:
    """Mirrors of the lab's customer ports; build with start(), undo with stop()."""

    def __init__(self, lab: Lab, servers: Iterable[int]) -> None:
        self.lab = lab
        self.servers = list(servers)
        self._ifindex: dict[int, int] = {}
        self._started = False

    def _tc(self, *args: str) -> None:
        proc = subprocess.run(["tc", "-n", self.lab.switch_ns, *args], capture_output=True,
                              text=True, timeout=10, check=False)
        if proc.returncode != 0:
            raise LabError(f"tc {' '.join(args)}: {proc.stderr.strip()}")

    def _ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", "-n", self.lab.switch_ns, *args], capture_output=True,
                              text=True, timeout=10, check=False)
        if proc.returncode != 0:
            raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    def start(self) -> LabSpan:
        self._started = True
        for i in self.servers:
            port = self.lab.port_name(i)
            self._ifindex[i] = self.lab.if_index(port)
            for d in ("i", "o"):
                self._ip("link", "add", f"m{d}{i}", "type", "veth", "peer", "name", f"c{d}{i}")
                self._ip("link", "set", f"m{d}{i}", "up")
                self._ip("link", "set", f"c{d}{i}", "up")
            self._tc("qdisc", "add", "dev", port, "clsact")
            # u32 `match u32 0 0` matches every frame; mirror leaves the original untouched,
            # and `continue` lets a later filter (the CLI emulator's policer or ACL) act on it
            # too: the mirror sees the port's ingress before the switch's own ACL, as SPAN does.
            for hook, d in (("ingress", "i"), ("egress", "o")):
                self._tc("filter", "add", "dev", port, hook, "protocol", "all", "u32", "match",
                         "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev",
                         f"m{d}{i}", "continue")
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for i in self.servers:
            subprocess.run(["tc", "-n", self.lab.switch_ns, "qdisc", "del", "dev",
                            self.lab.port_name(i), "clsact"], capture_output=True, check=False)
            for d in ("i", "o"):
                subprocess.run(["ip", "-n", self.lab.switch_ns, "link", "del", f"m{d}{i}"],
                               capture_output=True, check=False)

    def port_key(self, i: int) -> tuple[str, int]:
        """The detectors' (agent, ifIndex) for server i's switch port."""
        return (SPAN_AGENT, self._ifindex[i])

    def sources(self) -> list[MirrorSource]:
        out = []
        for i in self.servers:
            ifx = self._ifindex[i]
            out.append(MirrorSource(f"ci{i}", input_ifindex=ifx))
            out.append(MirrorSource(f"co{i}", output_ifindex=ifx))
        return out
