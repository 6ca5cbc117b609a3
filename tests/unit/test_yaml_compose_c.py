"""agent/_yamlcompose.c, called directly: it answers, and answers as PyYAML's pure-Python
composer does, or it refuses only where its contract says the reference must answer instead.

test_config_loader_equivalence.py holds agent/config.py's `_compose` (this module first, the
fallbacks after it) to the reference; a refusal there falls back silently, so every equality
would hold for a composer that refused everything. Here a refusal is allowed only for what
the module's header lists: text the reference refuses too (an error), an empty plain scalar,
an explicit tag, more than one document, a lone surrogate. Also: its Mark reads as yaml's,
and a long run keeps no memory.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from rackwarden.agent import config as configmod
from rackwarden.agent.yamldepth import MAX_DEPTH

from tests.unit.test_config_loader_equivalence import (
    _YAMLISH,
    GOOD,
    SCALARS,
    STRUCTURES,
    YAML_FILES,
    shape,
)

C = configmod._yaml_c_compose


def c_compose(text: str) -> Any:
    assert C is not None, "agent/_yamlcompose.c is not built (libyaml-dev missing at pip install -e .?)"
    return C(text, configmod._RESOLVER.resolve, yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode,
                     MAX_DEPTH)


def children(node: Any) -> list[Any]:
    """A collection's nodes: a mapping's keys and values, a sequence's items."""
    return [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else list(node.value)


def has_empty_plain_scalar(node: Any, seen: set[int] | None = None) -> bool:
    seen = set() if seen is None else seen
    if id(node) in seen:
        return False
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        return node.style is None and node.value == ""
    return any(has_empty_plain_scalar(n, seen) for n in children(node))


def check(text: str) -> str:
    """C's answer against the reference; 'answered' or 'refused' (where a refusal is allowed);
    'not asked' for text config.py gives the reference at once (libyaml is lenient there)."""
    if configmod._libyaml_lenient(text):
        return "not asked"
    got = c_compose(text)
    try:
        want = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        assert got is None, f"C composed what the reference refuses: {text!r}"
        return "refused"
    except RecursionError:
        return "refused" if got is None else "answered"
    if got is not None:
        assert shape(got[0]) == shape(want), text
        return "answered"
    assert refusal_allowed(text, want), f"C refused text it must compose: {text!r}"
    return "refused"


def refusal_allowed(text: str, want: Any) -> bool:
    """Whether the C composer may refuse `text`, which the reference composes into `want`."""
    return ((want is not None and has_empty_plain_scalar(want))
            or "!" in text  # a tag, maybe (a config never needs one)
            or text.count("---") + text.count("...") > 0  # a document marker: maybe two
            or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
            or depth(want) > MAX_DEPTH)


def depth(node: Any, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if node is None or isinstance(node, yaml.ScalarNode) or id(node) in seen:
        return 0
    seen.add(id(node))
    return 1 + max((depth(n, seen) for n in children(node)), default=0)


def test_every_yaml_file_in_the_repo_is_answered_by_c() -> None:
    answers = {p.name: check(p.read_text(encoding="utf-8")) for p in YAML_FILES
               if not configmod._libyaml_lenient(p.read_text(encoding="utf-8"))}
    assert answers and set(answers.values()) == {"answered"}, answers


def test_a_fleet_config_is_answered_by_c() -> None:
    assert check(GOOD) == "answered"


def test_tricky_scalars_and_structures() -> None:
    outcomes = []
    for scalar in SCALARS:
        for text in (f"k: {scalar}\n", f"- {scalar}\n", f"{{k: {scalar}}}\n", f"[{scalar}]\n",
                     f"k:\n  - {scalar}\n  - x\n", f"{scalar}\n"):
            outcomes.append(check(text))
    outcomes += [check(text) for text in STRUCTURES]
    assert outcomes.count("answered") > 0.7 * len(outcomes)  # most of them are plain YAML


@given(_YAMLISH)
@settings(max_examples=int(os.environ.get("RW_YAML_EXAMPLES", "1500")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_generated_yamlish_text(text: str) -> None:
    check(text)


def test_anchors_give_the_same_node_and_nesting_stops_at_max_depth() -> None:
    root = c_compose("a: &x [1, 2]\nb: *x\nc: &r [*r]\n")[0]
    (_, a), (_, b), (_, c) = root.value
    assert a is b and c.value[0] is c
    node = c_compose("[" * MAX_DEPTH + "]" * MAX_DEPTH)[0]
    for _ in range(MAX_DEPTH - 1):
        node = node.value[0]
    assert node.value == []
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "a:\n" + "".join(
            "  " * i + "k:\n" for i in range(1, MAX_DEPTH + 1)) + "  " * (MAX_DEPTH + 1) + "v: 1\n"):
        assert c_compose(text) is None  # config.py then names the line (test_yaml_depth.py)


def test_refusals() -> None:
    for text in ("a:\n", "a: !!str 1\n", "a: 1\n---\nb: 2\n", "a: *nowhere\n", "a: &x 1\nb: &x 2\n",
                 "a: \ud800\n", "a: [1\n"):
        assert c_compose(text) is None, text
    assert c_compose("") == (None,) and c_compose("# nothing\n") == (None,)


def test_marks_read_as_yamls() -> None:
    root = c_compose("a:\n  b: [x, 'y']\n")[0]
    mark = root.value[0][1].value[0][1].value[1].start_mark  # 'y'
    ref = yaml.error.Mark("<unicode string>", mark.index, 1, 9, None, None)
    assert (mark.name, mark.line, mark.column, mark.buffer, mark.pointer) == ("<unicode string>", 1, 9, None, None)
    assert str(mark) == str(ref) and mark.get_snippet() is None
    assert root.end_mark is not None and root.value[0][1].end_mark.line >= 1


def test_a_long_run_keeps_nothing() -> None:
    texts = (GOOD, GOOD + "\nextra:\n", "a: &x [1, *x]\nb: [1\n")  # answered, refused, broken
    for text in texts:
        for _ in range(50):
            c_compose(text)
        gc.collect()
        tracemalloc.start()
        snap = tracemalloc.take_snapshot()
        for _ in range(300):
            c_compose(text)
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap, "filename"))
        tracemalloc.stop()
        assert grown < 64 * 1024, f"{grown} bytes kept after 300 runs of {text[:20]!r}"


@pytest.mark.parametrize("bad", [b"a: \xff\n", b"\xfe\xff\x00a"])
def test_text_from_bytes_python_could_not_decode_never_gets_here(bad: bytes) -> None:
    """compose takes str only (the config is read as UTF-8 text first: agent/textfile.py)."""
    with pytest.raises(TypeError, match="must be str"):
        C(bad, configmod._RESOLVER.resolve, yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode, 10)


def test_a_load_without_the_build_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(configmod, "_yaml_c_compose", None)
    monkeypatch.setattr(configmod, "YAML_C_ERROR", "the C YAML composer is not built (test)")
    monkeypatch.setattr(configmod, "_told_no_c", False)
    with caplog.at_level("WARNING", logger="rackwarden.agent.config"):
        for _ in range(3):
            assert configmod._compose("a: 1\n") is not None
    said = [r.getMessage() for r in caplog.records if "C YAML composer" in r.getMessage()]
    assert said == ["the C YAML composer is not built (test): config loads compose with PyYAML's"
                    " libyaml binding, about 1.2x slower"]
