"""YAML nested deeper than PyYAML can follow: a line and a reason instead of a RecursionError.

PyYAML's composer and constructor recurse once per level of nesting (a few Python frames
each), so a file of a few hundred `[` or of a few hundred ever-deeper indented keys raises
RecursionError, which no YAMLError handler catches: the CLI printed a traceback, the daemon
died on SIGHUP. Its parser and scanner are loops over their own stacks, so the events can
still be walked to find where the nesting goes too deep. Every YAML reader of the agent
(the config, the web configs) catches RecursionError around PyYAML and asks `too_deep`.
"""

from __future__ import annotations

import yaml

# Far deeper than any file the agent reads (a config nests about 6 levels), far below where
# PyYAML runs out of recursion (about 300 levels under Python's default limit of 1,000).
MAX_DEPTH = 100

_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def too_deep(text: str) -> tuple[int, str]:
    """The 1-based line and the reason for text PyYAML ran out of recursion on: the first
    collection nested more than MAX_DEPTH levels deep, or where the parser gave up before
    (libyaml refuses flow nesting past 1,000 levels), else line 0 and the reason."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, _START):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    return (mark.line + 1 if mark is not None else 0,
                            f"nested more than {MAX_DEPTH} levels deep (lists or mappings inside"
                            " each other); no setting needs that")
            elif isinstance(event, _END):
                depth -= 1
    except yaml.YAMLError as e:  # libyaml stops at 1,000 levels of flow nesting itself
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            return mark.line + 1, f"{getattr(e, 'problem', None) or e} (lists or mappings inside each other)"
    return 0, f"nested too deeply to read (more than {MAX_DEPTH} levels of lists or mappings)"
