"""Agent messages, protocol version 2 (docs/protocol.md section 2): codec, shared vectors, hostile payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import BadInput
from edge_agent.messages import (MAX_MESSAGE, MAX_UINT, OTA_COMPONENTS, OTA_STATES, OTA_WHY, Ack,
                                 Batch, Hello, MessageError, OldProtocol, OtaChunk, OtaOffer,
                                 OtaQuery, OtaState, OtaWindow, Refuse, Sensors, Status, Time,
                                 decode_message, encode_message, message_fields, table_id)
from edge_agent.names import is_device_id, is_sensor_name, is_unit

VECTORS_DIR = Path(__file__).parents[1] / "vectors"
VECTORS = json.loads((VECTORS_DIR / "messages.json").read_text())
BAD = json.loads((VECTORS_DIR / "bad_messages.json").read_text())
REJECTED = [c for c in BAD if not c.get("accept")]
ACCEPTED = [c for c in BAD if c.get("accept")]
NAMES = json.loads((VECTORS_DIR / "names.json").read_text())
CLASSES = {"HELLO": Hello, "TIME": Time, "SENSORS": Sensors, "BATCH": Batch, "ACK": Ack,
           "REFUSE": Refuse, "STATUS": Status, "OTA_QUERY": OtaQuery, "OTA_OFFER": OtaOffer,
           "OTA_WINDOW": OtaWindow, "OTA_CHUNK": OtaChunk, "OTA_STATE": OtaState}
BYTES_FIELDS = {"manifest", "key_list", "rotation", "data"}    # written as hex in the vectors


def fields_of(case: dict) -> dict:
    """A vector's fields with its byte strings (hex in the JSON) as bytes."""
    return {k: bytes.fromhex(v) if k in BYTES_FIELDS and v is not None else v
            for k, v in case["fields"].items()}


def error_of(payload: bytes) -> MessageError:
    with pytest.raises(MessageError) as info:
        decode_message(payload)
    return info.value


def test_vectors_hold_every_version_2_message_type():
    assert {v["type"] for v in VECTORS} == set(CLASSES)
    hello = next(v for v in VECTORS if v["type"] == "HELLO")
    assert hello["fields"]["protocol"] == 2 and "refused" in hello["fields"]
    assert {v["fields"]["hello"] for v in VECTORS if v["type"] == "TIME"} == {None, True}
    statuses = [v["fields"] for v in VECTORS if v["type"] == "STATUS"]
    assert any(s["selftest"] for s in statuses) and any(s["counters"] for s in statuses)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_fields(case):
    msg = decode_message(bytes.fromhex(case["hex"]))
    assert type(msg) is CLASSES[case["type"]]
    assert message_fields(msg) == fields_of(case)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_fields_encode_to_its_bytes(case):
    msg = CLASSES[case["type"]](**fields_of(case))
    assert encode_message(msg).hex() == case["hex"]


@pytest.mark.parametrize("case", REJECTED, ids=[c["name"] for c in REJECTED])
def test_bad_message_is_rejected(case):
    error = error_of(bytes.fromhex(case["hex"]))
    assert isinstance(error, BadInput) and error.hint


@pytest.mark.parametrize("case", ACCEPTED, ids=[c["name"] for c in ACCEPTED])
def test_message_with_odd_keys_is_accepted(case):
    msg = decode_message(bytes.fromhex(case["hex"]))
    assert type(msg) is CLASSES[case["type"]]


def test_a_key_true_beside_key_1_does_not_replace_key_1():
    case = next(c for c in ACCEPTED if c["name"] == "TIME with an unknown key true holding text")
    msg = decode_message(bytes.fromhex(case["hex"]))
    assert msg == Time(unix_ms=1763906430123)


@pytest.mark.parametrize("name", ["BATCH of version 1 (type 3)", "HELLO without key 9 (a version 1 agent)",
                                  "HELLO with key 9 = 1"])
def test_version_1_messages_get_an_error_naming_edge_flash(name):
    case = next(c for c in REJECTED if c["name"] == name)
    error = error_of(bytes.fromhex(case["hex"]))
    assert isinstance(error, OldProtocol)
    assert "version 1" in error.message and "edge flash" in (error.hint or "")


def test_the_message_limit_is_the_message_layers_own_and_frames_follow_it():
    from edge_agent import frames

    assert MAX_MESSAGE == 1024 and frames.MAX_PAYLOAD == MAX_MESSAGE
    ok = cbor2.dumps({0: 2, 1: 1763906430123, 20: b"\0" * (MAX_MESSAGE - 17)}, canonical=True)
    assert len(ok) == MAX_MESSAGE
    decode_message(ok)
    over = cbor2.dumps({0: 2, 1: 1763906430123, 20: b"\0" * (MAX_MESSAGE - 16)}, canonical=True)
    assert "1024-byte limit" in error_of(over).message


def test_sensors_table_id_is_the_crc_of_the_table_bytes_as_sent():
    table = [["temp", "Cel"]]
    # A non-shortest length for the array: the CRC covers these bytes, not a re-encoding.
    raw = b"\x98\x01" + cbor2.dumps(table, canonical=True)[1:]
    import zlib
    msg = b"\xa4\x00\x06\x01" + cbor2.dumps("esp32-1") + b"\x02" + cbor2.dumps(zlib.crc32(raw)) + b"\x03" + raw
    assert decode_message(msg) == Sensors("esp32-1", zlib.crc32(raw), table)
    assert zlib.crc32(raw) != table_id(table)


@pytest.mark.parametrize("kind,check", [("device_id", is_device_id), ("sensor_name", is_sensor_name),
                                        ("unit", is_unit)])
def test_one_rule_for_ids_names_and_units_holds_every_case_of_names_json(kind, check):
    assert all(check(text) for text in NAMES[kind]["valid"])
    assert not any(check(text) for text in NAMES[kind]["invalid"])


@pytest.mark.parametrize("bad_id", NAMES["device_id"]["invalid"])
def test_a_hello_carrying_a_bad_device_id_is_rejected(bad_id):
    hello = Hello("esp32-1", "esp32", "0.2.0", 1, 0, 0, 0, 0)
    payload = cbor2.dumps({**cbor2.loads(encode_message(hello)), 1: bad_id}, canonical=True)
    assert "device id" in error_of(payload).message


_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)
_text32 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=32)
_ids = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True)
_uint = st.integers(0, MAX_UINT)
_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
_values = st.one_of(st.integers(-MAX_UINT, MAX_UINT), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8))
_ticks = st.lists(st.tuples(st.integers(0, 1000), st.lists(st.tuples(st.integers(0, 63), _values),
                                                              min_size=1, max_size=4)),
                  min_size=1, max_size=8).map(
    lambda ts: [[dt, *[x for pair in pairs for x in pair]] for dt, pairs in
                zip(sorted(dt for dt, _ in ts), (p for _, p in ts))])


@st.composite
def _sensors(draw):
    names = draw(st.lists(_names, min_size=1, max_size=8, unique=True))
    table = [[n, draw(st.sampled_from(["", "Cel", "%RH", "V"]))] for n in names]
    return Sensors(draw(_ids), table_id(table), table)


_messages = st.one_of(
    st.builds(Hello, _ids, _text, _text, _uint, _uint, _uint, _uint, _uint, st.integers(2, 9), _uint),
    st.builds(Time, st.integers(1577836800000, 4102444799999), st.none() | st.booleans()),
    st.builds(Ack, _ids, _uint),
    st.builds(Refuse, _ids, st.integers(0, 2**40), st.integers(2**40 + 1, MAX_UINT), _text),
    st.builds(Status, st.just("") | _ids, _text, _text),
    _sensors(),
    st.builds(Batch, _ids, st.integers(0, 2**40), _uint, st.sampled_from([0, 1]), _uint, _uint,
              _uint, _uint, _ticks),
    st.builds(OtaQuery, _ids, st.sampled_from(OTA_COMPONENTS), _text32, _uint, _uint, _uint,
              st.none() | _uint, st.none(), st.sampled_from(OTA_WHY)),
    st.builds(OtaOffer, _ids, st.sampled_from(OTA_COMPONENTS), st.none() | st.binary(min_size=1, max_size=512),
              st.none() | st.binary(min_size=1, max_size=64), st.none() | st.binary(min_size=1, max_size=200),
              st.none() | st.integers(60, 604800)),
    st.builds(lambda i, s, a, extra, r: OtaWindow(i, s, a, a + extra, r), _ids, _uint,
              st.integers(0, 2**40), st.integers(0, 8192), st.booleans()),
    st.builds(OtaChunk, _ids, _uint, st.integers(0, 2**40), st.binary(min_size=1, max_size=960)),
    st.builds(OtaState, _ids, st.sampled_from(OTA_COMPONENTS), _uint, st.sampled_from(OTA_STATES),
              st.none() | _text32, st.none() | _uint, st.none() | _uint, st.none() | _text32,
              st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)),
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_every_message_round_trips(msg):
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_every_message_encodes_deterministically(msg):
    payload = encode_message(msg)
    assert payload == cbor2.dumps(cbor2.loads(payload), canonical=True)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_message_error_only(data):
    try:
        decode_message(data)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(11, 40), st.integers(-40, -1), st.booleans(),
                                    st.floats(allow_nan=False), st.text(max_size=3)),
                          st.recursive(st.none() | st.integers(-2**64, 2**64 - 1) | st.text(max_size=4),
                                       lambda c: st.lists(c, max_size=3), max_leaves=6)),
                max_size=4, unique_by=lambda kv: (type(kv[0]), kv[0])))
def test_unknown_keys_never_change_what_a_time_means(extra):
    """Keys that are not unsigned integers (true == 1 and 1.0 == 1 in Python) are skipped."""
    pairs = [(0, 2), (1, 1763906430123), *extra]
    payload = bytes([0xA0 + len(pairs)]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in pairs)
    assert decode_message(payload) == Time(1763906430123)


_hostile_items = st.one_of(
    st.integers(-2**64, 2**64), st.booleans(), st.none(), st.text(max_size=3),
    st.floats(), st.sampled_from([2**63 - 1, 2**63, -(2**63 - 1), -(2**63), 9.2e18, 9.3e18, 1e308]),
    st.lists(st.integers(0, 3), max_size=2))
_hostile_ticks = st.lists(st.lists(_hostile_items, max_size=7) | st.integers(0, 5), min_size=1, max_size=6)


@settings(max_examples=2000, deadline=None)
@given(_hostile_ticks)
def test_the_fast_tick_check_never_passes_what_the_full_check_refuses(ticks):
    from edge_agent.messages import _ticks_fine, _ticks_problem

    if _ticks_fine(ticks):
        assert _ticks_problem(ticks) is None


@settings(max_examples=300, deadline=None)
@given(_ticks)
def test_the_fast_tick_check_passes_every_good_tick_list_of_numbers_whose_magnitudes_sum_within_63_bits(ticks):
    from edge_agent.messages import _ticks_fine, _ticks_problem

    values = [v for tick in ticks for v in tick[2::2]]
    numeric = all(type(v) is not str for v in values) and sum(map(abs, values)) <= MAX_UINT
    assert _ticks_fine(ticks) == (numeric and _ticks_problem(ticks) is None)


# -- OTA messages (section 7.2)

DEVICE = "esp32-7c9e3a0b1d2f"


def test_every_ota_state_and_no_other_word_is_a_state():
    for state in OTA_STATES:
        assert decode_message(encode_message(OtaState(DEVICE, "agent", 7, state))).state == state
    error = error_of(cbor2.dumps({0: 13, 1: DEVICE, 2: "agent", 3: 7, 4: "done"}))
    assert "key 4 (state)" in error.message and "rolled-back" in error.message and "'done'" in error.message


def test_a_window_without_rewind_leaves_key_5_out_and_reads_back_false():
    payload = encode_message(OtaWindow(DEVICE, 7, 0, 8192))
    assert 5 not in cbor2.loads(payload)
    assert decode_message(payload).rewind is False
    assert cbor2.loads(encode_message(OtaWindow(DEVICE, 7, 0, 8192, rewind=True)))[5] is True


def test_a_chunk_encodes_from_a_memoryview_as_the_bytes_it_shows():
    image = bytes(range(200)) * 10
    view = memoryview(image)[960:1920]
    payload = encode_message(OtaChunk(DEVICE, 7, 960, view))
    assert decode_message(payload) == OtaChunk(DEVICE, 7, 960, image[960:1920])


@pytest.mark.parametrize("msg, words", [
    (OtaChunk(DEVICE, 7, 0, b""), "1 to 960 bytes"),
    (OtaChunk(DEVICE, 7, 0, b"x" * 961), "1 to 960 bytes"),
    (OtaWindow(DEVICE, 7, 4096, 0), "below key 3 (ack)"),
    (OtaQuery(DEVICE, "agent", "1.0.0", 0, 0, 0, resume_held=5), "only with key 7"),
    (OtaQuery(DEVICE, "bootloader", "1.0.0", 0, 0, 0), "agent, firmware"),
    (OtaQuery(DEVICE, "agent", "1.0.0", 0, 0, 0, why="bored"), "boot, schedule, command, resume"),
    (OtaOffer(DEVICE, "agent", retry_s=30), "60 to 604800"),
    (OtaOffer(DEVICE, "agent", manifest="d284"), "a byte string"),
])
def test_an_ota_message_out_of_its_ranges_is_not_encoded(msg, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        encode_message(msg)


def test_a_chunk_of_960_bytes_for_an_ordinary_id_fits_one_message():
    payload = encode_message(OtaChunk(DEVICE, 2**32, 2**31, b"\xff" * 960))
    assert len(payload) <= MAX_MESSAGE
