"""Issue 11: every file the CLI reads, given bytes that are not text, is named as file:line.

Each reader gets binary junk, invalid UTF-8, a NUL byte and an empty file. What must hold:
no traceback (the command returns, stderr has no "Traceback"), the documented exit code
(2: an input the command cannot use; 1: `replay snmp` skipped lines), and an error that names
the file and the line (`file:LINE: reason`, or `file:LINE (file): reason` for the config).
The commands run in-process through `rackwarden.agent.cli.main`, as the console script does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rackwarden.agent import cli

# A PNG header: not UTF-8 at byte 1, and a NUL further on.
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
INVALID_UTF8 = b"# a comment\nversion: 1\n# \xc3\x28 latin-1 text: caf\xe9\n"
NUL = b"# a comment\nversion: 1\x00\n"
JUNK = {"binary": BINARY, "invalid_utf8": INVALID_UTF8, "nul": NUL, "empty": b""}
# The line of the first byte that is not text, in each junk file.
JUNK_LINE = {"binary": 1, "invalid_utf8": 3, "nul": 2}


def config_text(state_dir: Path, agent_extra: str = "", community: str = '"replay-only"') -> str:
    return f"""version: 1
agent:
  state_dir: {state_dir}
{agent_extra}templates:
  rental: {{cap_mbps: 10, window_s: 300, direction: out, credit: rental}}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: {community}}}
    ports: ["Gi0/[1-2]"]
servers:
  - {{id: srv-a, customer: c1, switch: sw1, port: Gi0/1, ips: [198.19.1.11], template: rental,
      monthly_fee_fen: 80000}}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of one command; an exception escaping is a traceback."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "rackwarden.yaml"
    path.write_text(config_text(tmp_path / "state"))
    return path


def junk_file(tmp_path: Path, kind: str, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(JUNK[kind])
    return path


def names_line(err: str, path: Path, kind: str, sep: str = ":") -> bool:
    """Whether stderr names `path` at the line of its first bad byte (any line for an empty file)."""
    line = str(JUNK_LINE[kind]) if kind in JUNK_LINE else r"\d+"
    return re.search(rf"{re.escape(str(path))}:{line}{sep}", err) is not None


# --- the config file, through every command that reads one ------------------------------------

CONFIG_COMMANDS = {
    "check-config": lambda p: ["check-config", str(p)],
    "check-config --require-credentials": lambda p: ["check-config", "--require-credentials", str(p)],
    "run": lambda p: ["run", "-c", str(p)],
    "replay snmp": lambda p: ["replay", "snmp", "--input", "-", "-c", str(p)],
    "report usage": lambda p: ["report", "usage", "--month", "2026-11", "-c", str(p)],
    "status": lambda p: ["status", "-c", str(p)],
    "ledger list": lambda p: ["ledger", "list", "-c", str(p)],
    "report sla": lambda p: ["report", "sla", "--month", "2026-11", "--config", str(p)],
    "report deadlines": lambda p: ["report", "deadlines", "--config", str(p)],
}


@pytest.mark.parametrize("kind", JUNK)
@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_a_config_that_is_not_text_is_named_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, kind: str
) -> None:
    path = junk_file(tmp_path, kind, "rackwarden.yaml")
    rc, out, err = run(CONFIG_COMMANDS[command](path), capsys)
    assert rc == 2, err
    assert names_line(err, path, kind, sep=r" \(file\): "), err
    assert out == ""


@pytest.mark.parametrize("kind", ["binary", "invalid_utf8", "nul"])
def test_the_reason_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = junk_file(tmp_path, kind, "rackwarden.yaml")
    _, _, err = run(["check-config", str(path)], capsys)
    assert ("NUL byte" if kind == "nul" else "not UTF-8 text") in err


@pytest.mark.parametrize("kind", JUNK)
def test_a_secret_file_that_is_not_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    secret = junk_file(tmp_path, kind, "community")
    path = tmp_path / "rackwarden.yaml"
    path.write_text(config_text(tmp_path / "state", community=f"{{file: {secret}}}"))
    rc, out, err = run(["check-config", str(path)], capsys)
    assert rc == 2 and out == ""
    # The config's line that names the secret, then what is wrong with the secret's file.
    assert re.search(rf"rackwarden\.yaml:10 switches\.sw1\.snmp\.community: .*{re.escape(str(secret))}", err), err
    if kind == "empty":
        assert "is empty" in err
    else:
        assert names_line(err, secret, kind), err


@pytest.mark.parametrize("kind", JUNK)
@pytest.mark.parametrize("key", ["metrics_web_config", "api_web_config"])
def test_a_web_config_that_is_not_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, key: str
) -> None:
    web = junk_file(tmp_path, kind, "web.yml")
    path = tmp_path / "rackwarden.yaml"
    path.write_text(config_text(tmp_path / "state", agent_extra=f"  {key}: {web}\n"))
    rc, _, err = run(["check-config", str(path)], capsys)
    if kind == "empty":
        # An empty web config sets nothing (as in exporter-toolkit): fine on loopback.
        assert rc == 0, err
        return
    assert rc == 2
    assert re.search(rf"rackwarden\.yaml:4 agent\.{key}: ", err), err
    assert names_line(err, web, kind), err


# --- replay snmp: a bad line is skipped and counted, the rest is replayed ----------------------

def _poll(minute: int, octets: int) -> bytes:
    return json.dumps({
        "switch": "sw1", "at": f"2026-11-22T10:{minute:02d}:00+08:00", "sys_uptime": 6000 * (minute + 1),
        "ports": {"Gi0/1": {"if_index": 1, "in_octets": octets, "out_octets": octets}},
    }).encode() + b"\n"


@pytest.mark.parametrize("kind", ["binary", "invalid_utf8", "nul"])
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_replay_skips_a_line_that_is_not_text_and_goes_on(
    tmp_path: Path, good_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    kind: str, stdin: bool,
) -> None:
    junk = JUNK[kind].replace(b"\n", b" ")  # one line of it
    data = _poll(0, 1000) + junk + b"\n" + _poll(1, 2000) + _poll(2, 3000)
    polls = tmp_path / "sw1.jsonl"
    polls.write_bytes(data)
    if stdin:
        import io

        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    rc, out, err = run(["replay", "snmp", "--input", "-" if stdin else str(polls), "-c", str(good_config)], capsys)
    assert rc == 1
    name = "<stdin>" if stdin else str(polls)
    assert re.search(rf"^{re.escape(name)}:2: skipped: ", err, re.M), err
    assert "1 line(s) could not be replayed" in err
    # All three polls after and before the bad line were replayed (one line per poll for srv-a).
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["at"][11:16] for r in rows] == ["10:00", "10:01", "10:02"]
    assert rows[-1]["status"] == "ok"


def test_replay_of_an_empty_file_replays_nothing(
    tmp_path: Path, good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    polls = junk_file(tmp_path, "empty", "sw1.jsonl")
    assert run(["replay", "snmp", "--input", str(polls), "-c", str(good_config)], capsys) == (0, "", "")


def test_replay_of_a_file_that_is_not_there(tmp_path: Path, good_config: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["replay", "snmp", "--input", str(tmp_path / "nope.jsonl"), "-c", str(good_config)], capsys)
    assert rc == 2 and out == "" and "nope.jsonl: cannot read" in err


# --- sla explain: a scenario file --------------------------------------------------------------

@pytest.mark.parametrize("kind", JUNK)
def test_a_scenario_file_that_is_not_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = junk_file(tmp_path, kind, "scenario.json")
    rc, out, err = run(["sla", "explain", "--input", str(path)], capsys)
    assert rc == 2 and out == ""
    assert names_line(err, path, kind), err


# --- files in the state directory: the API token, the usage database ---------------------------

@pytest.mark.parametrize("kind", JUNK)
def test_an_api_token_file_that_is_not_a_token(
    tmp_path: Path, good_config: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    (tmp_path / "state").mkdir()
    token = junk_file(tmp_path / "state", kind, "api.token")
    rc, out, err = run(["status", "-c", str(good_config)], capsys)
    assert rc == 2 and out == ""
    assert names_line(err, token, kind), err


@pytest.mark.parametrize("kind", ["binary", "invalid_utf8", "nul"])
def test_a_usage_database_that_is_not_one(
    tmp_path: Path, good_config: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    (tmp_path / "state").mkdir()
    db = junk_file(tmp_path / "state", kind, "usage.sqlite")
    rc, out, err = run(["report", "usage", "--month", "2026-11", "-c", str(good_config)], capsys)
    assert rc == 2 and out == ""
    assert f"{db}: cannot read the usage database" in err
    assert db.read_bytes() == JUNK[kind]  # left as it was, for whoever looks into it


@pytest.mark.parametrize("argv, expected", [
    (["report", "usage", "--month", "November", "-c", "x.yaml"], "is not a month like 2026-11"),
    (["hold", "srv-a", "--for", "two hours", "-c", "x.yaml"], "is not a duration like 30m"),
])
def test_a_bad_argument_is_a_usage_error(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(argv, capsys)
    assert rc == 2 and expected in err


@pytest.mark.parametrize("kind", ["binary", "invalid_utf8", "nul"])
def test_a_ledger_database_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    db = junk_file(tmp_path, kind, "ledger.sqlite")
    rc, out, err = run(["ledger", "verify", "--db", f"sqlite:///{db}"], capsys)
    assert rc == 2 and out == ""
    # One line saying what is wrong (the database driver's words), and the file left alone.
    assert err.count("\n") == 1 and err.rstrip().endswith(": file is not a database"), err
    assert db.read_bytes() == JUNK[kind]


def test_a_ledger_that_cannot_be_reached_is_named_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: refused at once, so the driver's error comes back without waiting.
    rc, out, err = run(["ledger", "verify", "--db", "postgresql+psycopg://rw:s3cr3t-pw@127.0.0.1:1/ledger"], capsys)
    assert rc == 2 and out == ""
    assert "cannot open ledger postgresql+psycopg://rw:***@127.0.0.1:1/ledger" in err, err
    assert "s3cr3t-pw" not in err


# --- the compiled helpers' switches -------------------------------------------------------------

@pytest.mark.parametrize("var", ["RACKWARDEN_RINGWALK", "RACKWARDEN_SFLOW_WALK", "RACKWARDEN_SCANWIN",
                                 "RACKWARDEN_SNMP_BER"])
def test_a_bad_compiled_helper_switch_stops_run_naming_it(
    good_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    """Each switch is "c" or "python"; anything else stops `rackwarden run` before it starts
    anything, with the variable named and no traceback (a typo must not mean a slower path)."""
    monkeypatch.setenv(var, "fast")
    rc, _out, err = run(["run", "-c", str(good_config)], capsys)
    assert rc == cli.EXIT_BAD_INPUT
    assert var in err and "fast" in err
