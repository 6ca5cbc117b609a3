"""YAML nested deeper than PyYAML can follow is an error with a line, not a RecursionError.

PyYAML's composer recurses per level, so a file of a few hundred nested lists or mappings
raised RecursionError through every handler (check-config printed a traceback; the daemon
would die on SIGHUP). Every YAML reader of the agent must name the file and the line instead:
the config (every command that reads one), the web config and the customers' web config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.web.auth import CustomersConfigError, parse_customers_config
from rackwarden.agent.webauth import WebConfigError, parse_web_config
from rackwarden.agent.yamldepth import MAX_DEPTH, too_deep

from tests.unit.test_bad_input import CONFIG_COMMANDS, run


def flow(levels: int) -> str:
    return "version: 1\nservers: " + "[" * levels + "]" * levels + "\n"


def block(levels: int) -> str:
    keys = "".join("  " * i + "k:\n" for i in range(1, levels + 1))
    return "version: 1\nagent:\n" + keys + "  " * (levels + 1) + "v: 1\n"


# name: (text, the line the error must name). The flow lists stop libyaml's scanner at 1,000
# levels, on line 2; the mappings nest one a line (block(n) is n + 2 deep), so level
# MAX_DEPTH + 1 starts on line MAX_DEPTH + 2.
DEEP = {
    "flow lists past libyaml's limit": (flow(3000), 2),
    "block mappings": (block(3000), MAX_DEPTH + 2),
}
# The web configs compose with PyYAML's pure-Python composer, which gives up far before
# libyaml's limit (the config loader's libyaml composer follows these 900 levels).
DEEP_FOR_PYTHON = {**DEEP, "flow lists under libyaml's limit": (flow(900), 2)}


@pytest.mark.parametrize("name", DEEP)
def test_a_deep_config_is_a_config_error_with_its_line(name: str) -> None:
    text, line = DEEP[name]
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(text, "deep.yaml")
    assert e.value.issues == [f"deep.yaml:{line} (syntax): " + too_deep(text)[1]]
    assert "nest" in e.value.issues[0]


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_every_command_names_the_line_of_a_deep_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "rackwarden.yaml"
    path.write_text(block(3000))
    rc, out, err = run(CONFIG_COMMANDS[command](path), capsys)  # asserts no traceback
    assert rc == 2, err
    assert f"{path}:{MAX_DEPTH + 2} (syntax): nested more than {MAX_DEPTH} levels deep" in err
    assert out == ""


@pytest.mark.parametrize("name", DEEP_FOR_PYTHON)
def test_the_web_configs_name_the_line_of_deep_yaml(name: str) -> None:
    text, line = DEEP_FOR_PYTHON[name]
    with pytest.raises(WebConfigError, match=rf"^web\.yml:{line}: not valid YAML: .*nest"):
        parse_web_config(text, "web.yml")
    with pytest.raises(CustomersConfigError, match=rf"^customers\.yml:{line}: not valid YAML: .*nest"):
        parse_customers_config(text, "customers.yml")


def test_nesting_that_pyyaml_follows_is_read_as_before() -> None:
    """The limit is only looked for after PyYAML gave up: 50 levels compose, and the readers
    then say what is wrong with the value, as for any other misplaced mapping."""
    with pytest.raises(configmod.ConfigError) as e:
        configmod.loads(block(50), "ok.yaml")
    assert not any("nest" in p for p in e.value.issues), e.value.issues
    assert any(p.startswith("ok.yaml:3 agent.k: unknown key") for p in e.value.issues), e.value.issues


def test_too_deep_names_the_first_level_past_the_limit() -> None:
    assert too_deep(block(MAX_DEPTH - 1))[0] == MAX_DEPTH + 2  # its level MAX_DEPTH + 1, on that line
    assert too_deep(block(MAX_DEPTH - 2))[0] == 0  # block(n) nests n + 2 deep: at the limit, no line
