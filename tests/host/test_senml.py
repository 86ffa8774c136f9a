"""SenML resolution (RFC 8428 section 4.6, docs/protocol.md "Times") of BATCH packs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.messages import Batch, MessageError, decode_message
from edge_agent.senml import (BN, BS, BT, BU, BV, BVER, MAX_NAME, MAX_UNIT, N, RELATIVE_LIMIT, S, T,
                              U, V, VB, VD, VS, Record, build_pack, resolve)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "messages.json").read_text())
BATCHES = [v for v in VECTORS if v["type"] == "BATCH"]
DEV = "esp32-7c9e3a"
NOW = 1_763_906_430.0


def batch(pack, *, first_seq=0, boot=3, basis=0, last_uptime_ms=None) -> Batch:
    return Batch(DEV, first_seq, boot, basis, 0, pack, last_uptime_ms)


def one(rec: dict, **kw) -> Record:
    [record] = resolve(batch([{BN: DEV + "/", **rec}]), kw.get("received_at", NOW), None)
    return record


def error_of(pack, **kw) -> str:
    with pytest.raises(MessageError) as info:
        resolve(batch(pack, **kw), NOW, None)
    return str(info.value)


@pytest.mark.parametrize("case", BATCHES, ids=[b["name"] for b in BATCHES])
def test_vector_batches_resolve_to_their_records(case):
    records = resolve(decode_message(bytes.fromhex(case["hex"])), case["received_at"], case["boot_start"])
    expected = case["records"]
    assert [r.seq for r in records] == [e["seq"] for e in expected]
    for r, e in zip(records, expected):
        assert (r.name, r.unit, r.value, r.estimated, r.boot) == \
               (e["name"], e["unit"], e["value"], e["estimated"], e["boot"])
        assert type(r.value) is type(e["value"])
        assert r.t == pytest.approx(e["t"], abs=1e-6)


def test_record_i_gets_sequence_number_first_seq_plus_i():
    pack = [{BN: DEV + "/", N: "a", V: i} for i in range(5)]
    assert [r.seq for r in resolve(batch(pack, first_seq=41), NOW, None)] == [41, 42, 43, 44, 45]


def test_base_values_apply_until_replaced():
    pack = [
        {BN: DEV + "/", BT: 1_800_000_000, BU: "Cel", BV: 20, N: "t1", V: 1.5},
        {N: "t2", V: 2, T: 5},
        {BN: DEV + "/sub/", BU: "V", N: "b", V: 3.25, U: "mV"},
        {N: "c", V: 0, BT: 1_800_000_100},
        {N: "n", BS: 100, S: 5},
    ]
    got = [(r.name, r.unit, r.value, r.t) for r in resolve(batch(pack), NOW, None)]
    assert got == [("t1", "Cel", 21.5, 1_800_000_000.0),
                   ("t2", "Cel", 22, 1_800_000_005.0),
                   ("sub/b", "mV", 23.25, 1_800_000_000.0),
                   ("sub/c", "V", 20, 1_800_000_100.0),
                   ("sub/n", "V", 105, 1_800_000_100.0)]


def test_integer_values_stay_integers_and_base_value_sums_keep_the_type():
    assert one({N: "n", V: 7}).value == 7 and type(one({N: "n", V: 7}).value) is int
    assert type(one({N: "n", V: 7, BV: 0.5}).value) is float


def test_string_and_boolean_values():
    assert one({N: "state", VS: "heating"}).value == "heating"
    assert one({N: "door", VB: False}).value is False


def test_time_at_2_pow_28_is_absolute_and_below_it_is_relative_to_reception():
    assert one({N: "a", V: 1, BT: RELATIVE_LIMIT}).t == RELATIVE_LIMIT
    assert one({N: "a", V: 1, BT: RELATIVE_LIMIT - 1}).t == NOW + RELATIVE_LIMIT - 1
    assert one({N: "a", V: 1, BT: -31, T: 0.5}).t == NOW - 30.5
    assert one({N: "a", V: 1}).t == NOW                 # no time at all: "roughly now"


def test_estimated_times_are_placed_before_the_current_boot_and_marked():
    pack = [{BN: DEV + "/", BT: 12, N: "a", V: 1}, {N: "a", V: 2, T: 30}]
    records = resolve(batch(pack, basis=1, last_uptime_ms=45_000), NOW, NOW - 100)
    # The last record the device holds (uptime 45 s) would sit at the boot's start.
    assert [r.t for r in records] == [NOW - 100 - 33, NOW - 100 - 3]
    assert all(r.estimated for r in records)


def test_estimated_times_without_a_hello_use_the_reception_clock():
    pack = [{BN: DEV + "/", BT: 40, N: "a", V: 1}]
    [record] = resolve(batch(pack, basis=1, last_uptime_ms=45_000), NOW, None)
    assert record.t == NOW - 5 and record.estimated


def test_names_outside_the_device_prefix_are_kept_whole():
    assert one({BN: "other/", N: "x", V: 1}).name == "other/x"
    assert one({BN: DEV + "/", V: 1}).name == DEV + "/"   # nothing left after the prefix
    assert one({BN: "", N: DEV + "/temp", V: 1}).name == "temp"


def test_unknown_labels_are_ignored():
    assert one({N: "a", V: 1, 99: [1, 2], -99: "x", "note": 3, 7: 5}).value == 1


def test_labels_that_only_compare_equal_to_an_integer_are_not_that_label():
    # 2.0 == 2 and True == 1 in Python; neither is SenML label v or u.
    assert one({N: "a", V: 1, True: "mV"}).unit is None
    with pytest.raises(MessageError, match="has no value"):
        resolve(batch([{BN: DEV + "/", N: "a", 2.0: 5}]), NOW, None)


@pytest.mark.parametrize("rec, expected", [
    ({N: "a"}, "has no value"),
    ({N: "a", BV: 5}, "has no value"),
    ({N: "a", V: 1, VS: "1"}, "more than one value: labels 2 (v) and 3 (vs)"),
    ({N: "a", VB: True, VS: "x"}, "more than one value"),
    ({N: "a", V: "1"}, "label 2 (v) must be a finite number"),
    ({N: "a", V: True}, "label 2 (v) must be a finite number"),
    ({N: "a", V: math.nan}, "label 2 (v) must be a finite number"),
    ({N: "a", V: math.inf}, "label 2 (v) must be a finite number"),
    ({N: "a", V: 1e308, BV: 1e308}, "overflows"),
    ({N: "a", VS: 5}, "label 3 (vs) must be text"),
    ({N: "a", VS: "x" * 600}, "label 3 (vs) must be text"),
    ({N: "a", VS: "bell\x07"}, "label 3 (vs) must be text"),
    ({N: "a", VB: 1}, "label 4 (vb) must be true or false"),
    ({N: "a", VD: b"\x00"}, "label 8 (vd) is a data value"),
    ({N: "a", S: "x"}, "label 5 (s) must be a finite number"),
    ({N: 5, V: 1}, "label 0 (n) must be text"),
    ({BN: 5, N: "a", V: 1}, "label -2 (bn) must be text"),
    ({N: "a", V: 1, BT: "now"}, "label -3 (bt) must be a finite number"),
    ({N: "a", V: 1, T: [1]}, "label 6 (t) must be a finite number"),
    ({N: "a", V: 1, T: math.nan}, "label 6 (t) must be a finite number"),
    ({N: "a", V: 1, BV: "1"}, "label -5 (bv) must be a finite number"),
    ({N: "a", V: 1, BS: None}, "label -6 (bs) must be a finite number"),
    ({N: "a", V: 1, U: None}, "label 1 (u) must be text"),
    ({N: "a", V: 1, U: 3}, "label 1 (u) must be text"),
    ({N: "a", V: 1, U: [1]}, "label 1 (u) must be text"),
    ({N: "a", V: 1, BU: {}}, "label -4 (bu) must be text"),
    ({BN: DEV + "/", N: "a", V: 1, "crit_": 1}, "'crit_' (text label) must be understood"),
    ({N: "a", V: 1, U: "x" * (MAX_UNIT + 1)}, "label 1 (u) must be text"),
    ({N: "a", V: 1, BU: "\x1b[31m"}, "label -4 (bu) must be text"),
    ({N: "a b", V: 1}, "is not a SenML name"),
    ({N: "-a", V: 1, BN: ""}, "is not a SenML name"),
    ({N: "a\x1b[2J", V: 1}, "is not a SenML name"),
    ({N: "a" * MAX_NAME, V: 1}, "is not a SenML name"),
    ({BN: "", V: 1}, "is not a SenML name"),
    ({N: "a", V: 1, BVER: 11}, "label -1 (bver) is 11"),
    ({N: "a", V: 1, BVER: "10"}, "label -1 (bver)"),
    ({N: "a", V: 1, "crit_": 1}, "'crit_' (text label) must be understood"),
])
def test_malformed_record_is_rejected_naming_record_and_label(rec, expected):
    pack = [{BN: DEV + "/", N: "ok", V: 1}, rec]
    message = error_of(pack, first_seq=10)
    assert message.startswith("BATCH record 1 (seq 11): ")
    assert expected in message


def test_a_bad_record_anywhere_rejects_the_whole_batch():
    pack = [{BN: DEV + "/", N: "a", V: i} for i in range(10)] + [{N: "a"}]
    with pytest.raises(MessageError, match="record 10"):
        resolve(batch(pack), NOW, None)


_value = st.one_of(st.booleans(), st.integers(-2**53, 2**53), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
                   st.floats(allow_nan=False, allow_infinity=False, width=32))
_sample = st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
                    st.sampled_from([None, "Cel", "%RH", "V"]), _value,
                    st.integers(1_700_000_000_000, 1_800_000_000_000).map(lambda ms: ms / 1000))


@given(st.lists(_sample, min_size=1, max_size=30))
def test_a_pack_built_like_the_firmware_resolves_to_its_samples(samples):
    records = resolve(batch(build_pack(DEV, samples)), NOW, None)
    assert [(r.name, r.unit, r.value) for r in records] == [(n, u, v) for n, u, v, _ in samples]
    assert [r.t for r in records] == pytest.approx([t for *_, t in samples], abs=1e-3)
