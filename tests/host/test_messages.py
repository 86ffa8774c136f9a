"""Agent messages (docs/protocol.md section 2): codec, shared vectors, hostile payloads."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import BadInput
from edge_agent.messages import (MAX_RECORDS, MAX_UINT, Ack, Batch, Hello, MessageError, Status,
                                 Time, decode_message, encode_message, message_fields)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "messages.json").read_text())
CLASSES = {"HELLO": Hello, "TIME": Time, "BATCH": Batch, "ACK": Ack, "STATUS": Status}


def vector_fields(case: dict) -> dict:
    """A vector's fields with SenML labels turned back into integers."""
    fields = dict(case["fields"])
    if "pack" in fields:
        fields["pack"] = [{int(k): v for k, v in rec.items()} for rec in fields["pack"]]
    return fields


def vector(type_name: str) -> dict:
    return next(v for v in VECTORS if v["type"] == type_name)


def raw(type_name: str) -> dict:
    """The CBOR map of the first vector of a type, to mutate."""
    return cbor2.loads(bytes.fromhex(vector(type_name)["hex"]))


def error_of(payload: bytes) -> str:
    with pytest.raises(MessageError) as info:
        decode_message(payload)
    return str(info.value)


def test_vectors_hold_every_message_type_and_a_batch_of_each_time_basis():
    assert {v["type"] for v in VECTORS} == set(CLASSES)
    batches = [v for v in VECTORS if v["type"] == "BATCH"]
    assert {b["fields"]["time_basis"] for b in batches} == {0, 1}
    assert any(b["fields"]["pack"][0]["-3"] >= 2**28 for b in batches)
    assert any(b["fields"]["pack"][0]["-3"] < 0 for b in batches)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_fields(case):
    msg = decode_message(bytes.fromhex(case["hex"]))
    assert type(msg) is CLASSES[case["type"]]
    assert message_fields(msg) == vector_fields(case)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_fields_encode_to_its_bytes(case):
    msg = CLASSES[case["type"]](**vector_fields(case))
    assert encode_message(msg).hex() == case["hex"]


def test_floats_are_encoded_in_their_shortest_exact_width():
    pack = vector_fields(vector("BATCH"))["pack"]
    payload = bytes.fromhex(vector("BATCH")["hex"])
    for value, head in ((41.25, b"\xf9"), (23.700000762939453, b"\xfa"), (47.376887, b"\xfb")):
        assert any(r.get(2) == value for r in pack)
        assert head + cbor2.dumps(value, canonical=True)[1:] in payload


_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64)
_uint = st.integers(0, MAX_UINT)
_messages = st.one_of(
    st.builds(Hello, _text, _text, _text, _uint, _uint, _uint, _uint, _uint),
    st.builds(Time, _uint),
    st.builds(Ack, _text, _uint),
    st.builds(Status, st.just("") | _text, _text, _text),
    st.builds(Batch, _text, st.integers(0, 2**32), _uint, st.just(0), _uint,
              st.lists(st.fixed_dictionaries({0: _text, 2: st.floats(allow_nan=False)}), max_size=5)),
)


@given(_messages)
def test_every_message_round_trips(msg):
    assert decode_message(encode_message(msg)) == msg


def test_message_error_is_a_bad_input_edge_error_and_a_value_error():
    err = MessageError("x")
    assert isinstance(err, BadInput) and isinstance(err, ValueError) and err.hint


# -- hostile and malformed payloads: each gets a MessageError that names the problem

@pytest.mark.parametrize("payload, expected", [
    (b"", "empty"),
    (b"\xff", "not valid CBOR"),
    (b"\x1c", "not valid CBOR"),                                  # reserved additional info
    (bytes.fromhex(VECTORS[0]["hex"])[:-3], "not valid CBOR"),    # truncated
    (b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff", "not valid CBOR"),  # declares a 2**63-byte string
    (b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00", "not valid CBOR"),  # declares 2**32 items
    (b"\xa1\x00\x63\xff\xfe\xfd", "not valid CBOR"),              # invalid UTF-8
    (b"\x81" * 9 + b"\x00", "nesting depth"),
    (b"\x9f" * 600, "nesting depth"),
    (bytes.fromhex(VECTORS[0]["hex"]) + b"\x00", "1 bytes follow"),
    (cbor2.dumps([1, 2]), "not a CBOR map but an array"),
    (cbor2.dumps(7), "not a CBOR map"),
    (cbor2.dumps({1: "dev"}), "no key 0"),
    (cbor2.dumps({0: 9}), "unknown message type 9"),
    (cbor2.dumps({0: "1"}), "unknown message type '1'"),
    (cbor2.dumps({0: True, 1: 5}), "unknown message type True"),
    (bytes(2000), "over the 1024-byte limit"),
    (b"\xa2\x00\x02\x00\x02", "Duplicate"),
])
def test_malformed_payload_is_rejected(payload, expected):
    assert expected in error_of(payload)


@pytest.mark.parametrize("tagged", [
    b"\xc1\x01",                  # epoch date
    b"\xc2\x41\x01",              # bignum
    b"\xd8\x1c\x01",              # shareable value
    b"\xd8\x1c\x81\xd8\x1d\x00",  # shared reference cycle
    b"\xd8\x23\x63a*b",           # regular expression
    b"\xd9\xd9\xf7\x01",          # self-described CBOR
    b"\xda\x00\x01\x00\x00\x01",  # an unassigned tag
])
@pytest.mark.parametrize("where", ["known key", "unknown key", "pack"])
def test_any_cbor_tag_anywhere_is_rejected(tagged, where):
    head = bytes.fromhex(vector("TIME")["hex"])[:3]          # a2 00 02: map of 2, type TIME
    if where == "known key":
        payload = head + b"\x01" + tagged
    elif where == "unknown key":
        payload = b"\xa3" + head[1:] + b"\x01\x00\x18\x63" + tagged
    else:
        msg = raw("BATCH")
        msg[6] = [{0: "temp", 2: cbor2.CBORTag(99, 1)}]
        payload = cbor2.dumps(msg)
    assert "tags are not used" in error_of(payload)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_a_missing_required_key_is_named(case):
    msg = cbor2.loads(bytes.fromhex(case["hex"]))
    optional = {"BATCH": (7,), "TIME": (2,)}.get(case["type"], ())
    for key in [k for k in msg if k != 0 and k not in optional]:
        broken = {k: v for k, v in msg.items() if k != key}
        assert f"has no key {key} (" in error_of(cbor2.dumps(broken))


_WRONG = {"uint": ["7", -1, 1.5, True, None, 2**63, [1]],
          "text": [7, b"dev", None, True, ["a"], "", "a\x1bb", "x" * 600],
          "pack": [{}, "pack", [1, 2], [{}] * (MAX_RECORDS + 1)],
          "basis": [2, -1, "0", True]}
_KINDS = {"HELLO": {1: "text", 2: "text", 3: "text", 4: "uint", 5: "uint", 6: "uint", 7: "uint", 8: "uint"},
          "TIME": {1: "uint"},
          "BATCH": {1: "text", 2: "uint", 3: "uint", 4: "basis", 5: "uint", 6: "pack"},
          "ACK": {1: "text", 2: "uint"},
          "STATUS": {2: "text", 3: "text"}}
_CASES = [(t, k, bad) for t, keys in _KINDS.items() for k, kind in keys.items() for bad in _WRONG[kind]
          if not (t == "STATUS" and k == 3 and bad == "")]


@pytest.mark.parametrize("type_name, key, bad", _CASES,
                         ids=[f"{t}-key{k}-{str(b)[:12]!r}" for t, k, b in _CASES])
def test_a_known_key_of_the_wrong_type_is_named(type_name, key, bad):
    msg = raw(type_name)
    msg[key] = bad
    assert f"{type_name} key {key} (" in error_of(cbor2.dumps(msg))


def test_status_may_carry_an_empty_device_id_but_not_a_control_character():
    msg = raw("STATUS")
    msg[1] = ""
    assert decode_message(cbor2.dumps(msg)).device_id == ""
    msg[1] = "dev\x07"
    assert "control characters" in error_of(cbor2.dumps(msg))


def test_unknown_keys_are_ignored():
    msg = raw("HELLO")
    msg.update({99: [1, {2: 3}], -4: "neg", "x": 1, 9: 1.5})
    assert decode_message(cbor2.dumps(msg)) == decode_message(bytes.fromhex(vector("HELLO")["hex"]))


def test_keys_that_only_compare_equal_to_an_integer_are_not_that_key():
    # 1.0 == 1 and True == 1 in Python; neither is CBOR key 1.
    payload = cbor2.dumps({0: 4, 1.0: "dev", 2: 5})
    assert "has no key 1" in error_of(payload)
    assert "no key 0" in error_of(cbor2.dumps({0.0: 2, 1: 5}))


def test_estimated_batch_requires_key_7():
    msg = raw("BATCH")
    msg[4] = 1
    assert "no key 7" in error_of(cbor2.dumps(msg))
    msg[7] = "soon"
    assert "BATCH key 7 (last_uptime_ms)" in error_of(cbor2.dumps(msg))


def test_batch_sequence_numbers_may_not_pass_the_registry_limit():
    msg = raw("BATCH")
    msg[2] = MAX_UINT
    assert "pass 2**63-1" in error_of(cbor2.dumps(msg))


def test_batch_pack_records_must_be_maps_and_at_most_256():
    msg = raw("BATCH")
    msg[6] = [{}] * MAX_RECORDS          # empty maps: 256 records fit in a payload
    assert len(decode_message(cbor2.dumps(msg)).pack) == MAX_RECORDS
    msg[6] = [{}] * (MAX_RECORDS + 1)
    assert "at most 256 records" in error_of(cbor2.dumps(msg))
    msg[6] = [{0: "a", 2: 1}, [0, "a"]]
    assert "record 1 is an array" in error_of(cbor2.dumps(msg))


def test_indefinite_lengths_and_any_key_order_are_accepted():
    canonical = bytes.fromhex(vector("ACK")["hex"])
    fields = cbor2.loads(canonical)
    reordered = b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(fields[k]) for k in (2, 1, 0)) + b"\xff"
    assert decode_message(reordered) == decode_message(canonical)


def test_encoder_refuses_invalid_fields():
    with pytest.raises(ValueError, match="boot"):
        encode_message(Hello("d", "b", "v", -1, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="key 7"):
        encode_message(Batch("d", 0, 0, 1, 0, []))
    with pytest.raises(TypeError):
        encode_message({0: 2, 1: 5})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100))
def test_arbitrary_bytes_give_a_message_or_a_message_error(payload):
    try:
        decode_message(payload)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.data())
def test_mutated_vectors_give_a_message_or_a_message_error(case, data):
    payload = bytearray.fromhex(case["hex"])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decode_message(bytes(payload[:cut]))
    except MessageError:
        pass


@pytest.mark.parametrize("selftest, problem", [
    ([1, 2], "a map"),
    ({"sensors": "6"}, "sensors"),
    ({"heap_free": True}, "heap_free"),
    ({"sensor_errors": ["x"] * 40}, "sensor_errors"),
])
def test_a_malformed_self_test_in_status_is_rejected_naming_key_4(selftest, problem):
    payload = cbor2.dumps({0: 5, 1: "dev-1", 2: "ok", 3: "self-test passed", 4: selftest})
    err = error_of(payload)
    assert "4" in err and problem in err, err


def test_a_status_self_test_round_trips():
    st = Status("dev-1", "ok", "self-test passed: 6 sensors",
                {"sensors": 6, "sensor_errors": [], "heap_free": 34000, "fs_free": None, "version": "0.1.0"})
    assert decode_message(encode_message(st)) == st
