"""The ledger's hash chain: entry kinds, canonical form, entry hashes, ledger times and the chain check.

Entry n stores `prev_hash` (entry n−1's hash; 64 zeros for n = 1) and
`hash = sha256(prev_hash + canonical(doc))`, where doc = {"at", "kind", "payload", "ref", "seq",
"server"} and canonical is JSON with sorted keys, no spaces, UTF-8. Every column except the two
hashes is inside doc, so no field can change unseen. Payloads hold exact values only (str, int,
bool, None, lists, objects; no floats): money is integer fen, times are ISO-8601 strings in UTC.
Payloads are stored as TEXT, not PostgreSQL JSONB, which would renormalise them.

Head. A one-row table `ledger_head` holds the last seq and hash, updated in the same
transaction as every append, so it never legitimately disagrees with the log. A chain alone
cannot show a deleted tail (what is left is still a valid chain); the head can: verify reports
"truncated after seq N" when the head names a later seq than the last entry. The head lives in
the database rather than in a file because only the database's transaction makes "entry written"
and "head moved" one atomic step; a file beside it would go stale on any crash between the two.
Someone who can rewrite both the entries and the head can forge a consistent ledger; against
that, `ledger verify` and `report sla` print the head so it can be anchored elsewhere and checked
later with `--expect-head SEQ:HASH`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

GENESIS_HASH = "0" * 64

EntryKind = Literal[
    "outage_start",  # a port stopped forwarding (tracker or enforcer)
    "outage_end",  # ref: the outage_start
    "classify",  # ref: the outage_start; the agent's own later evidence changed the cause
    "reclassify",  # ref: the outage_start; an operator's decision (wins over classify)
    "maintenance",  # a declared maintenance window
    "action",  # an enforcement act (shut, restore, notice) with its evidence
    "incident",  # R13: a security incident with detected/reported times
    "ack",  # R19: ref: the outage_start; someone answered
    "on_site",  # R19: ref: the outage_start; someone is on site
    "resolve",  # R19: ref: the outage_start; the fault is repaired
    "flag",  # R12: a port down or silent for a week
    "note",  # free text for the record
    "cap_change",
    "restriction_start",  # a throttle or service block read back on a port: not an outage
    "restriction_end",  # ref: the restriction_start
]
ENTRY_KINDS: tuple[str, ...] = (
    "outage_start",
    "outage_end",
    "classify",
    "reclassify",
    "maintenance",
    "action",
    "incident",
    "ack",
    "on_site",
    "resolve",
    "flag",
    "note",
    "cap_change",  # R3: a new resource standard announced to the customer, with its objection period
    "restriction_start",  # a throttle or service block read back on a port: not an outage
    "restriction_end",  # ref: the restriction_start; lifted (read back) or superseded by a shut
)
REFERS_TO_OUTAGE = frozenset({"outage_end", "classify", "reclassify", "ack", "on_site", "resolve"})


class LedgerError(Exception):
    """A ledger operation that cannot be done; the message says what to do instead."""


# ---------------------------------------------------------------------------------------------
# Times and exact payloads


def whole_aware(name: str, t: datetime) -> None:
    """Refuses a time without a UTC offset or with fractions of a second."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise LedgerError(f"{name} needs a UTC offset, e.g. 2026-11-03T02:00:00+08:00")
    if t.microsecond:
        raise LedgerError(f"{name} must be a whole second")


def ts(at: datetime) -> str:
    """The ledger's time text: ISO-8601 in UTC. Naive times are refused."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise LedgerError(f"time {at.isoformat()} has no timezone; the ledger stores UTC")
    return at.astimezone(UTC).isoformat()


def parse_ts(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise LedgerError(f"stored time {value!r} has no timezone")
    return at


def check_exact(value: object, path: str) -> None:
    """Refuses what canonical JSON cannot hold exactly (floats, odd types, non-string keys)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        raise LedgerError(f"payload {path}: floats are not exact; store integers (fen, bps, s)")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_exact(v, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise LedgerError(f"payload {path}: keys must be strings, got {k!r}")
            check_exact(v, f"{path}.{k}")
        return
    raise LedgerError(f"payload {path}: {type(value).__name__} cannot be stored; convert it")


def json_obj(text_: str) -> dict[str, Any]:
    value = json.loads(text_)
    if not isinstance(value, dict):
        raise LedgerError("stored payload is not a JSON object")
    return value


# ---------------------------------------------------------------------------------------------
# Canonical form and hashing


def canonical(value: object) -> str:
    """JSON with sorted keys and no spaces: the byte-exact form that is hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(
    prev_hash: str,
    seq: int,
    at: str,
    kind: str,
    server: str | None,
    ref_seq: int | None,
    payload: object,
) -> str:
    doc = {"at": at, "kind": kind, "payload": payload, "ref": ref_seq, "seq": seq, "server": server}
    return hashlib.sha256((prev_hash + canonical(doc)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as stored."""

    seq: int
    at: datetime
    kind: str
    server: str | None
    ref_seq: int | None
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append; `ref_index` refers to an earlier item of the same batch."""

    kind: str
    at: datetime
    payload: Mapping[str, Any]
    server: str | None = None
    ref_seq: int | None = None
    ref_index: int | None = None


@dataclass(frozen=True, slots=True)
class StoredRow:
    """An entry's columns exactly as the database holds them, before any parsing."""

    seq: int
    at: str
    kind: str
    server: str | None
    ref_seq: int | None
    payload: str
    prev_hash: str
    hash: str

    def entry(self) -> Entry:
        return Entry(self.seq, parse_ts(self.at), self.kind, self.server, self.ref_seq,
                     MappingProxyType(json_obj(self.payload)), self.prev_hash, self.hash)


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


Problem = Literal["modified", "missing", "truncated", "beyond_head", "anchor_mismatch"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of recomputing the chain; `first_bad_seq` and `problem` are None when ok.

    problem: "modified" (an entry's content no longer matches its hash, or was re-hashed so its
    successor no longer links to it), "missing" (entries deleted from the middle),
    "truncated" (the tail after `last_seq` was deleted: the head names a later seq),
    "beyond_head" (entries written around the store, after the head), "anchor_mismatch" (an
    externally kept head does not match).
    """

    entries: int
    last_seq: int
    last_hash: str
    head: Head
    first_bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(
    rows: Sequence[StoredRow], head: Head, expect_head: Head | None = None
) -> VerifyResult:
    """Recompute the chain of `rows` (in seq order) from seq 1; the first problem is reported."""
    prev_hash, expected, count = GENESIS_HASH, 1, 0
    last_seq, last_hash = 0, GENESIS_HASH

    def bad(seq: int, problem: Problem, detail: str) -> VerifyResult:
        return VerifyResult(count, last_seq, last_hash, head, seq, problem, detail)

    for row in rows:
        seq = row.seq
        if seq != expected:
            return bad(expected, "missing",
                       f"entries {expected}..{seq - 1} are missing from the middle of the log")
        if row.prev_hash != prev_hash:
            # Entry seq−1 matched its own hash, yet this entry links to another one: seq−1
            # was changed and re-hashed (this one still holds its original hash).
            return bad(seq - 1, "modified",
                       f"entry {seq - 1} was changed and re-hashed: entry {seq} links to "
                       f"{row.prev_hash[:16]}…, not to {prev_hash[:16]}…")
        try:
            payload = json_obj(row.payload)
            h = entry_hash(row.prev_hash, seq, row.at, row.kind, row.server, row.ref_seq, payload)
        except (ValueError, LedgerError):
            h = ""
        if h != row.hash:
            return bad(seq, "modified", f"entry {seq} ({row.kind}) does not match its hash")
        prev_hash, expected, count = row.hash, seq + 1, count + 1
        last_seq, last_hash = seq, row.hash
    if head.seq > last_seq:
        return bad(last_seq + 1, "truncated",
                   f"truncated after seq {last_seq}: the head records seq {head.seq}, so "
                   f"entries {last_seq + 1}..{head.seq} were deleted")
    if head.seq < last_seq:
        return bad(head.seq + 1, "beyond_head",
                   f"entries {head.seq + 1}..{last_seq} were written around the ledger store "
                   f"(the head records seq {head.seq})")
    if head.hash != last_hash:
        return bad(last_seq, "modified",
                   f"entry {last_seq} does not match the head's hash: it was changed and "
                   f"re-hashed (or the head was edited)")
    if expect_head is not None:
        if expect_head.seq > last_seq:
            return bad(last_seq + 1, "truncated",
                       f"truncated after seq {last_seq}: the anchored head is seq "
                       f"{expect_head.seq}")
        anchored = next((r.hash for r in rows if r.seq == expect_head.seq), GENESIS_HASH)
        if anchored != expect_head.hash:
            return bad(expect_head.seq, "anchor_mismatch",
                       f"entry {expect_head.seq} has hash {anchored[:16]}…, the anchor says "
                       f"{expect_head.hash[:16]}…: the log was rewritten up to there")
    return VerifyResult(count, last_seq, last_hash, head)
