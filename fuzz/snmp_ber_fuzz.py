"""Coverage-guided fuzzer (atheris) for the SNMP BER codec the fast v2c poller reads replies with.

    python fuzz/snmp_ber_fuzz.py -max_total_time=600 [libFuzzer flags] [corpus dirs]

Every input goes through `ber.decode_message`; the only allowed outcomes are a Message or a
`BerError` whose offset lies inside the input, and the C varbind loop (drivers/snmp/_bervb.c,
when built) and its Python twin must give the same one. It also goes through the SNMPv3 reader
(`usm.decode_envelope`, the digest check, decryption and `usm.decode_scoped_pdu`, with one
authPriv SHA/AES user's keys), where a `UsmError` is allowed too. A decoded message must also survive a round
trip: encoded again with `ber.encode_message` and decoded, it is the same message. Seeds are
responses over the recorded walks in tests/fixtures/snmprec, in minimal and net-snmp-style
(0x82) lengths, plus pyasn1's own encodings (definite and indefinite lengths). As with
the other fuzzers (fuzz/_harness.py), a crash is recorded (crash-<sha1> under -artifact_prefix, default
fuzz/artifacts/) and the run goes on; at the end it prints executions, crashes, RSS and one
JSON line, and exits 1 if anything crashed or RSS grew by more than --max-rss-growth-mb.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
from _harness import Harness, write_seeds  # fuzz/ is this script's folder on sys.path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "snmprec"

# Only the codec is instrumented: coverage of pysnmp and the rest of the package (imported by
# the package's __init__) would only slow the run and steer inputs toward nothing of ours.
with atheris.instrument_imports(include=["rackwarden.drivers.snmp.ber",
                                          "rackwarden.drivers.snmp.usm"]):
    from rackwarden.drivers.snmp import ber, usm

V3_USER = usm.Credentials(b"fuzz", auth_protocol="sha", auth_password=b"fuzz-auth-key",
                          priv_protocol="aes", priv_password=b"fuzz-priv-key")

# Run every input through both varbind loops when the C one (drivers/snmp/_bervb.c) is built.
C_LOOP = ber.use_varbind_loop() == "c"

def check_v3(data: bytes) -> None:
    try:
        env = usm.decode_envelope(data)
        keys = V3_USER.localized(env.engine_id)  # bounded caches, whatever the engine IDs
        usm.authentic(data, env, keys)
        if env.encrypted:
            plain = usm.decrypt(keys, env.boots, env.time, env.priv_params, env.scoped)
            usm.decode_scoped_pdu(plain, padded=True)
        else:
            usm.decode_scoped_pdu(env.scoped)
    except ber.BerError as exc:
        if not 0 <= exc.offset <= len(data):
            raise AssertionError(f"BerError offset {exc.offset} outside {len(data)} bytes") from exc
    except usm.UsmError:
        pass


def decoded(data: bytes) -> ber.Message | ber.BerError:
    try:
        return ber.decode_message(data)
    except ber.BerError as exc:
        return exc


def check(data: bytes) -> None:
    check_v3(data)
    got = decoded(data)
    if C_LOOP:
        # The C varbind loop (the default) and its Python twin: the same message or the same
        # error, word for word.
        ber.use_varbind_loop("python")
        try:
            twin = decoded(data)
        finally:
            ber.use_varbind_loop("c")
        if repr(twin) != repr(got):
            raise AssertionError(f"C loop gave {got!r}, Python loop {twin!r}")
    if isinstance(got, ber.BerError):
        if not 0 <= got.offset <= len(data):
            raise AssertionError(f"BerError offset {got.offset} outside {len(data)} bytes")
        return
    msg = got
    HARNESS.counts["decoded"] += 1
    again = ber.encode_message(
        community=msg.community, pdu_type=msg.pdu_type, request_id=msg.request_id,
        error_status=msg.error_status, error_index=msg.error_index, version=msg.version,
        varbinds=[(oid, tag, value) for (oid, value), tag in zip(msg.varbinds, msg.tags,
                                                                 strict=True)],
    )
    if ber.decode_message(again) != msg:
        raise AssertionError("decode(encode(decode(x))) differs from decode(x)")


def seed_corpus(into: Path) -> int:
    """Responses over the recorded walks, in the encodings agents send."""
    from pyasn1.codec.ber import encoder
    from pysnmp.proto import api
    from rackwarden.drivers.snmp.snmprec import parse_oid

    v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    seeds: list[bytes] = []
    for path in sorted(FIXTURES.glob("*.snmprec"))[:4]:
        records: list[tuple[tuple[int, ...], int, object]] = []
        for line in path.read_text(encoding="latin-1").splitlines()[:400]:
            oid, tag_text, value = line.split("|", 2)
            tag = int(tag_text.rstrip("x"))
            raw = bytes.fromhex(value) if tag_text.endswith("x") else value.encode("latin-1")
            if tag in (2, 65, 66, 67, 70):
                records.append((parse_oid(oid), tag, int(value)))
            elif tag in (4, 64, 68):
                records.append((parse_oid(oid), tag, raw))
            elif tag == 6:
                records.append((parse_oid(oid), tag, parse_oid(value)))
            elif tag in (5, 128, 129, 130):
                records.append((parse_oid(oid), tag, None))
        for start in range(0, len(records), 57):
            chunk = records[start : start + 57]
            for long_form in (False, True):
                seeds.append(ber.encode_message(
                    community=path.stem.encode(), pdu_type=ber.RESPONSE, request_id=start + 1,
                    error_status=0, error_index=0, long_form=long_form,
                    varbinds=[(o, t, v) for o, t, v in chunk],  # type: ignore[misc]
                ))
    # pyasn1's own encodings of a few of them, definite and indefinite lengths.
    for data in seeds[:6]:
        msg = ber.decode_message(data)
        pdu = v2c.ResponsePDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, [(o, v2c.Null("")) for o, _ in msg.varbinds[:20]])
        out = v2c.Message()
        v2c.apiMessage.set_defaults(out)
        v2c.apiMessage.set_community(out, msg.community)
        v2c.apiMessage.set_pdu(out, pdu)
        seeds.append(encoder.encode(out))
        seeds.append(encoder.encode(out, defMode=False))
    seeds.append(ber.encode_getbulk(b"public", 1, 1, 51, [(1, 3, 6, 1, 2, 1, 1, 3)]))
    # SNMPv3 messages around a few of the same PDUs: authPriv under the fuzz user's keys (so
    # the digest and decryption paths are reached), and plaintext.
    for n, data in enumerate(seeds[:4]):
        msg = ber.decode_message(data)
        pdu = ber.encode_pdu(pdu_type=msg.pdu_type, request_id=msg.request_id, error_status=0,
                             error_index=0, varbinds=[(o, t, v) for (o, v), t in
                                                      zip(msg.varbinds, msg.tags, strict=True)])
        for flags in (V3_USER.flags, usm.FLAG_REPORTABLE):
            seeds.append(usm.encode_request(
                msg_id=n + 1, flags=flags, engine_id=b"\x80\x00\x1f\x88\x04fuzz", boots=3,
                time=1000 + n, user=b"fuzz", keys=V3_USER.localized(b"\x80\x00\x1f\x88\x04fuzz"),
                pdu=pdu, salt_counter=n))
    return write_seeds(into, seeds)


# A 51-row reply of 7 columns is ~8 KB.
HARNESS = Harness("snmp ber", check, seed_corpus, max_len=9000)

if __name__ == "__main__":
    HARNESS.run(sys.argv)
