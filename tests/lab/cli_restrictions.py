"""Graceful restrictions in the lab CLI emulator: config objects that persist, effects in tc.

Imported by cli_emulator.py once its tty is raw: a login shell compiles its script before it
runs a line of it, and every millisecond spent compiling is a millisecond of cooked-mode echo.
The mixins use the emulator's Cli (self.t, self.error, self.prompt, self.resolve, ...).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

# Service names the CLIs print or accept for TCP ports (IOS prints 25 as `smtp`).
PORT_NAMES = {"smtp": 25, "www": 80, "pop3": 110, "smtps": 465, "submission": 587}
PRINT_NAMES = {25: "smtp"}
EOS_NAMES = {25: "smtp", 587: "submission"}


class Running:
    """Config objects that outlive a session (as a switch's running config does): policy-maps
    with their policer, ACLs with their rules, and what each interface has attached. Effects
    are real: `sync` makes the port's tc ingress match what is configured and attached."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        raw: dict[str, Any] = {}
        if path is not None and path.exists():
            raw = json.loads(path.read_text())
        # policy-map name -> {"rate": bps, "burst": bytes} (IOS)
        self.policies: dict[str, dict[str, int]] = raw.get("policies", {})
        # ACL name -> {"number": n, "rules": {seq: [action, proto, dst port]}}
        self.acls: dict[str, dict[str, Any]] = raw.get("acls", {})
        # CLI interface name -> {"service_policy", "access_group", "qos_lr", "cbs", "filter"}
        self.ifaces: dict[str, dict[str, Any]] = raw.get("ifaces", {})
        # Linux device -> what tc carries now ({"rate", "burst", "ports"}): only changes run tc
        self.applied: dict[str, dict[str, Any]] = raw.get("applied", {})

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"policies": self.policies, "acls": self.acls,
                                   "ifaces": self.ifaces, "applied": self.applied}, indent=1))
        tmp.replace(self.path)

    def iface(self, name: str) -> dict[str, Any]:
        return self.ifaces.setdefault(name, {})

    def denied_ports(self, acl: str | None) -> list[int]:
        """TCP destination ports an attached ACL drops; an attached name with no ACL drops none."""
        if not acl or acl not in self.acls:
            return []
        rules = sorted(self.acls[acl]["rules"].items(), key=lambda kv: int(kv[0]))
        return sorted({int(r[2]) for _, r in rules if r[0] == "deny" and r[1] == "tcp"})

    def desired(self, name: str) -> dict[str, Any]:
        cfg = self.ifaces.get(name, {})
        rate = burst = None
        policy = self.policies.get(cfg.get("service_policy") or "")
        if policy and policy.get("rate"):
            rate, burst = policy["rate"], policy["burst"]
        if cfg.get("qos_lr"):
            rate, burst = int(cfg["qos_lr"]) * 1000, int(cfg["cbs"])
        ports = self.denied_ports(cfg.get("access_group") or cfg.get("filter"))
        return {"rate": rate, "burst": burst, "ports": ports}

    def sync(self, interfaces: dict[str, str]) -> str | None:
        """Bring every port's tc ingress in line with the config; the tc error on failure.

        A failure leaves the port with nothing of ours on it (tc_apply cleans up); the caller
        rolls the config back and syncs again, so what the CLI shows is what the port does.
        """
        for name, dev in interfaces.items():
            want = self.desired(name)
            have = self.applied.get(dev, NOTHING)
            if want == have:
                continue
            problem = tc_apply(dev, have, want)
            if problem is not None:
                self.applied[dev] = NOTHING
                return problem
            self.applied[dev] = want
        return None

    def snapshot(self) -> str:
        return json.dumps({"policies": self.policies, "acls": self.acls, "ifaces": self.ifaces})

    def restore(self, snapshot: str) -> None:
        raw = json.loads(snapshot)
        self.policies, self.acls, self.ifaces = raw["policies"], raw["acls"], raw["ifaces"]


def _run(*argv: str) -> str | None:
    proc = subprocess.run(list(argv), capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"{argv[0]} exit {proc.returncode}")


NOTHING: dict[str, Any] = {"rate": None, "burst": None, "ports": []}
# Where our redirect sits when the port already has a clsact qdisc (the lab's SPAN mirror):
# after the mirror's filter (auto priority 49152), so the SPAN port still sees what the server
# sent, as a real switch's mirror does before its ingress ACL and policer.
AFTER_SPAN_PRIO = "65000"


def ifb_name(dev: str) -> str:
    return ("ifb" + dev)[:15]


def _has_clsact(dev: str) -> bool:
    proc = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return "clsact" in proc.stdout


def _remove(dev: str) -> None:
    if _has_clsact(dev):
        _run("tc", "filter", "del", "dev", dev, "ingress", "prio", AFTER_SPAN_PRIO)
    else:
        _run("tc", "qdisc", "del", "dev", dev, "ingress")
    _run("ip", "link", "del", ifb_name(dev))


def tc_apply(dev: str, have: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Rebuild `dev`'s ingress handling from `have` to `want`.

    The lab kernel has the ingress qdisc, u32, mirred, ifb and htb, but no police or gact
    action (and no matchall or flower), so the port's ingress is redirected to its own ifb
    device, whose root HTB carries it: TCP to a blocked port is classified into a class whose
    pfifo holds 0 packets (every one dropped), the rest into a class at the throttle rate with
    a short queue, so what exceeds the cap is dropped within a few frames as a policer does.
    The ifb device lives in the switch namespace and dies with it, and the tc state with it.
    """
    ifb = ifb_name(dev)
    if have["rate"] is not None or have["ports"]:
        _remove(dev)
    if want["rate"] is None and not want["ports"]:
        return None
    rate = f"{want['rate']}bit" if want["rate"] is not None else "10gbit"
    burst = str(want["burst"]) if want["burst"] is not None else "1mb"
    # A queue of about 20 ms at the cap (at least 4 frames): a policer drops what exceeds
    # the cap; a deep shaper queue would delay it instead, and hide the excess for a while.
    queue = max(4, want["rate"] // 8 // 50 // 1500) if want["rate"] else 1000
    steps = [
        ("ip", "link", "add", ifb, "type", "ifb"),
        ("ip", "link", "set", ifb, "up"),
        ("tc", "qdisc", "add", "dev", ifb, "root", "handle", "1:", "htb", "default", "20"),
        ("tc", "class", "add", "dev", ifb, "parent", "1:", "classid", "1:10", "htb", "rate", "8kbit"),
        ("tc", "qdisc", "add", "dev", ifb, "parent", "1:10", "pfifo", "limit", "0"),
        ("tc", "class", "add", "dev", ifb, "parent", "1:", "classid", "1:20", "htb",
         "rate", rate, "ceil", rate, "burst", burst, "cburst", burst),
        ("tc", "qdisc", "add", "dev", ifb, "parent", "1:20", "pfifo", "limit", str(queue)),
        *(("tc", "filter", "add", "dev", ifb, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", "protocol", "6", "0xff", "match", "ip", "dport", str(port), "0xffff",
           "flowid", "1:10") for port in want["ports"]),
    ]
    if _has_clsact(dev):
        steps.append(("tc", "filter", "add", "dev", dev, "ingress", "protocol", "all", "prio", AFTER_SPAN_PRIO,
                      "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb))
    else:
        steps += [
            ("tc", "qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"),
            ("tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
             "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb),
        ]
    for argv in steps:
        problem = _run(*argv)
        if problem is not None:
            _remove(dev)  # nothing half-built stays on the port
            return f"{' '.join(argv[:4])}: {problem}"
    return None


def tcp_port(word: str) -> int | None:
    if word.isdigit() and 0 < int(word) < 65536:
        return int(word)
    return PORT_NAMES.get(word.lower())


def port_word(port: int, eos: bool = False) -> str:
    """How a `show` prints a TCP port: IOS names 25 `smtp`, EOS also 587 `submission`."""
    return (EOS_NAMES if eos else PRINT_NAMES).get(port, str(port))


class IosRestrictions:
    """IOS commands as cisco_ios renders them: an MQC policer and an extended ACL."""

    t: Any
    s: Any
    running: Running
    iface: str
    obj: str
    mode: str
    eos: bool

    def policy_map(self, args: list[str]) -> None:
        self.running.policies.setdefault(args[0], {})
        self.running.save()
        self.obj, self.mode = args[0], "pmap"

    def attached_to(self, key: str, name: str) -> list[str]:
        return [i for i, cfg in self.running.ifaces.items() if cfg.get(key) == name]

    def no_policy_map(self, args: list[str]) -> None:
        users = self.attached_to("service_policy", args[0])
        if users:
            # IOS keeps an attached policy-map: it must be detached first.
            self.t.write(f"% Error: Policy map {args[0]} is being used by {users[0]}\n")
            return
        self.running.policies.pop(args[0], None)
        self.changed()

    def police(self, args: list[str]) -> None:
        if self.s.faults.get("reject_police"):
            self.t.write(self.error("invalid", len(self.prompt()) + len("police ")))
            return
        rate, burst = int(args[0]), int(args[1])
        if rate < 8000 or burst < 8000:
            self.t.write(self.error("invalid", len(self.prompt()) + len("police ")))
            return
        self.running.policies[self.obj] = {"rate": rate, "burst": burst}
        self.changed()

    def police_eos(self, args: list[str]) -> None:
        """EOS `police rate <kbps> kbps burst-size <bytes> bytes`."""
        self.police([str(int(args[0]) * 1000), args[1]])

    def access_list(self, args: list[str]) -> None:
        self.running.acls.setdefault(args[0], {"number": 0, "rules": {}})
        self.running.save()
        self.obj, self.mode = args[0], "acl"

    def no_access_list(self, args: list[str]) -> None:
        self.running.acls.pop(args[0], None)
        self.changed()  # an attached ACL that is gone permits everything again

    def acl_deny(self, args: list[str]) -> None:
        port = tcp_port(args[1])
        if port is None:
            self.t.write(self.error("invalid", len(self.prompt()) + len(f"{args[0]} deny tcp any any eq ")))
            return
        self.running.acls[self.obj]["rules"][args[0]] = ["deny", "tcp", port]
        self.changed()

    def acl_permit(self, args: list[str]) -> None:
        self.running.acls[self.obj]["rules"][args[0]] = ["permit", "ip", 0]
        self.changed()

    def service_policy(self, args: list[str]) -> None:
        if args[0] not in self.running.policies:
            self.t.write(f"% Error: policy map {args[0]} not configured\n")
            return
        self.running.iface(self.iface)["service_policy"] = args[0]
        self.changed()

    def no_service_policy(self, args: list[str]) -> None:
        cfg = self.running.iface(self.iface)
        if cfg.get("service_policy") == args[0]:
            cfg.pop("service_policy")
        self.changed()

    def access_group(self, args: list[str]) -> None:
        self.running.iface(self.iface)["access_group"] = args[0]
        self.changed()

    def no_access_group(self, args: list[str]) -> None:
        cfg = self.running.iface(self.iface)
        if cfg.get("access_group") == args[0]:
            cfg.pop("access_group")
        self.changed()

    def show_run_interface(self, args: list[str]) -> None:
        found = self.resolve(args[0])
        if found is None:
            self.t.write(self.error("invalid", len(self.prompt()) + len("show running-config interface ")))
            return
        name, dev = found
        body = [f"interface {name}"]
        indent = "   " if self.eos else " "  # EOS indents its running-config by three
        if self.admin_down(dev):
            body.append(f"{indent}shutdown")
        cfg = self.running.ifaces.get(name, {})
        if cfg.get("service_policy"):
            qos = "type qos " if self.eos else ""
            body.append(f"{indent}service-policy {qos}input {cfg['service_policy']}")
        if cfg.get("access_group"):
            body.append(f"{indent}ip access-group {cfg['access_group']} in")
        if self.eos:
            self.t.write("\n".join(body) + "\n")
            return
        text = "\n".join(["!", *body, "end"]) + "\n"
        self.t.write(f"Building configuration...\n\nCurrent configuration : {len(text)} bytes\n{text}\n")

    def show_policy_map(self, args: list[str]) -> None:
        policy = self.running.policies.get(args[0])
        if policy is None:
            return  # IOS prints nothing for a policy-map that does not exist
        if self.eos:
            lines = [f"Service-policy {args[0]}", "", "  Class-map: class-default (match-any)"]
            if policy.get("rate"):
                lines.append(f"       police rate {policy['rate'] // 1000} kbps burst-size {policy['burst']} bytes")
            self.t.write("\n".join(lines) + "\n")
            return
        lines = [f"  Policy Map {args[0]}", "    Class class-default"]
        if policy.get("rate"):
            lines.append(f"      police {policy['rate']} {policy['burst']} exceed-action drop")
        self.t.write("\n".join(lines) + "\n")

    def show_access_list(self, args: list[str]) -> None:
        acl = self.running.acls.get(args[0])
        if acl is None:
            return
        lines = [f"IP Access List {args[0]}" if self.eos else f"Extended IP access list {args[0]}"]
        for seq, (action, proto, port) in sorted(acl["rules"].items(), key=lambda kv: int(kv[0])):
            tail = f"eq {port_word(port, self.eos)}" if action == "deny" else ""
            lines.append(f"{'        ' if self.eos else '    '}{seq} {action} {proto} any any {tail}".rstrip())
        self.t.write("\n".join(lines) + "\n")


class VrpRestrictions:
    """VRP and Comware: `qos lr inbound cir`, a named advanced ACL applied inbound."""

    t: Any
    running: Running
    iface: str
    obj: str
    mode: str

    def qos_lr_inbound(self, args: list[str]) -> None:
        cir = int(args[0])
        if cir < 64:
            self.t.write(self.error("wrong", len(self.prompt()) + len("qos lr inbound cir ")))
            return
        cfg = self.running.iface(self.iface)
        cfg["qos_lr"], cfg["cbs"] = cir, self.default_cbs(cir)
        self.changed()

    def qos_lr_outbound(self, args: list[str]) -> None:
        # Kept and shown, no effect here: the lab only polices what servers send.
        self.running.iface(self.iface)["qos_lr_out"] = int(args[0])
        self.running.save()

    def undo_qos_lr_inbound(self, _: list[str]) -> None:
        cfg = self.running.iface(self.iface)
        cfg.pop("qos_lr", None)
        cfg.pop("cbs", None)
        self.changed()

    def acl_enter(self, args: list[str]) -> None:
        acls = self.running.acls
        if args[0] not in acls:
            used = {a["number"] for a in acls.values()}
            number = max((n for n in range(3000, 4000) if n not in used), default=3999)
            acls[args[0]] = {"number": number, "rules": {}}
            self.running.save()
        self.obj, self.mode = args[0], "acl"

    def acl_delete(self, args: list[str]) -> None:
        self.running.acls.pop(args[0], None)
        self.changed()

    def acl_rule(self, args: list[str]) -> None:
        port = tcp_port(args[1])
        if port is None:
            self.t.write(self.error("wrong", len(self.prompt()) + len(f"rule {args[0]} deny tcp destination-port eq ")))
            return
        self.running.acls[self.obj]["rules"][args[0]] = ["deny", "tcp", port]
        self.changed()

    def acl_undo_rule(self, args: list[str]) -> None:
        self.running.acls[self.obj]["rules"].pop(args[0], None)
        self.changed()

    def filter_on(self, args: list[str]) -> None:
        self.running.iface(self.iface)["filter"] = args[0]
        self.changed()

    def filter_off(self, args: list[str]) -> None:
        cfg = self.running.iface(self.iface)
        if cfg.get("filter") == args[0]:
            cfg.pop("filter")
        self.changed()

    def display_config(self, args: list[str]) -> None:
        found = self.resolve(args[0])
        if found is None:
            self.t.write(self.error("wrong", len(self.prompt()) + len("display current-configuration interface ")))
            return
        name, dev = found
        body = [f"interface {name}", *self.port_lines()]
        if self.admin_down(dev):
            body.append(" shutdown")
        cfg = self.running.ifaces.get(name, {})
        if cfg.get("qos_lr"):
            body.append(f" qos lr inbound cir {cfg['qos_lr']} cbs {cfg['cbs']}")
        if cfg.get("qos_lr_out"):
            out = int(cfg["qos_lr_out"])
            body.append(f" qos lr outbound cir {out} cbs {self.default_cbs(out)}")
        if cfg.get("filter"):
            body.append(f" {self.filter_line(cfg['filter'])}")
        self.t.write("\n".join(["#", *body, "#", "return"]) + "\n")

    def port_lines(self) -> list[str]:
        return []

    def display_acl(self, args: list[str]) -> None:
        acl = self.running.acls.get(args[0])
        if acl is None:
            self.t.write(self.no_such_acl + "\n")
            return
        self.t.write("\n".join(self.acl_listing(args[0], acl)) + "\n")

    no_such_acl = "Error: The ACL does not exist."

    def rules(self, acl: dict[str, Any]) -> list[str]:
        return [
            f" rule {seq} {action} {proto} destination-port eq {port_word(port)}"
            for seq, (action, proto, port) in sorted(acl["rules"].items(), key=lambda kv: int(kv[0]))
        ]
