"""Flood start → detection → port down in the lab, through the real daemon, on the SPAN and sFlow paths.

Each round: a UDP flood from srv-1 (scapy, 20k pps); the attacker's first-packet time is
printed by the sender (CLOCK_MONOTONIC, shared by every process on the host). The agent's
detection time comes from its decision record, and the port-down time from a watcher inside
the switch namespace polling IFF_UP every millisecond. Then the port is restored over the API
and the next round starts. Baseline in the same run: the agent's own SNMP poll interval, the
fastest a cap-based meter could even notice.
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
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.agent.actions import ActionStore  # noqa: E402

from bench.enforce import pct, start_watcher  # noqa: E402
from tests.integration.test_abuse_enforce_lab import sflow_detection, span_detection  # noqa: E402
from tests.lab.agentrun import free_port, start_agent, start_switch_cli, write_lab_config  # noqa: E402
from tests.lab.netlab import Lab  # noqa: E402
from tests.lab.sflow_exporter import start_sflow_exporter  # noqa: E402
from tests.lab.snmpd import start_snmpd  # noqa: E402
from tests.lab.span import LabSpan  # noqa: E402

LAB_ID = 96


def run_path(path: str, rounds: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix=f"rw-bench-latency-{path}-"))
    lab = Lab(LAB_ID, 2, replace_stale=True).start()
    span = LabSpan(lab, [1, 2]).start() if path == "span" else None
    agent = cli = exporter = None
    detect: list[float] = []
    down: list[float] = []
    try:
        snmp = start_snmpd(lab)
        cli = start_switch_cli(lab, work / "cli")
        mport, aport, sport = free_port(), free_port(), free_port()
        cfg = write_lab_config(lab, snmp, work / "rw.yaml", state_dir=work / "state", interval_s=5,
                               window_s=300, metrics_port=mport, api_port=aport, mode="enforce", cli=cli,
                               safety="{max_shuts_per_switch: 1000, max_shuts_total: 1000}",
                               extra=span_detection(lab, [1, 2]) if path == "span" else sflow_detection(lab, sport))
        if path == "sflow":
            cfg.write_text(cfg.read_text().replace("    port_speed_mbps: 100\n",
                                                   f"    port_speed_mbps: 100\n    sflow_agent: {lab.mgmt_addr}\n"))
        agent = start_agent(cfg, mport, work / "agent.log")
        if path == "sflow":
            exporter = start_sflow_exporter(lab, (lab.noc_addr, sport), sampling_rate=16, ports=[1, 2],
                                            counter_interval_s=2)
        token = (work / "state" / "api.token").read_text().strip()
        store = ActionStore(f"sqlite:///{work / 'state' / 'ledger.sqlite'}")  # the records share the ledger's database
        store.start()
        offset = time.time() - time.monotonic()  # wall = monotonic + offset, on this host
        time.sleep(6)
        for _ in range(rounds):
            watcher = start_watcher(lab, "p1")
            flood = lab.spawn(lab.server_ns(1), [sys.executable, "-m", "tests.lab.attacks", "udp-flood", "--dst",
                                                 lab.upstream_ip, "--pps", "20000", "--duration", "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            out, _ = watcher.communicate(timeout=40)
            port_down = float(out.strip())
            fout, _ = flood.communicate(timeout=40)
            start = next(json.loads(ln)["now"] for ln in fout.splitlines() if '"start"' in ln)
            shut = [a for a in store.actions("srv-1") if a.action == "shut"][-1]
            decided = datetime.fromisoformat(shut.created_at).timestamp() - offset
            detect.append(decided - start)
            down.append(port_down - start)
            req = urllib.request.Request(f"http://127.0.0.1:{aport}/v1/restore", method="POST",
                                         data=json.dumps({"server": "srv-1"}).encode(),
                                         headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(req, timeout=60).read()
            time.sleep(12)  # let the detector's window clear before the next flood
        store.close()
    finally:
        if exporter is not None:
            exporter.stop()
        if agent is not None:
            agent.stop()
        if cli is not None:
            cli.stop()
        if span is not None:
            span.stop()
        lab.stop()
    return {
        f"{path}_rounds": len(down),
        f"{path}_flood_to_decision_median_s": round(statistics.median(detect), 3),
        f"{path}_flood_to_decision_p95_s": round(pct(detect, 0.95), 3),
        f"{path}_flood_to_port_down_median_s": round(statistics.median(down), 3),
        f"{path}_flood_to_port_down_p95_s": round(pct(down, 0.95), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--path", choices=("span", "sflow", "both"), default="both")
    args = ap.parse_args()
    fig: dict[str, object] = {"baseline_snmp_poll_interval_s": 5.0, "sflow_sampling_rate": 16}
    for path in ("span", "sflow") if args.path == "both" else (args.path,):
        f = run_path(path, args.rounds)
        fig.update(f)
        print(f"{path}: flood -> decision median {f[f'{path}_flood_to_decision_median_s']} s;"
              f" flood -> port down median {f[f'{path}_flood_to_port_down_median_s']} s"
              f" (p95 {f[f'{path}_flood_to_port_down_p95_s']} s)")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
