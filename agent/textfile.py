"""Text files the CLI and the daemon read: bytes that are not text become `file:line: reason`.

Python raises UnicodeDecodeError (a traceback, and no line number) for a file that is not
UTF-8, and the parsers behind it (YAML, JSON) name a NUL byte, if at all, by character offset.
Config files, web configs, secrets, recorded polls and scenario files are all read through
here, so a binary file or a stray byte is reported where it is, in the words a person needs.
"""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """`file` is not usable text at `line`; str() is `file:line: reason`."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


def text_problem(data: bytes) -> tuple[int, str] | None:
    """The 1-based line and the reason of the first byte that keeps `data` from being text."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        return (data.count(b"\n", 0, e.start) + 1,
                f"not UTF-8 text: byte 0x{data[e.start]:02x} at column {e.start - line_start + 1}"
                " (a binary file, or another encoding?)")
    nul = data.find(b"\0")
    if nul >= 0:
        line_start = data.rfind(b"\n", 0, nul) + 1
        return data.count(b"\n", 0, nul) + 1, f"NUL byte at column {nul - line_start + 1} (a binary file?)"
    return None


def decode(data: bytes, file: str) -> str:
    """`data` as text, or TextFileError naming the line of the first bad byte."""
    problem = text_problem(data)
    if problem is not None:
        raise TextFileError(file, *problem)
    return data.decode("utf-8")


def read_text(path: str | Path) -> str:
    """A whole file as text; OSError as open() raises it, TextFileError for bytes that are not text."""
    return decode(Path(path).read_bytes(), str(path))


def decode_line(raw: bytes) -> str:
    """One line of a line-oriented file; ValueError (the reason only) when it is not text."""
    problem = text_problem(raw)
    if problem is not None:
        raise ValueError(problem[1])
    return raw.decode("utf-8")
