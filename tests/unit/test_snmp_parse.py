"""IF-MIB parsing from recorded walks: varbinds in, exact PortCounters facts out."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.type import univ
from pysnmp.proto import rfc1902, rfc1905
from rackwarden.drivers.snmp.ifmib import (
    ALL_COLUMNS,
    IF_ADMIN_STATUS,
    IF_COUNTER_DISCONTINUITY_TIME,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_IN_OCTETS,
    IF_NAME,
    IF_OPER_STATUS,
    IF_OUT_OCTETS,
    PRIMARY_COLUMNS,
    SNMP_ENGINE_BOOTS,
    SYS_UPTIME,
    Absent,
    Oid,
    SnmpValue,
    VarBind,
    absorb_bulk_rows,
    indexes_without_hc,
    parse_if_table,
    parse_if_walk,
)
from rackwarden.drivers.snmp.poller import SnmpTarget, plain_value, reveal
from rackwarden.drivers.snmp.snmprec import (
    COUNTER32,
    COUNTER64,
    GAUGE32,
    INTEGER,
    NO_SUCH_INSTANCE,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    TIMETICKS,
    format_snmprec,
    parse_snmprec,
    read_snmprec,
)
from rackwarden.policies.facts import PortCounters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snmprec"


def walk(name: str) -> list[VarBind]:
    return read_snmprec(FIXTURES / f"{name}.snmprec")


def port_rows(index: int, name: SnmpValue, **cols: SnmpValue | None) -> list[VarBind]:
    """Varbinds for one port; keyword names pick columns, None leaves a column out."""
    values: dict[Oid, SnmpValue | None] = {
        IF_NAME: name,
        IF_HC_IN_OCTETS: 1000 + index,
        IF_HC_OUT_OCTETS: 2000 + index,
        IF_HIGH_SPEED: 1000,
        IF_COUNTER_DISCONTINUITY_TIME: 0,
        IF_ADMIN_STATUS: 1,
        IF_OPER_STATUS: 1,
    }
    names = {
        "hc_in": IF_HC_IN_OCTETS, "hc_out": IF_HC_OUT_OCTETS, "speed": IF_HIGH_SPEED,
        "disc": IF_COUNTER_DISCONTINUITY_TIME, "admin": IF_ADMIN_STATUS,
        "oper": IF_OPER_STATUS, "in32": IF_IN_OCTETS, "out32": IF_OUT_OCTETS,
    }
    for key, value in cols.items():
        values[names[key]] = value
    return [((*col, index), v) for col, v in values.items() if v is not None]


UPTIME: list[VarBind] = [(SYS_UPTIME, 4242)]


# --- recorded walks -------------------------------------------------------------------------


def test_recorded_net_snmp_walk_gives_every_interface_with_counter64() -> None:
    w = parse_if_walk(walk("netsnmp-linux-5.9.3"))
    assert w.problems == ()
    assert w.sys_uptime_ticks == 103_143
    assert w.engine_boots is None  # not asked for: v2c walk
    assert set(w.ports) == {"lo", "ifb0", "ifb1", "eth0", "rwt5-m0"}
    assert w.ports["lo"] == PortCounters(
        if_name="lo", if_index=1, in_octets=1_727_606, out_octets=1_727_606, counter_bits=64,
        oper="up", admin="up", high_speed_mbps=10, discontinuity_ticks=0,
    )
    assert w.ports["eth0"].in_octets == 164_108_442 and w.ports["eth0"].out_octets == 316_798
    assert w.ports["ifb0"].oper == "down" and w.ports["ifb0"].admin == "down"
    assert w.ports["rwt5-m0"].if_index == 55 and w.ports["rwt5-m0"].high_speed_mbps == 10_000


def test_recorded_48_port_walk() -> None:
    w = parse_if_walk(walk("c64reset-t1"))
    assert w.problems == ()
    assert w.sys_uptime_ticks == 40 * 8_640_000
    access = {n: p for n, p in w.ports.items() if n.startswith("GigabitEthernet1/0/")}
    assert len(access) == 48 and set(w.ports) - set(access) == {"Vl1", "Nu0"}
    assert w.ports["GigabitEthernet1/0/5"] == PortCounters(
        if_name="GigabitEthernet1/0/5", if_index=10105, in_octets=9_876_543_210_000,
        out_octets=1_234_567_890_123, counter_bits=64, oper="up", admin="up",
        high_speed_mbps=1000, discontinuity_ticks=0,
    )
    assert [access[f"GigabitEthernet1/0/{n}"].if_index for n in range(1, 49)] == list(
        range(10101, 10149)
    )
    assert {access[f"GigabitEthernet1/0/{n}"].oper for n in range(45, 49)} == {"down"}
    assert all(p.counter_bits == 64 for p in w.ports.values())
    # The 32-bit columns are in the walk too; Counter64 must win, and they must agree mod 2**32.
    raw = dict(walk("c64reset-t1"))
    for p in access.values():
        assert p.in_octets is not None and p.in_octets >= 2**32
        assert raw[(*IF_IN_OCTETS, p.if_index)] == p.in_octets % 2**32


def test_agent_without_hc_columns_falls_back_to_counter32() -> None:
    varbinds = walk("c32wrap-t1")
    assert indexes_without_hc(varbinds) == {p for p in range(1, 49)} | {49, 14501}
    w = parse_if_walk(varbinds)
    # No ifHC* and no ifCounterDiscontinuityTime at all: unimplemented, not partial.
    assert w.problems == ()
    assert len(w.ports) == 50
    assert {p.counter_bits for p in w.ports.values()} == {32}
    fa7 = w.ports["FastEthernet0/7"]
    assert (fa7.if_index, fa7.in_octets, fa7.out_octets) == (7, 4_294_967_000, 4_294_000_000)
    assert fa7.high_speed_mbps == 100 and fa7.discontinuity_ticks is None


def test_counter32_wrap_is_reported_as_read_not_corrected() -> None:
    t1, t2 = parse_if_table(walk("c32wrap-t1")), parse_if_table(walk("c32wrap-t2"))
    assert t1["FastEthernet0/7"].in_octets == 4_294_967_000
    assert t2["FastEthernet0/7"].in_octets == 1_200  # wrap handling belongs to the policy
    assert t2["FastEthernet0/7"].out_octets == 32_704


def test_duplicate_ifname_leaves_both_ports_out_and_says_so() -> None:
    w = parse_if_walk(walk("dupname-t1"))
    assert "GigabitEthernet1/0/3" not in w.ports
    assert len(w.ports) == 49
    assert w.problems == (
        "ifName 'GigabitEthernet1/0/3' is on ifIndex 10103, 10300: left out"
        " (give the ports distinct names on the switch)",
    )


def test_no_such_instance_is_none_and_a_problem_never_zero() -> None:
    w = parse_if_walk(walk("nosuchinst-t1"))
    gi9 = w.ports["GigabitEthernet1/0/9"]
    assert gi9.in_octets is None
    assert gi9.out_octets is not None and gi9.out_octets > 0
    assert gi9.counter_bits == 64  # no silent switch to the 32-bit column: that would rebaseline
    assert gi9.oper == "unknown"
    assert w.problems == (
        "ifHCInOctets.10109 is noSuchInstance",
        "ifOperStatus.10109 is noSuchInstance",
    )
    assert "ifHCInOctets.10109 is noSuchInstance" in w.detail()


def test_port_gone_from_second_walk_is_simply_absent() -> None:
    t2 = parse_if_walk(walk("portgone-t2"))
    assert "GigabitEthernet1/0/13" not in t2.ports and t2.problems == ()
    assert len(t2.ports) == 49


def test_reindex_moves_ifname_to_new_ifindex() -> None:
    t1, t2 = parse_if_table(walk("reindex-t1")), parse_if_table(walk("reindex-t2"))
    assert set(t1) == set(t2)
    assert t1["GigabitEthernet1/0/1"].if_index == 10101
    assert t2["GigabitEthernet1/0/1"].if_index == 1048
    assert t2["GigabitEthernet1/0/48"].if_index == 1001


# --- hand-made varbinds for the rules --------------------------------------------------------


def test_varbind_order_does_not_matter() -> None:
    rows = UPTIME + port_rows(3, b"Gi0/3") + port_rows(1, b"Gi0/1") + port_rows(2, b"Gi0/2")
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    assert parse_if_walk(shuffled) == parse_if_walk(rows)


def test_hc_row_in_one_direction_only_keeps_64_bits_and_flags_the_other() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"p1", hc_out=None, in32=5, out32=6))
    assert w.ports["p1"].counter_bits == 64
    assert (w.ports["p1"].in_octets, w.ports["p1"].out_octets) == (1001, None)
    assert w.problems == ("ifHCOutOctets.1 missing",)


def test_mixed_agent_uses_32_bits_only_where_hc_rows_are_absent() -> None:
    rows = UPTIME + port_rows(1, b"fast", in32=11, out32=12)
    rows += port_rows(2, b"slow", hc_in=None, hc_out=None, in32=21, out32=22)
    w = parse_if_walk(rows)
    assert w.problems == ()
    assert (w.ports["fast"].counter_bits, w.ports["fast"].in_octets) == (64, 1001)
    assert (w.ports["slow"].counter_bits, w.ports["slow"].in_octets) == (32, 21)


def test_port_with_no_octet_counters_at_all_is_partial() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"a") + port_rows(2, b"b", hc_in=None, hc_out=None))
    assert (w.ports["b"].in_octets, w.ports["b"].out_octets) == (None, None)
    assert w.problems == ("b (ifIndex 2) has no octet counters",)


def test_optional_column_missing_for_one_port_only_is_partial() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"a") + port_rows(2, b"b", disc=None))
    assert w.ports["b"].discontinuity_ticks is None
    assert w.problems == ("ifCounterDiscontinuityTime.2 missing",)


def test_missing_status_is_unknown_and_partial() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"a", oper=None, admin=9))
    assert (w.ports["a"].oper, w.ports["a"].admin) == ("unknown", "unknown")
    assert w.problems == ("ifOperStatus.1 missing", "ifAdminStatus.1 = 9 is not an IF-MIB status")


def test_all_if_status_values_map_to_mib_names() -> None:
    rows = UPTIME
    for v in range(1, 8):
        rows = rows + port_rows(v, f"p{v}".encode(), oper=v, admin=1 + v % 3)
    w = parse_if_walk(rows)
    assert [w.ports[f"p{v}"].oper for v in range(1, 8)] == [
        "up", "down", "testing", "unknown", "dormant", "notPresent", "lowerLayerDown",
    ]


def test_empty_name_is_skipped_silently_and_nul_terminated_name_is_trimmed() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"") + port_rows(2, b"Gi0/2\x00"))
    assert set(w.ports) == {"Gi0/2"} and w.problems == ()


def test_counters_without_ifname_are_reported() -> None:
    rows = UPTIME + port_rows(1, b"a") + [((*IF_HC_IN_OCTETS, 9), 5), ((*IF_OPER_STATUS, 9), 1)]
    w = parse_if_walk(rows)
    assert set(w.ports) == {"a"}
    assert w.problems == ("ifIndex 9 has counters but no ifName",)


def test_wrong_types_are_problems_not_values() -> None:
    w = parse_if_walk(UPTIME + port_rows(1, b"a", hc_in=b"12", speed=-1) + port_rows(2, 77))
    assert w.ports["a"].in_octets is None and w.ports["a"].high_speed_mbps is None
    assert "ifHCInOctets.1 is not an unsigned int: b'12'" in w.problems
    assert "ifName.2 is not a string: 77" in w.problems


def test_repeated_varbind_keeps_first_and_says_so() -> None:
    rows = UPTIME + port_rows(1, b"a") + [((*IF_HC_IN_OCTETS, 1), 999)]
    w = parse_if_walk(rows)
    assert w.ports["a"].in_octets == 1001
    assert w.problems == ("ifHCInOctets.1 answered twice; kept the first",)


def test_sys_uptime_and_engine_boots() -> None:
    assert parse_if_walk(port_rows(1, b"a")).problems == ("sysUpTime.0 not returned",)
    w = parse_if_walk([(SYS_UPTIME, Absent.NO_SUCH_OBJECT)] + port_rows(1, b"a"))
    assert w.sys_uptime_ticks is None and w.problems == ("sysUpTime.0 is noSuchObject",)
    w = parse_if_walk([(SYS_UPTIME, 2**32 - 1), (SNMP_ENGINE_BOOTS, 17)])
    assert (w.sys_uptime_ticks, w.engine_boots, w.ports, w.problems) == (2**32 - 1, 17, {}, ())


def test_foreign_oids_from_overshoot_are_ignored() -> None:
    rows = UPTIME + port_rows(1, b"a") + [
        ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 1), b"alias"),  # ifAlias: not a column we read
        ((1, 3, 6, 1, 2, 1, 31, 1, 2, 1, 3, 0, 1), 1),  # ifStackStatus
        ((*IF_HC_IN_OCTETS, 1, 5), 3),  # two index arcs: not an ifIndex row
    ]
    assert parse_if_walk(rows) == parse_if_walk(UPTIME + port_rows(1, b"a"))


def test_detail_is_capped() -> None:
    rows = UPTIME + [r for i in range(1, 20) for r in port_rows(i, f"p{i}".encode(), oper=None)]
    w = parse_if_walk(rows)
    assert len(w.problems) == 19
    assert w.detail().endswith("; and 11 more")


# --- the GETBULK column walker ---------------------------------------------------------------


def test_absorb_splits_an_interleaved_reply_and_stops_each_column_at_its_overshoot() -> None:
    a, b = IF_NAME, IF_HC_IN_OCTETS
    last = {a: a, b: b}
    # Two columns, three rows: column a ends after index 2 (row 3 overshoots into column 2 of
    # ifXTable, i.e. (…31,1,1,1,2,1)); column b has three rows.
    reply: list[VarBind] = [
        ((*a, 1), b"p1"), ((*b, 1), 10),
        ((*a, 2), b"p2"), ((*b, 2), 20),
        ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 2, 1), 0), ((*b, 3), 30),
    ]
    step = absorb_bulk_rows([a, b], last, reply)
    assert step.varbinds == [
        ((*a, 1), b"p1"), ((*b, 1), 10), ((*a, 2), b"p2"), ((*b, 2), 20), ((*b, 3), 30),
    ]
    assert step.ended == {a}
    assert step.last == {a: (*a, 2), b: (*b, 3)}


def test_absorb_handles_a_reply_cut_mid_row_and_end_of_mib_view() -> None:
    a, b = IF_NAME, IF_COUNTER_DISCONTINUITY_TIME
    step = absorb_bulk_rows([a, b], {a: (*a, 4), b: (*b, 4)}, [((*a, 5), b"p5")])
    assert step.ended == frozenset() and step.last[b] == (*b, 4)  # b resumes where it was
    reply: list[VarBind] = [((*a, 1), b"x"), ((*b, 4), Absent.END_OF_MIB_VIEW)]
    step = absorb_bulk_rows([a, b], {a: a, b: (*b, 4)}, reply)
    assert step.ended == {b} and step.varbinds == [((*a, 1), b"x")]


def test_absorb_refuses_an_agent_that_loops() -> None:
    a = IF_NAME
    with pytest.raises(ValueError, match="non-increasing"):
        absorb_bulk_rows([a], {a: (*a, 5)}, [((*a, 5), b"again")])


def test_absorb_walk_of_a_recorded_switch_equals_the_recording() -> None:
    """Simulate an agent answering GETBULK from a recording, 64 varbinds per reply like snmpsim."""
    recorded = sorted(walk("discont-t2"))

    def getnext(oid: Oid) -> VarBind:
        for o, v in recorded:
            if o > oid:
                return o, v
        return oid, Absent.END_OF_MIB_VIEW

    active, last, got = list(PRIMARY_COLUMNS), {c: c for c in PRIMARY_COLUMNS}, []
    while active:
        cursor = [last[c] for c in active]
        reply: list[VarBind] = []
        while len(reply) + len(active) <= 64:
            row = [getnext(o) for o in cursor]
            reply += row
            cursor = [o for o, _ in row]
        step = absorb_bulk_rows(active, last, reply)
        got += step.varbinds
        last = step.last
        active = [c for c in active if c not in step.ended]
    wanted = {(o, v) for o, v in recorded if o[:-1] in PRIMARY_COLUMNS}
    assert set(got) == wanted and len(got) == len(wanted)


# --- pysnmp values and the target ----------------------------------------------------------


def test_pysnmp_values_become_plain_python() -> None:
    assert plain_value(rfc1902.Counter64(2**64 - 1)) == 2**64 - 1
    assert plain_value(rfc1902.Counter32(2**32 - 1)) == 2**32 - 1
    assert plain_value(rfc1902.TimeTicks(123)) == 123
    assert plain_value(rfc1902.Gauge32(10_000)) == 10_000
    assert plain_value(rfc1902.Integer32(2)) == 2
    assert plain_value(rfc1902.OctetString(b"Gi0/1")) == b"Gi0/1"
    assert plain_value(rfc1902.IpAddress("10.0.0.1")) == bytes([10, 0, 0, 1])
    assert plain_value(univ.ObjectIdentifier((1, 3, 6))) == (1, 3, 6)
    assert plain_value(rfc1905.NoSuchInstance()) is Absent.NO_SUCH_INSTANCE
    assert plain_value(rfc1905.NoSuchObject()) is Absent.NO_SUCH_OBJECT
    assert plain_value(rfc1905.EndOfMibView()) is Absent.END_OF_MIB_VIEW
    assert isinstance(plain_value(rfc1902.Counter64(5)), int)


class _Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"


def test_target_keeps_secrets_out_of_repr_and_reveals_all_forms() -> None:
    t = SnmpTarget(
        "sw1", "192.0.2.1", version="3", user="mon", auth_key=_Secret("a-very-secret"),
        priv_key=lambda: "priv-very-secret",
    )
    assert "secret" not in repr(t) and "mon" in repr(t)
    assert reveal(t.auth_key) == "a-very-secret" and reveal(t.priv_key) == "priv-very-secret"
    v2 = SnmpTarget("sw2", "192.0.2.2", community="c0mmunity")
    assert "c0mmunity" not in repr(v2) and reveal(v2.community) == "c0mmunity"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"version": "1", "community": "c"}, "version"),
        ({"version": "2c"}, "community"),
        ({"version": "3"}, "user"),
        ({"version": "3", "user": "u", "auth_protocol": "sha1"}, "auth_protocol"),
        ({"version": "3", "user": "u", "auth_key": "k" * 8, "priv_protocol": "rc4"},
         "priv_protocol"),
        ({"version": "3", "user": "u", "priv_key": "k" * 8}, "privacy needs"),
        ({"community": "c", "port": 0}, "port"),
        ({"community": "c", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_target_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SnmpTarget("sw", "192.0.2.1", **kwargs)  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
counters64 = st.integers(0, 2**64 - 1)
ports_strategy = st.dictionaries(
    st.integers(1, 2**31 - 1),
    st.tuples(names, counters64, counters64, st.integers(1, 7), st.integers(1, 7),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.booleans()),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(ports_strategy, st.integers(0, 2**32 - 1), st.randoms())
def test_any_well_formed_table_parses_back_exactly(
    table: dict[int, tuple[str, int, int, int, int, int, int, bool]],
    uptime: int,
    rnd: random.Random,
) -> None:
    rows: list[VarBind] = [(SYS_UPTIME, uptime)]
    expected: dict[str, PortCounters] = {}
    counts: dict[str, int] = {}
    for name, *_ in table.values():
        counts[name] = counts.get(name, 0) + 1
    for index, (name, hin, hout, oper, admin, speed, disc, hc) in table.items():
        cols: dict[str, SnmpValue | None] = {
            "oper": oper, "admin": admin, "speed": speed, "disc": disc,
            "in32": hin % 2**32, "out32": hout % 2**32,
        }
        if hc:
            cols |= {"hc_in": hin, "hc_out": hout}
        else:
            cols |= {"hc_in": None, "hc_out": None}
        rows += port_rows(index, name.encode(), **cols)
        if counts[name] == 1:
            expected[name] = PortCounters(
                if_name=name, if_index=index,
                in_octets=hin if hc else hin % 2**32, out_octets=hout if hc else hout % 2**32,
                counter_bits=64 if hc else 32,
                oper=("up", "down", "testing", "unknown", "dormant", "notPresent",
                      "lowerLayerDown")[oper - 1],
                admin=("up", "down", "testing", "unknown", "dormant", "notPresent",
                       "lowerLayerDown")[admin - 1],
                high_speed_mbps=speed, discontinuity_ticks=disc,
            )
    rnd.shuffle(rows)
    w = parse_if_walk(rows)
    assert dict(w.ports) == expected
    assert w.sys_uptime_ticks == uptime
    assert bool(w.problems) == any(c > 1 for c in counts.values())


column_oids = st.sampled_from(ALL_COLUMNS + (SYS_UPTIME[:-1],))
values = st.one_of(
    st.integers(-5, 2**64 + 5), st.binary(max_size=8), st.text(max_size=5),
    st.sampled_from(list(Absent)), st.tuples(st.integers(0, 5)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(column_oids, st.integers(0, 6), values), max_size=60))
def test_parser_never_raises_and_never_invents_zeros(
    rows: list[tuple[Oid, int, SnmpValue]],
) -> None:
    varbinds = [((*col, idx), v) for col, idx, v in rows]
    w = parse_if_walk(varbinds)
    raw: dict[Oid, SnmpValue] = {}
    for oid, v in varbinds:
        raw.setdefault(oid, v)
    for name, p in w.ports.items():
        assert p.if_name == name
        for value, cols in ((p.in_octets, (IF_HC_IN_OCTETS, IF_IN_OCTETS)),
                            (p.out_octets, (IF_HC_OUT_OCTETS, IF_OUT_OCTETS))):
            if value is not None:  # every number reported was really in the walk
                assert value in {raw.get((*c, p.if_index)) for c in cols}
        if p.in_octets is None or p.out_octets is None:
            assert w.problems


record_values = st.one_of(
    st.tuples(st.just(COUNTER64), counters64),
    st.tuples(st.just(COUNTER32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(GAUGE32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(TIMETICKS), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(INTEGER), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(OCTET_STRING), st.binary(max_size=40)),
    st.tuples(st.just(OBJECT_IDENTIFIER), st.lists(st.integers(0, 2**32 - 1), min_size=2,
                                                   max_size=8).map(tuple)),
    st.tuples(st.just(NO_SUCH_INSTANCE), st.none()),
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.lists(st.integers(0, 100_000), min_size=2, max_size=12).map(
    lambda arcs: (1, 3, *arcs)), record_values, max_size=30))
def test_snmprec_round_trip(records: dict[Oid, tuple[int, object]]) -> None:
    text = format_snmprec([(oid, tag, v) for oid, (tag, v) in records.items()])  # type: ignore[misc]
    parsed = parse_snmprec(text)
    assert [o for o, _ in parsed] == sorted(records)
    for oid, value in parsed:
        tag, original = records[oid]
        assert value == (Absent.NO_SUCH_INSTANCE if tag == NO_SUCH_INSTANCE else original)


def test_snmprec_refuses_variation_modules() -> None:
    with pytest.raises(ValueError, match="variation"):
        parse_snmprec("1.3.6.1.2.1.1.3.0|67:numeric|rate=1\n")
