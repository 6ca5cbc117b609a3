"""`rackwarden sla explain` on scenario files: hand-computed outputs and bad-input errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.sla_explain import SlaInputError, explain, main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sla"
SCENARIOS = sorted(p.name.removesuffix(".json") for p in FIXTURES.glob("*.json")
                   if not p.name.endswith(".expected.json") and not p.name.startswith("bad_"))


def assert_matches(actual: Any, expected: Any, path: str = "$") -> None:
    """Every key of `expected` is in `actual` with the same value; lists match item by item.

    Keys starting with "_" in expected files hold the hand computation and are not compared.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            if key.startswith("_"):
                continue
            assert key in actual, f"{path}.{key} missing"
            assert_matches(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(a, e, f"{path}[{i}]")
    else:
        # type check too: 400 (fen) and "400" (exact text) are different answers
        assert type(actual) is type(expected) and actual == expected, (
            f"{path}: {actual!r} != {expected!r}"
        )


def run(capsys: pytest.CaptureFixture[str], path: Path | str) -> tuple[int, str, str]:
    code = main(["--input", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scenarios_found() -> None:
    assert SCENARIOS == ["colo_cutover", "custom_template_february", "offset_minus_0300",
                         "rental_november", "rental_window_recorded_late"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, stdout, stderr = run(capsys, FIXTURES / f"{name}.json")
    assert (code, stderr) == (0, "")
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))
    assert_matches(json.loads(stdout), expected)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_server_has_all_classes_and_parts_add_up(capsys: pytest.CaptureFixture[str],
                                                       name: str) -> None:
    _, stdout, _ = run(capsys, FIXTURES / f"{name}.json")
    for server in json.loads(stdout)["servers"]:
        by_class = server["seconds_by_class"]
        assert list(by_class) == ["provider", "customer", "maintenance", "excluded", "unknown"]
        assert all(type(v) is int for v in by_class.values())
        assert sum(by_class.values()) == sum(p["seconds"] for p in server["outages"])
        for part in server["outages"]:
            assert part["seconds"] == sum(s["seconds"] for s in part["segments"])
        assert ("credit_fen" in server) != ("extension_hours" in server)


def test_explain_is_main_without_io(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "rental_november.json"
    _, stdout, _ = run(capsys, path)
    assert explain(json.loads(path.read_text(encoding="utf-8"))) == json.loads(stdout)


def test_stdin_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    text = (FIXTURES / "offset_minus_0300.json").read_text(encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, stdout, _ = run(capsys, "-")
    assert code == 0
    assert json.loads(stdout)["servers"][0]["credit_fen"] == 581


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("bad_missing_key", "servers[0].monthly_fee_fen: missing required key"),
        ("bad_naive_time", "outages[1].start: time '2026-11-04T10:00:00' has no UTC offset; "
                           "write it like 2026-11-03T10:00:00+08:00"),
        ("bad_unknown_template", "servers[0].template: unknown template 'hosting'; known: "
                                 "rental, colo"),
        ("bad_end_before_start", "outages[0].end: must be after start"),
    ],
)
def test_bad_fixture(capsys: pytest.CaptureFixture[str], fixture: str, message: str) -> None:
    path = FIXTURES / f"{fixture}.json"
    code, stdout, stderr = run(capsys, path)
    assert (code, stdout) == (2, "")
    assert stderr == f"rackwarden sla explain: error: {path}: {message}\n"


def _good() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (FIXTURES / "rental_november.json").read_text(encoding="utf-8"))
    return doc


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    # "outages.0.start" → doc["outages"][0]["start"]; value None deletes the key
    keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    target: Any = doc
    for k in keys[:-1]:
        target = target[k]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


@pytest.mark.parametrize(
    ("where", "value", "path", "reason"),
    [
        ("period", None, "period", "missing required key"),
        ("servers", None, "servers", "missing required key"),
        ("colour", "red", "colour", "unknown key"),
        ("period", "2026-13", "period", "period must be YYYY-MM, got '2026-13'"),
        ("period", 202611, "period", "must be a string YYYY-MM"),
        ("timezone", "Mars/Olympus", "timezone", "unknown timezone 'Mars/Olympus'"),
        ("servers", [], "servers", "must name at least one server"),
        ("servers.0.monthly_fee_fen", 720.5, "servers[0].monthly_fee_fen",
         "must be a whole number of fen (integer), got 720.5"),
        ("servers.0.monthly_fee_fen", True, "servers[0].monthly_fee_fen",
         "must be a whole number of fen"),
        ("servers.0.paid_total_fen", -1, "servers[0].paid_total_fen", "must not be negative"),
        ("servers.1.id", "r1", "servers[1].id", "duplicate server id 'r1'"),
        ("servers.0.extra", 1, "servers[0].extra", "unknown key"),
        ("outages.2.cause", "gremlins", "outages[2].cause", "unknown cause 'gremlins'"),
        ("outages.2.server", "zz", "outages[2].server", "unknown server 'zz'"),
        ("outages.0.false_positive", True, "outages[0].false_positive",
         "false_positive applies only to customer-class causes"),
        ("outages.4.false_positive", "yes", "outages[4].false_positive",
         "must be true or false, got 'yes'"),
        ("outages.0.start", "yesterday", "outages[0].start", "not an ISO-8601 time"),
        ("outages.0.start", "2026-11-03T10:00:00.250+08:00", "outages[0].start",
         "has fractions of a second"),
        ("outages.0.end", "2026-11-03T10:00:00+08:00", "outages[0].end", "must be after start"),
        ("outages.0", "r1", "outages[0]", "must be an object, got str"),
        ("outages", {}, "outages", "must be a list, got dict"),
        ("maintenance.0.notified_at", "2026-11-04T09:00:00", "maintenance[0].notified_at",
         "has no UTC offset"),
        ("maintenance.0.kind", "emergency", "maintenance[0].kind",
         "must be one of planned, cutover"),
        ("maintenance.0.servers", ["r9"], "maintenance[0].servers[0]", "unknown server 'r9'"),
        ("maintenance.0.servers", [], "maintenance[0].servers", "must name at least one"),
        ("maintenance.1.id", "mw1", "maintenance[1].id", "duplicate window id 'mw1'"),
        ("maintenance.0.servers", None, "maintenance[0].servers", "missing required key"),
        ("templates", {"rental": {}}, "templates.rental", "shadows a built-in template"),
        ("templates", {"x": {"kind": "fee_multiple", "creditable_classes": ["provider"],
                             "multiplier": 0.05}},
         "templates.x.multiplier", "must be an integer or a string"),
        ("templates", {"x": {"kind": "fee_multiple", "creditable_classes": ["provider"]}},
         "templates.x.multiplier", "is required"),
    ],
)
def test_bad_input_names_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str,
                              value: Any, path: str, reason: str) -> None:
    doc = _good()
    _set(doc, where, value)
    with pytest.raises(SlaInputError) as info:
        explain(copy.deepcopy(doc))
    assert info.value.path == path
    assert reason in info.value.reason
    # and through main(): exit 2, one line naming the path on stderr, nothing on stdout
    file = tmp_path / "scenario.json"
    file.write_text(json.dumps(doc), encoding="utf-8")
    code, stdout, stderr = run(capsys, file)
    assert (code, stdout) == (2, "")
    assert stderr.startswith(f"rackwarden sla explain: error: {file}: {path}: ")
    assert stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"period": "2026-11", "period": "2026-12"}', "duplicate key 'period'"),
        ("[]", "$: must be an object, got list"),
    ],
)
def test_bad_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                   reason: str) -> None:
    file = tmp_path / "scenario.json"
    file.write_text(text, encoding="utf-8")
    code, stdout, stderr = run(capsys, file)
    assert (code, stdout) == (2, "")
    assert reason in stderr


def test_missing_file_and_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stdout, stderr = run(capsys, tmp_path / "nope.json")
    assert (code, stdout) == (2, "")
    assert "cannot read" in stderr and "nope.json" in stderr
    assert main([]) == 2
    assert "--input" in capsys.readouterr().err
