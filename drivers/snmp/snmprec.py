"""snmpsim .snmprec walk files: read into plain varbinds, write from typed records; pure."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .ifmib import Absent, Oid, SnmpValue, VarBind

# snmprec type tags: the sum of the BER tag's class, format and number, as snmpsim writes them.
INTEGER = 2
OCTET_STRING = 4
NULL = 5
OBJECT_IDENTIFIER = 6
IP_ADDRESS = 64
COUNTER32 = 65
GAUGE32 = 66
TIMETICKS = 67
OPAQUE = 68
COUNTER64 = 70
NO_SUCH_OBJECT = 128
NO_SUCH_INSTANCE = 129
END_OF_MIB_VIEW = 130

_NUMERIC = {INTEGER, COUNTER32, GAUGE32, TIMETICKS, COUNTER64}
_BYTES = {OCTET_STRING, IP_ADDRESS, OPAQUE}
_ABSENT = {
    NO_SUCH_OBJECT: Absent.NO_SUCH_OBJECT,
    NO_SUCH_INSTANCE: Absent.NO_SUCH_INSTANCE,
    END_OF_MIB_VIEW: Absent.END_OF_MIB_VIEW,
    NULL: Absent.NO_SUCH_OBJECT,  # a Null value carries no data either
}
# Printable ASCII is written as text, anything else as hex (tag suffix "x"); snmpsim strips the
# line, so a value with an edge space must be hex too.
_PLAIN = set(range(0x20, 0x7F))

Record = tuple[Oid, int, int | bytes | Oid | None]


def parse_oid(text: str) -> Oid:
    return tuple(int(arc) for arc in text.strip().strip(".").split("."))


def parse_snmprec(text: str) -> list[VarBind]:
    """Varbinds of an .snmprec file, in file order. Variation modules (`tag:module`) are refused."""
    out: list[VarBind] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            oid_text, tag_text, value = line.split("|", 2)
        except ValueError:
            raise ValueError(f"line {lineno}: not oid|tag|value: {line!r}") from None
        if ":" in tag_text:
            raise ValueError(f"line {lineno}: variation modules are not fixtures: {tag_text}")
        hexed = tag_text.endswith("x")
        tag = int(tag_text.rstrip("x"))
        parsed: SnmpValue
        if tag in _NUMERIC:
            parsed = int(value)
        elif tag in _BYTES:
            parsed = bytes.fromhex(value) if hexed else value.encode("latin-1")
        elif tag == OBJECT_IDENTIFIER:
            parsed = parse_oid(value)
        elif tag in _ABSENT:
            parsed = _ABSENT[tag]
        else:
            raise ValueError(f"line {lineno}: unknown snmprec tag {tag_text}")
        out.append((parse_oid(oid_text), parsed))
    return out


def read_snmprec(path: str | Path) -> list[VarBind]:
    return parse_snmprec(Path(path).read_text(encoding="latin-1"))


def format_snmprec(records: Iterable[Record]) -> str:
    """An .snmprec text of (oid, tag, value) records, sorted by OID as snmpsim requires."""
    lines = []
    for oid, tag, value in sorted(records, key=lambda r: r[0]):
        oid_text = ".".join(map(str, oid))
        if tag in _ABSENT or value is None:
            lines.append(f"{oid_text}|{tag}|")
        elif isinstance(value, bytes):
            if value and all(b in _PLAIN for b in value) and value.strip() == value:
                lines.append(f"{oid_text}|{tag}|{value.decode('latin-1')}")
            else:
                lines.append(f"{oid_text}|{tag}x|{value.hex()}")
        elif isinstance(value, tuple):
            lines.append(f"{oid_text}|{tag}|{'.'.join(map(str, value))}")
        else:
            lines.append(f"{oid_text}|{tag}|{value}")
    return "\n".join(lines) + "\n"
