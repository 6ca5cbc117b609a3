"""bench/peer_fastnetmon.py's pure parts: loss and the lossless rate, the FastNetMon config it
runs (edited from the packaged one), and the counters it reads (Prometheus text, /proc/net/udp,
the notify script's record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.peer_fastnetmon import (
    FnmSettings,
    Step,
    fastnetmon_config,
    fastnetmon_edits,
    loss_fraction,
    lossless_rate,
    notify_bans,
    parse_prometheus,
    udp_drops,
)

# An excerpt of Debian fastnetmon 1.2.4's /etc/fastnetmon.conf: every line the bench edits,
# with the comments around them, a commented-out example of an edited key, and lines it keeps.
PACKAGED = """\
###
### Main configuration params
###

### Logging configuration

# Logging level, can be info or debug
logging_level = info

# FastNetMon Community collects usage data
# If you prefer to disable this capability you need to set following flag to on
disable_usage_report = off

# Enable/Disable any actions in case of attack
enable_ban = on

# list of all your networks in CIDR format
networks_list_path = /etc/networks_list

# list networks in CIDR format which will be not monitored for attacks
white_list_path = /etc/networks_whitelist

# enable this option if you want to send logs to local syslog facility
ban_for_pps = on
ban_for_bandwidth = on

# Limits for Dos/DDoS attacks
threshold_pps = 20000
threshold_mbps = 1000

# sFLOW capture suitable for switches
sflow = off

# How many packets will be collected from attack traffic
average_calculation_time = 5

# sFlow configuration

# It's possible to specify multiple ports here, using commas as delimiter
sflow_port = 6343
# sflow_port = 6343,6344
sflow_host = 0.0.0.0

# Path to notify script
notify_script_path = /usr/local/bin/notify_about_attack.sh

# pid
pid_path = /var/run/fastnetmon.pid

# Path to file where we store information for fastnetmon_client
cli_stats_file_path = /tmp/fastnetmon.dat
cli_stats_ipv6_file_path = /tmp/fastnetmon_ipv6.dat

# Enable gRPC API (required for fastnetmon_api_client tool)
enable_api = on

# Prometheus monitoring endpoint
prometheus = on

# Prometheus port
prometheus_port = 9209

# Prometheus host
prometheus_host = 127.0.0.1
"""

SETTINGS = FnmSettings(sflow_port=40123, prometheus_port=40124, work=Path("/tmp/rw-bench-peer-x"),
                       threshold_pps=10_000)


def _active(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            assert key.strip() not in out, f"{key.strip()} twice"
            out[key.strip()] = value.strip()
    return out


def test_config_edits_what_the_bench_needs_and_keeps_the_rest() -> None:
    got = _active(fastnetmon_config(PACKAGED, SETTINGS))
    assert got["sflow"] == "on"
    assert (got["sflow_host"], got["sflow_port"]) == ("127.0.0.1", "40123")
    assert got["disable_usage_report"] == "on"
    assert got["threshold_pps"] == "10000"
    assert (got["enable_ban"], got["ban_for_pps"]) == ("on", "on")
    assert got["enable_api"] == "off"
    assert (got["prometheus"], got["prometheus_host"], got["prometheus_port"]) == ("on", "127.0.0.1", "40124")
    for key in ("networks_list_path", "white_list_path", "notify_script_path", "pid_path",
                "cli_stats_file_path", "cli_stats_ipv6_file_path"):
        assert got[key].startswith("/tmp/rw-bench-peer-x/"), key
    # As packaged: the averaging the peer ships with, and everything not edited.
    packaged = _active(PACKAGED)
    for key in set(packaged) - set(fastnetmon_edits(SETTINGS)):
        assert got[key] == packaged[key], key
    assert got["average_calculation_time"] == "5"


def test_config_keeps_comments_and_the_line_count() -> None:
    text = fastnetmon_config(PACKAGED, SETTINGS)
    assert "# sflow_port = 6343,6344\n" in text
    assert text.splitlines()[:3] == PACKAGED.splitlines()[:3]
    assert len(text.splitlines()) == len(PACKAGED.splitlines())


def test_config_refuses_a_package_that_moved_a_key() -> None:
    without = PACKAGED.replace("disable_usage_report = off\n", "")
    with pytest.raises(ValueError, match=r"^fastnetmon\.conf: no active line for disable_usage_report$"):
        fastnetmon_config(without, SETTINGS)
    twice = PACKAGED + "threshold_pps = 5000\n"
    n = len(twice.splitlines())
    first = PACKAGED.splitlines().index("threshold_pps = 20000") + 1
    with pytest.raises(ValueError, match=rf"^x\.conf:{n}: threshold_pps set twice \(first on line {first}\)$"):
        fastnetmon_config(twice, SETTINGS, "x.conf")


def test_loss_fraction() -> None:
    assert loss_fraction(1000, 990) == pytest.approx(0.01)
    assert loss_fraction(1000, 1000) == 0.0
    assert loss_fraction(1000, 0) == 1.0
    assert loss_fraction(0, 0) == 0.0
    assert loss_fraction(1000, 1005) == 0.0  # counted more than sent: not a negative loss


def test_lossless_rate_is_the_top_of_the_clean_climb() -> None:
    steps = [Step(10_000, 10_000, 0.30), Step(2_500, 2_500, 0.0), Step(5_000, 5_000, 0.0099),
             Step(7_500, 7_400, 0.04), Step(20_000, 20_000, 0.0)]
    # 5,000 is the last under 1 %; 20,000's clean figure after 7,500 lost 4 % is not a climb.
    assert lossless_rate(steps) == 5_000
    assert lossless_rate([Step(2_500, 2_500, 0.01)]) == 0.0  # exactly 1 % is not under 1 %
    assert lossless_rate([Step(2_500, 2_500, 0.0), Step(5_000, 5_000, 0.0)]) == 5_000
    assert lossless_rate([]) == 0.0


def test_a_step_the_sender_fell_short_of_proves_nothing() -> None:
    steps = [Step(2_500, 2_500, 0.0), Step(10_000, 9_000, 0.0), Step(20_000, 20_000, 0.0)]
    assert lossless_rate(steps) == 2_500
    assert lossless_rate([Step(2_500, 2_500, 0.0), Step(10_000, 9_600, 0.0)]) == 10_000


def test_parse_prometheus_reads_fastnetmon_and_rackwarden_lines() -> None:
    text = """# HELP fastnetmon_total_simple_packets_processed Total number of simple packets processed
# TYPE fastnetmon_total_simple_packets_processed counter
fastnetmon_total_simple_packets_processed 1234567
fastnetmon_total_traffic_flows{traffic_direction="incoming",protocol_version="ipv4"}0
fastnetmon_total_traffic_packets{traffic_direction="outgoing",protocol_version="ipv4"} 41000
rackwarden_sflow_datagrams_total 4.8e+06
"""
    m = parse_prometheus(text)
    assert m["fastnetmon_total_simple_packets_processed"] == 1234567
    assert m['fastnetmon_total_traffic_flows{traffic_direction="incoming",protocol_version="ipv4"}'] == 0
    assert m['fastnetmon_total_traffic_packets{traffic_direction="outgoing",protocol_version="ipv4"}'] == 41000
    assert m["rackwarden_sflow_datagrams_total"] == 4_800_000


PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0500C87F:9CBB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7101 2 0000000000000000 0
  102: 0100007F:9CBB 00000000:0000 07 00000000:00012000 00:00000000 00000000     0        0 7102 2 0000000000000000 1600
  103: 0100007F:9CBC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7103 2 0000000000000000 7
"""


def test_udp_drops_matches_address_and_port() -> None:
    # 0x9CBB = 40123; the first line is a sender socket on 127.200.0.5 that drew the same port.
    assert udp_drops(PROC_NET_UDP, 40123) == 1600
    assert udp_drops(PROC_NET_UDP, 40124) == 7
    assert udp_drops(PROC_NET_UDP, 40123, "127.200.200.5") is None
    assert udp_drops(PROC_NET_UDP, 40123, "127.200.0.5") == 0
    assert udp_drops(PROC_NET_UDP, 40125) is None


def test_notify_bans_takes_the_first_ban_per_address() -> None:
    log = """1796625412.879202311 10.1.0.0 outgoing 12056 ban
1796625414.237801333 10.1.0.0 outgoing 12056 attack_details
1796625437.099656762 10.1.3.229 outgoing 12074 attack_details
1796625438.5 10.1.3.229 outgoing 12074 ban
1796625500.0 10.1.0.0 outgoing 13000 ban
short line
"""
    assert notify_bans(log) == {"10.1.0.0": pytest.approx(1796625412.879202311),
                                "10.1.3.229": pytest.approx(1796625438.5)}
