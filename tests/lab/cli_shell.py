"""The lab switch CLI (IOS/EOS, VRP, Comware) behind cli_emulator.py: ports really move.

cli_emulator.py is the sshd ForceCommand; it makes the tty raw first and then runs `main()`
here, loaded from cached bytecode (see its docstring for why).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Loaded by cli_emulator.py (the login entry), which has put tests/lab on sys.path.
from cli_restrictions import IosRestrictions, Running, VrpRestrictions

# The tty settings to restore at logout; set by cli_emulator.py, which made the tty raw.
_SAVED_TTY: list[Any] | None = None

FLAVOURS = ("ios", "eos", "vrp", "comware")
IFF_UP = 0x1
SYS_NET = Path("/sys/class/net")

# Usage (as sshd ForceCommand):
#   python3 -I -S cli_emulator.py --flavour ios --map /path/map.json
# or with RW_CLI_FLAVOUR / RW_CLI_MAP in the environment. The map file is JSON:
#   {"hostname": "sw1",
#    "interfaces": {"GigabitEthernet0/1": "p1"},    CLI name -> Linux device in this netns
#    "enable_secret": "s3cret",                      optional (ios/eos): `enable` asks for it
#    "login_privileged": false,                      land in `#` instead of `>` (ios/eos)
#    "startup_file": "/path/startup.json",           what `write memory`/`save` writes
#    "log_file": "/path/cli.log",                    optional transcript of received lines
#    "faults": {"drop_after_shutdown": false,        test-only: exit right after `shutdown`
#               "reject_shutdown": false,            test-only: `% Invalid input` to `shutdown`
#               "hang_after_shutdown_s": 0,          test-only: port down, then no prompt for N s
#               "slow_interface_s": 0,               test-only: `interface X` answers after N s
#               "unknown_command_on_shutdown": false, test-only: `Unknown command` (no marker),
#                                                    as an emulator of another make answers
#               "confirm_save": false,               test-only (ios): `write memory` asks [confirm]
#               "max_sessions": 0,                   test-only: refuse a session beyond N at login
#               "no_qos_lr_inbound": false,          test-only (comware): an old Comware 5 box
#                                                    without `qos lr inbound` (outbound only)
#               "reject_police": false},             test-only (ios): `police` refused, as a
#                                                    switch without hardware policing
#    "state_file": "/path/running.json"}              optional: where policers/ACLs persist
# It is read at every login, so a test can flip faults between sessions.


# ------------------------------------------------------------------------------ terminal


class Hangup(Exception):
    """The client went away (EOF on stdin)."""


class Terminal:
    """Byte-level line editor on a raw tty: echoes like a switch, CRLF line ends."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.pending = b""
        self.last_cr = False

    def write(self, text: str) -> None:
        data = re.sub(r"\r?\n", "\r\n", text).encode()
        while data:
            n = os.write(self.fd_out, data)
            data = data[n:]

    def _byte(self) -> int:
        if not self.pending:
            chunk = os.read(self.fd_in, 4096)
            if not chunk:
                raise Hangup
            self.pending = chunk
        b, self.pending = self.pending[0], self.pending[1:]
        return b

    def read_line(self, echo: bool = True) -> str:
        """One typed line; Ctrl-Z comes back as '\\x1a', Ctrl-C as '\\x03'."""
        buf: list[str] = []
        while True:
            b = self._byte()
            was_cr, self.last_cr = self.last_cr, False
            if b == 0x0A and was_cr:  # the LF of a CRLF pair
                continue
            if b in (0x0D, 0x0A):
                self.last_cr = b == 0x0D
                self.write("\n")  # even after a hidden password, as a switch does
                return "".join(buf)
            if b in (0x1A, 0x03):
                if echo:
                    self.write("^Z\n" if b == 0x1A else "^C\n")
                return chr(b)
            if b in (0x08, 0x7F):
                if buf:
                    buf.pop()
                    if echo:
                        self.write("\b \b")
                continue
            if b == 0x1B:  # ESC [ ... final: arrow keys and friends, ignored
                nxt = self._byte()
                if nxt == ord("["):
                    while not (0x40 <= self._byte() <= 0x7E):
                        pass
                continue
            if 0x20 <= b < 0x7F:
                buf.append(chr(b))
                if echo:
                    self.write(chr(b))
            # anything else (NUL from netmiko's is_alive, tabs, 8-bit) is ignored


# ------------------------------------------------------------------------------ state


@dataclass
class Setup:
    flavour: str
    hostname: str
    interfaces: dict[str, str]
    enable_secret: str | None
    login_privileged: bool
    startup_file: Path
    log_file: Path | None
    faults: dict[str, float] = field(default_factory=dict)
    state_file: Path | None = None  # running config objects (policers, ACLs) across sessions

    @classmethod
    def load(cls, flavour: str, map_path: Path) -> "Setup":
        raw = json.loads(map_path.read_text())
        return cls(
            flavour=flavour,
            hostname=str(raw.get("hostname", "sw1")),
            interfaces={str(k): str(v) for k, v in raw.get("interfaces", {}).items()},
            enable_secret=raw.get("enable_secret"),
            login_privileged=bool(raw.get("login_privileged", flavour == "eos")),
            startup_file=Path(raw.get("startup_file", str(map_path) + ".startup.json")),
            log_file=Path(raw["log_file"]) if raw.get("log_file") else None,
            faults={str(k): float(v) for k, v in raw.get("faults", {}).items()},
            state_file=Path(raw.get("state_file", str(map_path) + ".running.json")),
        )


@dataclass
class Link:
    admin_up: bool
    oper_up: bool
    mac: str
    mtu: int
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_multicast: int

    @classmethod
    def read(cls, dev: str) -> "Link":
        base = SYS_NET / dev

        def num(name: str) -> int:
            return int((base / "statistics" / name).read_text())

        flags = int((base / "flags").read_text(), 16)
        oper = (base / "operstate").read_text().strip()
        return cls(
            admin_up=bool(flags & IFF_UP),
            oper_up=bool(flags & IFF_UP) and oper in ("up", "unknown"),
            mac=(base / "address").read_text().strip(),
            mtu=int((base / "mtu").read_text()),
            rx_bytes=num("rx_bytes"),
            tx_bytes=num("tx_bytes"),
            rx_packets=num("rx_packets"),
            tx_packets=num("tx_packets"),
            rx_multicast=num("multicast"),
        )


def ip_link_set(dev: str, up: bool) -> str | None:
    """Really change the port; the error text on failure."""
    proc = subprocess.run(
        ["ip", "link", "set", "dev", dev, "up" if up else "down"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def mac_dotted(mac: str) -> str:
    h = mac.replace(":", "")
    return f"{h[0:4]}.{h[4:8]}.{h[8:12]}"


def mac_dashed(mac: str) -> str:
    h = mac.replace(":", "")
    return f"{h[0:4]}-{h[4:8]}-{h[8:12]}"


# ------------------------------------------------------------------------------ command tables


@dataclass
class Cmd:
    words: list[
        tuple[str, int]
    ]  # (keyword, shortest accepted prefix) or ("<if>"|"<rest>"|"<n>", 0)
    run: Callable[[list[str]], None]


def cmd(spec: str, run: Callable[[list[str]], None]) -> Cmd:
    """`sh[ow] int[erfaces] <if>`: the bracketed tail may be left off, as on the real CLIs."""
    words: list[tuple[str, int]] = []
    for w in spec.split():
        if w.startswith("<"):
            words.append((w, 0))
        elif "[" in w:
            head, tail = w.split("[", 1)
            words.append((head + tail.rstrip("]"), len(head)))
        else:
            words.append((w, len(w)))
    return Cmd(words, run)


@dataclass
class Miss:
    token: int  # index of the token that failed, or len(tokens) when input ran out
    incomplete: bool


def match(c: Cmd, tokens: list[str]) -> list[str] | Miss:
    args: list[str] = []
    i = 0
    for kw, shortest in c.words:
        if kw == "<rest>":
            if i >= len(tokens):
                return Miss(i, True)
            args.append(" ".join(tokens[i:]))
            i = len(tokens)
            continue
        if i >= len(tokens):
            return Miss(i, True)
        tok = tokens[i]
        if kw == "<if>":
            i += 1
            # `GigabitEthernet 0/1` (with a space) is accepted by every one of these CLIs.
            if i < len(tokens) and tokens[i][:1].isdigit() and not tok[-1:].isdigit():
                tok += tokens[i]
                i += 1
            args.append(tok)
            continue
        if kw == "<w>":  # one word: an object name, a port name
            args.append(tok)
            i += 1
            continue
        if kw == "<n>":
            if not tok.isdigit():
                return Miss(i, False)
            args.append(tok)
            i += 1
            continue
        low = tok.lower()
        if len(low) < shortest or not kw.startswith(low):
            return Miss(i, False)
        i += 1
    if i < len(tokens):
        return Miss(i, False)
    return args


# ------------------------------------------------------------------------------ the CLIs


class Quit(Exception):
    """The user logged out."""


class Cli:
    """Modes, prompts and commands shared by the flavours; subclasses fill the tables."""

    def __init__(self, setup: Setup, term: Terminal) -> None:
        self.s = setup
        self.t = term
        self.mode = "exec"
        self.iface = ""  # CLI name of the interface being configured
        self.tables: dict[str, list[Cmd]] = {}
        self.running = Running(setup.state_file)
        self._good = self.running.snapshot()  # the config as the port carries it, for a rollback
        self.obj = ""  # the policy-map or ACL being configured

    # -- logging, for debugging the lab (never read by assertions)
    def log(self, event: str) -> None:
        if self.s.log_file is None:
            return
        with self.s.log_file.open("a") as f:
            f.write(f"{time.time():.3f} {self.s.flavour} {self.mode} {event!r}\n")

    # -- flavour hooks
    def prompt(self) -> str:
        raise NotImplementedError

    def banner(self) -> str:
        return ""

    def error(self, kind: str, column: int) -> str:
        raise NotImplementedError

    def ctrl_z(self) -> None:
        raise NotImplementedError

    # -- interface names
    def resolve(self, typed: str) -> tuple[str, str] | None:
        """(CLI name, Linux device) for a typed name, abbreviations and Linux names included."""
        low = typed.lower()
        for name, dev in self.s.interfaces.items():
            if name.lower() == low:
                return name, dev
        for name, dev in self.s.interfaces.items():
            if dev == typed:
                return name, dev
        m = re.fullmatch(r"([A-Za-z-]+)(\d.*)", typed)
        if m is None:
            return None
        prefix, rest = m.group(1).lower(), m.group(2)
        longer = {"ge": "gigabitethernet", "xge": "ten-gigabitethernet", "et": "ethernet"}
        hits = []
        for name, dev in self.s.interfaces.items():
            n = re.fullmatch(r"([A-Za-z-]+)(\d.*)", name)
            if n is None or n.group(2) != rest:
                continue
            full = n.group(1).lower()
            if full.startswith(prefix) or full.startswith(longer.get(prefix, "\0")):
                hits.append((name, dev))
        return hits[0] if len(hits) == 1 else None

    # -- the loop
    def run(self) -> None:
        self.t.write(self.banner())
        while True:
            self.t.write(self.prompt())
            line = self.t.read_line()
            self.log(line)
            if line == "\x1a":
                self.ctrl_z()
                continue
            if line == "\x03":
                continue
            self.execute(line)

    def execute(self, line: str, table: str | None = None) -> None:
        spans = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        tokens = [t for _, t in spans]
        if not tokens:
            return
        misses: list[Miss] = []
        for c in self.tables[table or self.mode]:
            got = match(c, tokens)
            if isinstance(got, Miss):
                misses.append(got)
                continue
            c.run(got)
            return
        worst = max(misses, key=lambda m: (m.token, not m.incomplete))
        if worst.incomplete and worst.token >= len(tokens):
            self.t.write(self.error("incomplete", len(self.prompt()) + len(line)))
            return
        col = spans[min(worst.token, len(spans) - 1)][0]
        self.t.write(self.error("invalid", len(self.prompt()) + col))

    # -- effects shared by every flavour
    def set_port(self, up: bool) -> None:
        """shutdown / no shutdown / undo shutdown on the current interface."""
        if not up and self.s.faults.get("unknown_command_on_shutdown"):
            # Refused in words no vendor pattern knows (FakeNOS and friends answer like this).
            self.t.write("Unknown command\n")
            return
        if not up and self.s.faults.get("reject_shutdown"):
            # Marker under `shutdown`, exactly as a switch that does not take the command.
            self.t.write(self.error("invalid", len(self.prompt())))
            return
        dev = self.s.interfaces[self.iface]
        problem = ip_link_set(dev, up)
        self.log(f"ip link set {dev} {'up' if up else 'down'} -> {problem or 'ok'}")
        if problem is not None:
            self.t.write(self.error("failed", 0) + f" {problem}\n")
            return
        if not up and self.s.faults.get("drop_after_shutdown"):
            # The port is down now; the client sees its session vanish without a prompt.
            os._exit(0)
        if not up and self.s.faults.get("hang_after_shutdown_s"):
            # A slow switch: the change is made, the answer is late. Holds the agent between
            # writing its intent and recording the outcome, where a test can kill it.
            time.sleep(self.s.faults["hang_after_shutdown_s"])

    def changed(self) -> None:
        """After a config change: make it real on the ports (tc) and keep it for later sessions.

        A change the port cannot carry is refused as a switch refuses a line: the config goes
        back to what it was before the line (and the port with it), so the read-back never
        shows what the port does not do.
        """
        problem = self.running.sync(self.s.interfaces)
        self.log(f"tc sync -> {problem or 'ok'}")
        if problem is not None:
            self.running.restore(self._good)
            self.running.sync(self.s.interfaces)
            self.t.write(self.error("failed", 0) + f" {problem}\n")
        self.running.save()
        self._good = self.running.snapshot()

    def admin_down(self, dev: str) -> bool:
        try:
            return not Link.read(dev).admin_up
        except OSError:
            return False

    def write_startup(self) -> None:
        state = {}
        for name, dev in self.s.interfaces.items():
            try:
                state[name] = "up" if Link.read(dev).admin_up else "down"
            except OSError:
                state[name] = "missing"
        tmp = self.s.startup_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"saved_at": time.time(), "interfaces": state}, indent=1))
        tmp.replace(self.s.startup_file)
        self.log("startup config written")

    def ask(self, question: str, echo: bool = True) -> str:
        self.t.write(question)
        answer = self.t.read_line(echo=echo)
        self.log(f"answer {'***' if not echo else answer}")
        return answer

    def enter_interface(self, args: list[str], mode: str = "if") -> None:
        found = self.resolve(args[0])
        if found is None:
            # Marker under the name, as the real CLIs do for a port that does not exist.
            self.t.write(self.error("invalid", len(self.prompt()) + len("interface ")))
            return
        self.iface = found[0]
        self.mode = mode
        if self.s.faults.get("slow_interface_s"):
            # Holds the session before the effect line, where a test can cut the connection.
            time.sleep(self.s.faults["slow_interface_s"])

    def logout(self, _: list[str]) -> None:
        raise Quit


class IosCli(IosRestrictions, Cli):
    """Cisco IOS; with eos=True the Arista EOS spellings netmiko's arista_eos waits for."""

    def __init__(self, setup: Setup, term: Terminal, eos: bool) -> None:
        super().__init__(setup, term)
        self.eos = eos
        self.mode = "priv" if setup.login_privileged else "exec"
        exec_cmds = [
            cmd("sh[ow] int[erfaces] <if>", self.show_interface),
            cmd("ter[minal] len[gth] <n>", self.term_length),
            cmd("ter[minal] wid[th] <n>", self.term_width),
            cmd("exi[t]", self.logout),
            cmd("logo[ut]", self.logout),
            cmd("sh[ow] ip access-l[ists] <w>", self.show_access_list),
            *(
                [cmd("sh[ow] run[ning-config] int[erfaces] <if>", self.show_run_interface),
                 cmd("sh[ow] policy-map type quality-of-service <w>", self.show_policy_map)]
                if eos else
                [cmd("sh[ow] run[ning-config] int[erface] <if>", self.show_run_interface),
                 cmd("sh[ow] policy-map <w>", self.show_policy_map)]
            ),
        ]
        # The restriction commands as each renders them (cisco_ios, arista_eos).
        pmap, acl = ("policy-m[ap] type quality-of-service", "ip access-l[ist]") if eos else \
            ("policy-m[ap]", "ip access-l[ist] ext[ended]")
        police = cmd("pol[ice] rate <n> kbps burst-size <n> bytes", self.police_eos) if eos else \
            cmd("pol[ice] <n> <n> exc[eed-action] dr[op]", self.police)
        service = "service-p[olicy] type qos in[put]" if eos else "service-p[olicy] in[put]"
        # `interface X` and `end` work from every config submode, as on IOS.
        leave = [
            cmd("int[erface] <if>", self.enter_interface),
            cmd("end", self.end),
            cmd("do <rest>", self.do),
        ]
        self.tables = {
            "exec": [cmd("en[able]", self.enable), *exec_cmds],
            "priv": [
                cmd("conf[igure] t[erminal]", self.configure),
                cmd("wr[ite] mem[ory]", self.write_memory),
                cmd("wr[ite]", self.write_memory),
                cmd("copy run[ning-config] sta[rtup-config]", self.copy_run_start),
                cmd("disa[ble]", self.disable),
                cmd("en[able]", lambda _: None),
                *exec_cmds,
            ],
            "config": [
                cmd("int[erface] <if>", self.enter_interface),
                cmd("end", self.end),
                cmd("exi[t]", self.end),
                cmd("do <rest>", self.do),
                cmd(f"{pmap} <w>", self.policy_map),
                cmd(f"no {pmap} <w>", self.no_policy_map),
                cmd(f"{acl} <w>", self.access_list),
                cmd(f"no {acl} <w>", self.no_access_list),
            ],
            "pmap": [
                cmd("cl[ass] class-default", lambda _: setattr(self, "mode", "pmapc")),
                cmd("exi[t]", lambda _: setattr(self, "mode", "config")),
                *leave,
            ],
            "pmapc": [
                police,
                cmd("exi[t]", lambda _: setattr(self, "mode", "pmap")),
                *leave,
            ],
            "acl": [
                cmd("<n> deny tcp any any eq <w>", self.acl_deny),
                cmd("<n> permit ip any any", self.acl_permit),
                cmd("exi[t]", lambda _: setattr(self, "mode", "config")),
                *leave,
            ],
            "if": [
                cmd("shu[tdown]", lambda _: self.set_port(False)),
                cmd("no shu[tdown]", lambda _: self.set_port(True)),
                cmd(f"{service} <w>", self.service_policy),
                cmd(f"no {service} <w>", self.no_service_policy),
                cmd("ip access-g[roup] <w> in", self.access_group),
                cmd("no ip access-g[roup] <w> in", self.no_access_group),
                cmd("desc[ription] <rest>", lambda _: None),
                cmd("int[erface] <if>", self.enter_interface),
                cmd("end", self.end),
                cmd("exi[t]", lambda _: setattr(self, "mode", "config")),
                cmd("do <rest>", self.do),
            ],
        }

    def execute(self, line: str, table: str | None = None) -> None:
        # A global config command typed in a submode (interface, policy-map, ACL) leaves the
        # submode and runs, as on IOS: `no policy-map X` right after `no service-policy ...`.
        if table is None and self.mode in ("if", "pmap", "pmapc", "acl"):
            tokens = line.split()
            if tokens and not any(not isinstance(match(c, tokens), Miss) for c in self.tables[self.mode]):
                if any(not isinstance(match(c, tokens), Miss) for c in self.tables["config"]):
                    self.mode = "config"
        super().execute(line, table)

    def prompt(self) -> str:
        h = self.s.hostname
        if self.mode == "exec":
            return f"{h}>"
        if self.mode == "priv":
            return f"{h}#"
        if self.mode == "config":
            return f"{h}(config)#"
        if self.mode in ("pmap", "pmapc", "acl") and self.eos:
            sub = {"pmap": f"config-pmap-quality-of-service-{self.obj}",
                   "pmapc": f"config-pmap-c-quality-of-service-{self.obj}-class-default",
                   "acl": f"config-acl-{self.obj}"}
            return f"{h}({sub[self.mode]})#"
        if self.mode in ("pmap", "pmapc", "acl"):
            sub = {"pmap": "config-pmap", "pmapc": "config-pmap-c", "acl": "config-ext-nacl"}
            return f"{h}({sub[self.mode]})#"
        if self.eos:
            short = re.sub(r"^Ethernet", "Et", self.iface)
            return f"{h}(config-if-{short})#"
        return f"{h}(config-if)#"

    def banner(self) -> str:
        return "\n"

    def error(self, kind: str, column: int) -> str:
        if kind == "incomplete":
            return "% Incomplete command.\n\n"
        if kind == "failed":
            return "% Error:"
        return " " * column + "^\n% Invalid input detected at '^' marker.\n\n"

    def ctrl_z(self) -> None:
        if self.mode not in ("exec", "priv"):
            self.mode = "priv"

    def enable(self, _: list[str]) -> None:
        if self.s.enable_secret:
            for _attempt in range(3):
                if self.ask("Password: ", echo=False) == self.s.enable_secret:
                    self.mode = "priv"
                    return
            self.t.write("% Bad secrets\n\n")
            return
        self.mode = "priv"

    def disable(self, _: list[str]) -> None:
        self.mode = "exec"

    def configure(self, _: list[str]) -> None:
        self.t.write("Enter configuration commands, one per line.  End with CNTL/Z.\n")
        self.mode = "config"

    def end(self, _: list[str]) -> None:
        self.mode = "priv"

    def do(self, args: list[str]) -> None:
        self.execute(args[0], table="priv")

    def term_length(self, _: list[str]) -> None:
        if self.eos:
            self.t.write("Pagination disabled.\n")

    def term_width(self, args: list[str]) -> None:
        if self.eos:
            self.t.write(f"Width set to {args[0]} columns.\n")

    def write_memory(self, _: list[str]) -> None:
        if self.s.faults.get("confirm_save") and not self.eos:
            # IOS with `file prompt alert`: Enter (or y) confirms, anything else aborts.
            answer = self.ask("Overwrite the previous NVRAM configuration?[confirm]")
            if answer.strip().lower() not in ("", "y", "yes"):
                self.t.write("%Aborted: write memory\n")
                return
        self.write_startup()
        if self.eos:
            self.t.write("Copy completed successfully.\n")
        else:
            self.t.write("Building configuration...\n[OK]\n")

    def copy_run_start(self, _: list[str]) -> None:
        answer = self.ask("Destination filename [startup-config]? ")
        if answer.strip() not in ("", "startup-config"):
            self.t.write(f"%Error opening nvram:{answer.strip()} (Permission denied)\n")
            return
        self.write_startup()
        self.t.write("Building configuration...\n[OK]\n")

    def show_interface(self, args: list[str]) -> None:
        found = self.resolve(args[0])
        if found is None:
            self.t.write(self.error("invalid", len(self.prompt()) + len("show interfaces ")))
            return
        name, dev = found
        try:
            k = Link.read(dev)
        except OSError:
            self.t.write(self.error("invalid", len(self.prompt()) + len("show interfaces ")))
            return
        if not k.admin_up:
            head = "administratively down, line protocol is down (disabled)"
        elif k.oper_up:
            head = "up, line protocol is up (connected)"
        else:
            head = "down, line protocol is down (notconnect)"
        mac = mac_dotted(k.mac)
        if self.eos:
            self.t.write(
                f"{name} is {head}\n"
                f"  Hardware is Ethernet, address is {mac} (bia {mac})\n"
                f"  Ethernet MTU {k.mtu} bytes , BW 10000000 kbit\n"
                "  Full-duplex, 10Gb/s, auto negotiation: off, uni-link: n/a\n"
                "  Loopback Mode : None\n"
                '  Last clearing of "show interface" counters never\n'
                "  5 minutes input rate 0 bps (0.0% with framing overhead), 0 packets/sec\n"
                "  5 minutes output rate 0 bps (0.0% with framing overhead), 0 packets/sec\n"
                f"     {k.rx_packets} packets input, {k.rx_bytes} bytes\n"
                f"     Received 0 broadcasts, {k.rx_multicast} multicast\n"
                "     0 runts, 0 giants\n"
                "     0 input errors, 0 CRC, 0 alignment, 0 symbol, 0 input discards\n"
                f"     {k.tx_packets} packets output, {k.tx_bytes} bytes\n"
                "     0 output errors, 0 collisions\n"
            )
            return
        self.t.write(
            f"{name} is {head}\n"
            f"  Hardware is Gigabit Ethernet, address is {mac} (bia {mac})\n"
            f"  MTU {k.mtu} bytes, BW 1000000 Kbit/sec, DLY 10 usec, \n"
            "     reliability 255/255, txload 1/255, rxload 1/255\n"
            "  Encapsulation ARPA, loopback not set\n"
            "  Keepalive set (10 sec)\n"
            "  Full-duplex, 1000Mb/s, media type is 10/100/1000BaseTX\n"
            "  input flow-control is off, output flow-control is unsupported \n"
            '  Last clearing of "show interface" counters never\n'
            "  Input queue: 0/75/0/0 (size/max/drops/flushes); Total output drops: 0\n"
            "  Queueing strategy: fifo\n"
            "  5 minute input rate 0 bits/sec, 0 packets/sec\n"
            "  5 minute output rate 0 bits/sec, 0 packets/sec\n"
            f"     {k.rx_packets} packets input, {k.rx_bytes} bytes, 0 no buffer\n"
            f"     Received 0 broadcasts ({k.rx_multicast} multicasts)\n"
            "     0 runts, 0 giants, 0 throttles \n"
            "     0 input errors, 0 CRC, 0 frame, 0 overrun, 0 ignored\n"
            f"     {k.tx_packets} packets output, {k.tx_bytes} bytes, 0 underruns\n"
            "     0 output errors, 0 collisions, 1 interface resets\n"
        )


class HuaweiStyleCli(VrpRestrictions, Cli):
    """What VRP and Comware share: <user view>, [system view], display, undo, quit/return."""

    system_banner = ""

    def __init__(self, setup: Setup, term: Terminal) -> None:
        super().__init__(setup, term)
        self.mode = "user"
        display = [
            cmd("dis[play] int[erface] <if>", self.display_interface),
            cmd("dis[play] cu[rrent-configuration] int[erface] <if>", self.display_config),
            cmd("dis[play] acl name <w>", self.display_acl),
        ]
        qos_lr = [cmd("qos lr outbound cir <n>", self.qos_lr_outbound)]
        if not self.s.faults.get("no_qos_lr_inbound"):
            qos_lr.append(cmd("qos lr inbound cir <n>", self.qos_lr_inbound))
        self.tables = {
            "user": [
                cmd("sys[tem-view]", self.system_view),
                *display,
                cmd("q[uit]", self.logout),
                *self.user_extras(),
            ],
            "system": [
                cmd("int[erface] <if>", self.enter_interface),
                *display,
                cmd("q[uit]", lambda _: setattr(self, "mode", "user")),
                cmd("ret[urn]", lambda _: setattr(self, "mode", "user")),
                cmd(self.acl_create, self.acl_enter),
                cmd(self.acl_undo, self.acl_delete),
            ],
            "acl": [
                cmd("rule <n> deny tcp destination-port eq <w>", self.acl_rule),
                cmd("undo rule <n>", self.acl_undo_rule),
                *display,
                cmd("q[uit]", lambda _: setattr(self, "mode", "system")),
                cmd("ret[urn]", lambda _: setattr(self, "mode", "user")),
            ],
            "if": [
                cmd("shu[tdown]", lambda _: self.set_port(False)),
                cmd("undo shu[tdown]", lambda _: self.set_port(True)),
                cmd("desc[ription] <rest>", lambda _: None),
                cmd("int[erface] <if>", self.enter_interface),
                *qos_lr,
                cmd("undo qos lr inbound", self.undo_qos_lr_inbound),
                cmd(self.filter_attach, self.filter_on),
                cmd(f"undo {self.filter_attach}", self.filter_off),
                *display,
                cmd("q[uit]", lambda _: setattr(self, "mode", "system")),
                cmd("ret[urn]", lambda _: setattr(self, "mode", "user")),
            ],
        }

    # Keywords the two dialects spell differently (`<w>` is the ACL name).
    acl_create = "acl name <w> adv[ance]"
    acl_undo = "undo acl name <w>"  # VRP deletes a named ACL by its name alone
    filter_attach = "traffic-filter inbound acl name <w>"
    acl_view = "acl-adv"

    def filter_line(self, acl: str) -> str:
        return f"traffic-filter inbound acl name {acl}"

    def default_cbs(self, cir_kbps: int) -> int:
        raise NotImplementedError

    def acl_listing(self, name: str, acl: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def user_extras(self) -> list[Cmd]:
        return []

    def prompt(self) -> str:
        h = self.s.hostname
        if self.mode == "user":
            return f"<{h}>"
        if self.mode == "system":
            return f"[{h}]"
        if self.mode == "acl":
            return f"[{h}-{self.acl_view}-{self.obj}]"
        return f"[{h}-{self.iface}]"

    def ctrl_z(self) -> None:
        self.mode = "user"

    def system_view(self, _: list[str]) -> None:
        self.t.write(self.system_banner)
        self.mode = "system"

    def display_interface(self, args: list[str]) -> None:
        found = self.resolve(args[0])
        if found is None:
            self.t.write(self.error("wrong", len(self.prompt()) + len("display interface ")))
            return
        name, dev = found
        try:
            link = Link.read(dev)
        except OSError:
            self.t.write(self.error("wrong", len(self.prompt()) + len("display interface ")))
            return
        self.t.write(self.render_display(name, link))

    def render_display(self, name: str, k: Link) -> str:
        raise NotImplementedError


class VrpCli(HuaweiStyleCli):
    """Huawei VRP5 (S-series)."""

    system_banner = "Enter system view, return user view with Ctrl+Z.\n"

    def default_cbs(self, cir_kbps: int) -> int:
        return cir_kbps * 125  # VRP fills in CBS = 125 x CIR bytes (the S5720 read-back fixture)

    def acl_listing(self, name: str, acl: dict[str, Any]) -> list[str]:
        n = len(acl["rules"])
        return [f"Advanced ACL {name} {acl['number']}, {n} rule{'s' if n != 1 else ''}",
                "Acl's step is 5", *self.rules(acl)]

    def user_extras(self) -> list[Cmd]:
        return [
            cmd("screen-l[ength] <n> temp[orary]", self.screen_length),
            cmd("sa[ve]", self.save),
        ]

    def banner(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S+08:00")
        return (
            "\nInfo: The max number of VTY users is 10, and the number\n"
            "      of current VTY users on line is 1.\n"
            f"      The current login time is {stamp}.\n"
        )

    def error(self, kind: str, column: int) -> str:
        word = {"incomplete": "Incomplete command", "wrong": "Wrong parameter"}.get(
            kind, "Unrecognized command"
        )
        if kind == "failed":
            return "Error: Failed to change the port state."
        return " " * column + f"^\nError: {word} found at '^' position.\n"

    def screen_length(self, _: list[str]) -> None:
        self.t.write(
            "Info: The configuration takes effect on the current user terminal interface only.\n"
        )

    def save(self, _: list[str]) -> None:
        self.t.write("The current configuration will be written to the device.\n")
        answer = self.ask("Are you sure to continue?[Y/N]")
        if answer.strip().lower() not in ("y", "yes"):
            self.t.write("Info: The configuration is not saved.\n")
            return
        self.write_startup()
        self.t.write(
            "Now saving the current configuration to the slot 0.\n"
            "Save the configuration successfully.\n"
        )

    def render_display(self, name: str, k: Link) -> str:
        if not k.admin_up:
            state, proto = "Administratively DOWN", "DOWN"
        elif k.oper_up:
            state, proto = "UP", "UP"
        else:
            state, proto = "DOWN", "DOWN"
        now = time.strftime("%Y-%m-%d %H:%M:%S+08:00")
        return (
            f"{name} current state : {state}\n"
            f"Line protocol current state : {proto}\n"
            "Description:\n"
            "Switch Port, PVID :    1, TPID : 8100(Hex), The Maximum Frame Length is 9216\n"
            "IP Sending Frames' Format is PKTFMT_ETHNT_2, "
            f"Hardware address is {mac_dashed(k.mac)}\n"
            f"Current system time: {now}\n"
            "Port Mode: COMMON COPPER\n"
            "Speed : 1000,  Loopback: NONE\n"
            "Duplex: FULL,  Negotiation: ENABLE\n"
            "Mdi   : AUTO,  Flow-control: DISABLE\n"
            "Last 300 seconds input rate 0 bits/sec, 0 packets/sec\n"
            "Last 300 seconds output rate 0 bits/sec, 0 packets/sec\n"
            f"Input:  {k.rx_packets} packets, {k.rx_bytes} bytes\n"
            f"  Unicast:                  0,  Multicast:          {k.rx_multicast:>10}\n"
            f"Output:  {k.tx_packets} packets, {k.tx_bytes} bytes\n"
            "    Input bandwidth utilization  :    0%\n"
            "    Output bandwidth utilization :    0%\n"
        )


class ComwareCli(HuaweiStyleCli):
    """H3C Comware 7."""

    system_banner = "System View: return to User View with Ctrl+Z.\n"
    acl_create = "acl adv[anced] name <w>"
    acl_undo = "undo acl adv[anced] name <w>"
    filter_attach = "packet-filter name <w> inb[ound]"
    acl_view = "acl-ipv4-adv"
    no_such_acl = "The ACL does not exist."

    def filter_line(self, acl: str) -> str:
        return f"packet-filter name {acl} inbound"

    def default_cbs(self, cir_kbps: int) -> int:
        # 62.5 x CIR, rounded up to whole KiB, as the Comware 7 read-back fixture shows.
        return -(-cir_kbps * 125 // 2 // 1024) * 1024

    def port_lines(self) -> list[str]:
        return [" port link-mode bridge"]

    def acl_listing(self, name: str, acl: dict[str, Any]) -> list[str]:
        n = len(acl["rules"])
        return [f"Advanced IPv4 ACL named {name}, {n} rule{'s' if n != 1 else ''},",
                "ACL's step is 5, start ID is 0", *self.rules(acl)]

    def user_extras(self) -> list[Cmd]:
        return [
            cmd("screen-l[ength] dis[able]", lambda _: None),
            cmd("sa[ve] f[orce]", self.save_force),
            cmd("sa[ve]", self.save),
        ]

    def banner(self) -> str:
        return (
            "\n"
            "******************************************************************************\n"
            "* Copyright (c) 2004-2023 New H3C Technologies Co., Ltd. All rights reserved.*\n"
            "* Without the owner's prior written consent,                                 *\n"
            "* no decompiling or reverse-engineering shall be allowed.                    *\n"
            "******************************************************************************\n"
            "\n"
        )

    def error(self, kind: str, column: int) -> str:
        word = {"incomplete": "Incomplete command", "wrong": "Wrong parameter"}.get(
            kind, "Unrecognized command"
        )
        if kind == "failed":
            return " % Failed to change the port state."
        return " " * column + f"^\n % {word} found at '^' position.\n"

    def save_force(self, _: list[str]) -> None:
        self.write_startup()
        self.t.write(
            "Validating file. Please wait...\n"
            "Saved the current configuration to mainboard device successfully.\n"
        )

    def save(self, _: list[str]) -> None:
        answer = self.ask(
            "The current configuration will be written to the device. Are you sure? [Y/N]:"
        )
        if answer.strip().lower() != "y":
            self.t.write("Configuration is not saved!\n")
            return
        name = self.ask(
            "Please input the file name(*.cfg)[flash:/startup.cfg]\n"
            "(To leave the existing filename unchanged, press the enter key):"
        )
        if name.strip() not in ("", "flash:/startup.cfg", "startup.cfg"):
            self.t.write("Configuration is not saved!\n")
            return
        if self.ask("flash:/startup.cfg exists, overwrite? [Y/N]:").strip().lower() != "y":
            self.t.write("Configuration is not saved!\n")
            return
        self.save_force([])

    def render_display(self, name: str, k: Link) -> str:
        if not k.admin_up:
            state, proto = "Administratively DOWN", "DOWN"
        elif k.oper_up:
            state, proto = "UP", "UP"
        else:
            state, proto = "DOWN", "DOWN"
        return (
            f"{name}\n"
            f"Current state: {state}\n"
            f"Line protocol state: {proto}\n"
            f"IP packet frame type: Ethernet II, hardware address: {mac_dashed(k.mac)}\n"
            f"Description: {name} Interface\n"
            "Bandwidth: 1000000 kbps\n"
            "Loopback is not set\n"
            "Media type is twisted pair, port hardware type is 1000_BASE_T\n"
            "1000Mbps-speed mode, full-duplex mode\n"
            "Link speed type is autonegotiation, link duplex type is autonegotiation\n"
            "Flow-control is not enabled\n"
            f"Maximum frame length: {k.mtu + 18}\n"
            "Last clearing of counters: Never\n"
            " Last 300 seconds input:  0 packets/sec 0 bytes/sec 0%\n"
            " Last 300 seconds output:  0 packets/sec 0 bytes/sec 0%\n"
            f" Input (total):  {k.rx_packets} packets, {k.rx_bytes} bytes\n"
            f" Output (total): {k.tx_packets} packets, {k.tx_bytes} bytes\n"
        )


def build(setup: Setup, term: Terminal) -> Cli:
    if setup.flavour in ("ios", "eos"):
        return IosCli(setup, term, eos=setup.flavour == "eos")
    if setup.flavour == "vrp":
        return VrpCli(setup, term)
    return ComwareCli(setup, term)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flavour", default=os.environ.get("RW_CLI_FLAVOUR", "ios"), choices=FLAVOURS)
    p.add_argument("--map", default=os.environ.get("RW_CLI_MAP"), required=False)
    args = p.parse_args(argv)
    if not args.map:
        p.error("--map or RW_CLI_MAP is required")
    term = Terminal()
    setup = Setup.load(args.flavour, Path(args.map))
    cli = build(setup, term)
    session = _claim_session(Path(args.map).parent / "sessions", int(setup.faults.get("max_sessions", 0)))
    if session is None:
        # All vty lines busy: the SSH login succeeded, the CLI says why and hangs up.
        cli.log("refused: session limit")
        term.write("\n% All vty lines are in use (session limit reached), try again later\n")
        if _SAVED_TTY is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, _SAVED_TTY)
        return 1
    cli.log("login")
    try:
        cli.run()
    except (Hangup, Quit):
        pass
    finally:
        cli.log("logout")
        session.unlink(missing_ok=True)
        if _SAVED_TTY is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, _SAVED_TTY)
    return 0


def _claim_session(folder: Path, limit: int) -> Path | None:
    """A PID file for this session, or None when `limit` live sessions already hold one."""
    folder.mkdir(exist_ok=True)
    live = 0
    for f in folder.glob("*.pid"):
        try:
            os.kill(int(f.stem), 0)
            live += 1
        except (ProcessLookupError, ValueError):
            f.unlink(missing_ok=True)  # a session that died without logging out
        except PermissionError:
            live += 1
    if limit and live >= limit:
        return None
    mine = folder / f"{os.getpid()}.pid"
    mine.write_text("")
    return mine


if __name__ == "__main__":
    sys.exit(main())
