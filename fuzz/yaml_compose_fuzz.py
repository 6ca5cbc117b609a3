"""Coverage-guided fuzzer (atheris) for the config loader's YAML composer (agent/_yamlcompose.c).

    python fuzz/yaml_compose_fuzz.py -max_total_time=600 [libFuzzer flags] [corpus dirs]

Every input, read as UTF-8 text (bad bytes replaced: the loader reads configs through
agent/textfile.py, which refuses them), goes to the C composer and to PyYAML's pure-Python
composer, the reference. The C composer must give the reference's tree, or refuse where its
contract allows (tests/unit/test_yaml_compose_c.py `refusal_allowed`: the reference refuses
too, an empty plain scalar, a tag, a document marker, a lone surrogate, deep nesting). And
agent/config.py's `_compose`, with every fallback behind it, must give the reference's
answer: the same tree or the same error. The C code is not instrumented (it is not built for
libFuzzer); PyYAML's pure-Python scanner and parser are, so inputs are steered through
YAML's grammar. Seeds: every YAML file in config/ and tests/. Crashes, RSS and the report as
in the other fuzzers (fuzz/_harness.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ holds the equivalence harness this shares

with atheris.instrument_imports(include=["yaml"]):
    import yaml  # noqa: F401  (imported here to be instrumented; the composers use it)

from _harness import Harness  # noqa: E402  (fuzz/ is this script's folder on sys.path)
from rackwarden.agent import config as configmod  # noqa: E402

from tests.unit.test_config_loader_equivalence import YAML_FILES, outcome, shape  # noqa: E402
from tests.unit.test_yaml_compose_c import c_compose, refusal_allowed  # noqa: E402


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        want_node = yaml.compose(text, Loader=yaml.SafeLoader)
        want = ("tree", shape(want_node))
    except yaml.YAMLError as e:
        want_node, want = None, ("error", type(e).__name__, str(e))
    except RecursionError:  # the reference's own limit (a few hundred levels): nothing to compare
        HARNESS.counts["too deep for the reference"] += 1
        return
    ours = outcome(configmod._compose, text)
    if ours != want:
        raise AssertionError(f"_compose gave {ours!r:.300}, the reference {want!r:.300}")
    if configmod._libyaml_lenient(text):  # _compose gives it to the reference at once
        HARNESS.counts["not asked"] += 1
        return
    got = c_compose(text)
    if got is not None:
        if want[0] != "tree" or shape(got[0]) != want[1]:
            raise AssertionError(f"C gave {shape(got[0])!r:.300}, the reference {want!r:.300}")
        HARNESS.counts["answered"] += 1
    elif want[0] == "tree" and not refusal_allowed(text, want_node):
        raise AssertionError("C refused text it must compose")
    else:
        HARNESS.counts["refused"] += 1


def seed_corpus(into: Path) -> int:
    into.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(YAML_FILES):
        (into / f"{n:03d}-{path.name}").write_bytes(path.read_bytes())
    return len(YAML_FILES)


HARNESS = Harness("yaml compose", check, seed_corpus, max_len=2048)

if __name__ == "__main__":
    if configmod._yaml_c_compose is None:
        sys.exit(f"fuzz/yaml_compose_fuzz.py: {configmod.YAML_C_ERROR}")
    HARNESS.run(sys.argv)
