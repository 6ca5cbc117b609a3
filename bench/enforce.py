"""Decision → port-down latency in the lab: operator suspensions through agent, netmiko, sshd, CLI.

Each round asks the running agent's API to suspend a server. A watcher reads the port's
IFF_UP flag in the switch namespace every 2 ms; the latency is from the request to the flag
going down. The agent's own view (intent written → SNMP read-back agrees) is read from its
action records. Baseline in the same run: the bare `ip link set down` the emulator ends up
running, timed directly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.agent.actions import ActionStore  # noqa: E402

from tests.lab.agentrun import free_port, start_agent, start_switch_cli, write_lab_config  # noqa: E402
from tests.lab.netlab import Lab  # noqa: E402
from tests.lab.snmpd import start_snmpd  # noqa: E402

LAB_ID = 95


WATCHER = """
import sys, time
path, deadline = f"/sys/class/net/{sys.argv[1]}/flags", time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < deadline:
    with open(path) as f:
        if not int(f.read(), 16) & 1:
            print(repr(time.monotonic()), flush=True)
            break
    time.sleep(0.001)
"""


def start_watcher(lab: Lab, port: str) -> subprocess.Popen[str]:
    """A watcher inside the switch namespace: prints the monotonic time IFF_UP clears."""
    p = subprocess.Popen(["ip", "netns", "exec", lab.switch_ns, sys.executable, "-c", WATCHER, port, "30"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rw-bench-enforce-"))
    lab = Lab(LAB_ID, 2, replace_stale=True).start()
    agent = None
    cli = None
    try:
        snmp = start_snmpd(lab)
        cli = start_switch_cli(lab, work / "cli")
        mport, aport = free_port(), free_port()
        cfg = write_lab_config(lab, snmp, work / "rw.yaml", state_dir=work / "state", interval_s=5,
                               window_s=300, metrics_port=mport, api_port=aport, mode="enforce", cli=cli,
                               safety="{max_shuts_per_switch: 1000, max_shuts_total: 1000}")
        agent = start_agent(cfg, mport, work / "agent.log")
        token = (work / "state" / "api.token").read_text().strip()

        def call(path: str, body: dict[str, str]) -> dict[str, object]:
            req = urllib.request.Request(f"http://127.0.0.1:{aport}{path}", data=json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {token}"}, method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())

        to_down: list[float] = []
        internal: list[float] = []
        for _ in range(args.rounds):
            watcher = start_watcher(lab, "p1")
            t0 = time.monotonic()
            doc = call("/v1/suspend", {"server": "srv-1", "reason": "operator", "note": "bench"})
            out, _ = watcher.communicate(timeout=40)
            assert doc["last_action"]["state"] == "APPLIED", doc  # type: ignore[index]
            to_down.append(float(out.strip()) - t0)
            call("/v1/restore", {"server": "srv-1"})
        store = ActionStore(f"sqlite:///{work / 'state' / 'ledger.sqlite'}")  # the records share the ledger's database
        store.start()
        internal = [a.detail["latency_s"] for a in store.actions("srv-1") if a.action == "shut"]
        store.close()

        base: list[float] = []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            lab.set_link("p2", False)
            base.append(time.monotonic() - t0)
            lab.set_link("p2", True)
    finally:
        if agent is not None:
            agent.stop()
        if cli is not None:
            cli.stop()
        lab.stop()
    fig = {
        "rounds": args.rounds,
        "decision_to_port_down_median_s": round(statistics.median(to_down), 3),
        "decision_to_port_down_p95_s": round(pct(to_down, 0.95), 3),
        "intent_to_readback_agrees_median_s": round(statistics.median(internal), 3),
        "intent_to_readback_agrees_p95_s": round(pct(internal, 0.95), 3),
        "bare_ip_link_down_median_s": round(statistics.median(base), 4),
    }
    print(f"decision -> port down: median {fig['decision_to_port_down_median_s']} s, "
          f"p95 {fig['decision_to_port_down_p95_s']} s over {args.rounds} rounds")
    print(f"intent written -> SNMP read-back agrees: median {fig['intent_to_readback_agrees_median_s']} s")
    print(f"baseline `ip link set down` (netns exec): median {fig['bare_ip_link_down_median_s']} s")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
