"""`make demo`: the lab data centre, the real agent on it, and the servers' rates live on screen."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from .agentrun import AgentProcess, start_agent, value, write_lab_config
from .netlab import Lab, cleanup_stale, pid_alive
from .snmpd import start_snmpd

LAB_ID = 90
METRICS_PORT = 9817
STATE = Path(tempfile.gettempdir()) / "rackwarden-demo"
PIDFILE = STATE / "agent.pid"
# (server, Mbit/s it sends): one over its 10 Mbit/s cap, the others inside it.
STORY = [(1, 15.0), (2, 5.0), (3, 9.0), (4, 2.0)]


def _table(m: dict, n: int) -> str:
    names = {0: "ok", 1: "OVER", 2: "SUSTAINED"}
    rows = [f"{'server':<8}{'port':<6}{'out Mbit/s':>11}{'in Mbit/s':>10}{'cap':>6}  state"]
    for i in range(1, n + 1):
        sid, port = f"srv-{i}", f"p{i}"
        out = value(m, "rackwarden_port_rate_bps", server=sid, switch="sw1", port=port, direction="outbound")
        inb = value(m, "rackwarden_port_rate_bps", server=sid, switch="sw1", port=port, direction="inbound")
        cap = value(m, "rackwarden_server_cap_bps", server=sid)
        st = value(m, "rackwarden_server_cap_state", server=sid)
        fmt = lambda v: "    -" if v is None or v != v else f"{v / 1e6:8.2f}"  # noqa: E731 (NaN: no rate)
        rows.append(f"{sid:<8}{port:<6}{fmt(out):>11}{fmt(inb):>10}{(cap or 0) / 1e6:>6.0f}  "
                    f"{names.get(int(st), '?') if st is not None else '-'}")
    return "\n".join(rows)


def stop_demo() -> None:
    if PIDFILE.exists():
        pid = int(PIDFILE.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        PIDFILE.unlink()
    removed = cleanup_stale(LAB_ID)
    print(f"demo stopped; removed {len(removed)} namespaces")


def run_demo(duration_s: float) -> int:
    cleanup_stale(LAB_ID)
    STATE.mkdir(parents=True, exist_ok=True)
    lab = Lab(LAB_ID, len(STORY), replace_stale=True)
    agent: AgentProcess | None = None
    try:
        print(f"starting the lab: switch namespace {lab.switch_ns} with bridge br0, "
              f"{len(STORY)} server namespaces, snmpd on {lab.mgmt_addr}")
        lab.start()
        snmp = start_snmpd(lab)
        cfg = write_lab_config(lab, snmp, STATE / "rackwarden.yaml", state_dir=STATE / "state",
                               interval_s=2, window_s=10, metrics_port=METRICS_PORT)
        agent = start_agent(cfg, METRICS_PORT, STATE / "agent.log")
        PIDFILE.write_text(str(agent.pid))
        print(f"agent running (pid {agent.pid}, config {cfg}); metrics at "
              f"http://127.0.0.1:{METRICS_PORT}/metrics")
        for i, mbps in STORY:
            lab.start_traffic(i, int(mbps * 1e6), duration_s)
            print(f"  srv-{i} ({lab.server_ip(i)}) sends {mbps:g} Mbit/s through port p{i}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s:
            time.sleep(2)
            print(f"\n-- t+{time.monotonic() - t0:4.0f} s  (cap 10 Mbit/s, window 10 s, polls every 2 s)")
            print(_table(agent.scrape(), len(STORY)))
        print("\nthe daemon recorded every poll; replay it with:\n"
              f"  .venv/bin/rackwarden replay snmp --input {STATE}/state/polls/sw1.jsonl --config {cfg}")
        print(json.dumps({"demo": "done", "agent_pid": agent.pid, "lab": lab.prefix}))
        return 0
    finally:
        if agent is not None:
            agent.stop()
        PIDFILE.unlink(missing_ok=True)
        lab.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo")
    p.add_argument("--stop", action="store_true", help="tear down a demo left running")
    p.add_argument("--duration", type=float, default=float(os.environ.get("DEMO_SECONDS", 40)))
    args = p.parse_args(argv)
    if args.stop:
        stop_demo()
        return 0
    return run_demo(args.duration)


if __name__ == "__main__":
    sys.exit(main())
