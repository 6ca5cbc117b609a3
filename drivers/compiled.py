"""An optional compiled helper loaded with ctypes, and the choice between it and its twin.

drivers/capture/ringwalk.py (_ringwalk.c) and drivers/sflow/cwalk.py (_sflowwalk.c) each have
a small C library built by `pip install -e .` as an optional extension, beside a Python (or
numpy) twin that gives the same answers. Both find it the same way, load it once, remember
why it is missing or broken (logged once, a warning: the twin then runs), and choose between
the two the same way: an explicit `impl`, else the module's environment variable, else C when
built. CompiledLib is that shared part; each module declares its functions' ctypes
signatures in `declare`.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

Impl = Literal["c", "python"]


class CompiledLib:
    """`stem` + an extension suffix in `here`, loaded on first use.

    `what` names it in messages ("compiled ring walker"), `twin` says what runs without it
    ("SPAN batches use the Python walker"; "using the Python walker" when it does not load),
    `env_var` is the variable that forces one side. `lib` and `error` are the outcome of the
    one load (tests set them to stand for a machine without the build).
    """

    def __init__(self, here: Path, stem: str, *, what: str, twin_when_missing: str,
                 twin_when_broken: str, env_var: str, log: logging.Logger,
                 declare: Callable[[ctypes.CDLL], None]) -> None:
        self.here = here
        self.stem = stem
        self.what = what
        self.twin_when_missing = twin_when_missing
        self.twin_when_broken = twin_when_broken
        self.env_var = env_var
        self.log = log
        self.declare = declare
        self.lib: ctypes.CDLL | None = None
        self.error: str | None = None

    def path(self) -> Path | None:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            p = self.here / f"{self.stem}{suffix}"
            if p.exists():
                return p
        return None

    def load(self) -> ctypes.CDLL | None:
        """The library, or None (with `error` set and logged once) when it is not there."""
        if self.lib is not None or self.error is not None:
            return self.lib
        path = self.path()
        if path is None:
            self.error = (f"{self.what} not built (no C compiler at `pip install -e .`?); "
                          f"{self.twin_when_missing}")
            self.log.warning("%s", self.error)
            return None
        try:
            lib = ctypes.CDLL(str(path))
            self.declare(lib)
        except (OSError, AttributeError) as e:
            self.error = f"{self.what} {path} does not load ({e}); {self.twin_when_broken}"
            self.log.warning("%s", self.error)
            return None
        self.lib = lib
        return lib

    def available(self) -> bool:
        return self.load() is not None

    def reason(self) -> str | None:
        """Why the compiled side is not there (None when it is)."""
        self.load()
        return self.error

    def choose(self, impl: Impl | None = None) -> Impl:
        """choose_side for this library (loaded only when C could be the answer)."""
        return choose_side(impl, self.env_var, lambda: self.load() is not None,
                           lambda: self.error)


def choose_side(impl: str | None, env_var: str, built: Callable[[], bool],
                why_not: Callable[[], str | None]) -> Impl:
    """Which twin of a compiled helper to use: `impl`, else $env_var, else C when built().
    ValueError for a value that is neither "c" nor "python"; RuntimeError for "c" without
    the build (why_not() says why). built() is asked only when C could be the answer."""
    want = impl or os.environ.get(env_var) or None
    if want == "python":
        return "python"
    if want == "c":
        if not built():
            raise RuntimeError(f"{env_var}=c but {why_not()}")
        return "c"
    if want is not None:
        raise ValueError(f"{env_var} must be 'c' or 'python', not {want!r}")
    return "c" if built() else "python"
