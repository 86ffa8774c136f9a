"""Serial frames (docs/protocol.md section 1): encoder, streaming decoder, shared vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.frames import (BAD_CRC, MAX_LINE, MAX_PAYLOAD, PREFIX, REASONS, TOO_LONG,
                               BadFrame, ConsoleLine, Frame, FrameDecoder, crc32, encode_frame)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "frames.json").read_text())
VALID = [v for v in VECTORS if "payload_hex" in v]
INVALID = [v for v in VECTORS if "reason" in v]


def decode_all(data: bytes, chunks: list[int] | None = None) -> list:
    """Events from feeding ``data`` whole, or cut at the given offsets."""
    dec = FrameDecoder()
    if chunks is None:
        return dec.feed(data) + dec.close()
    events, start = [], 0
    for cut in sorted(chunks) + [len(data)]:
        events += dec.feed(data[start:cut])
        start = cut
    return events + dec.close()


def test_crc_is_crc32_iso_hdlc():
    assert crc32(b"123456789") == 0xCBF43926


def test_vectors_cover_the_cases_the_spec_names():
    assert {v["reason"] for v in INVALID} == set(REASONS)
    sizes = {len(bytes.fromhex(v["payload_hex"])) for v in VALID}
    assert 0 in sizes and MAX_PAYLOAD in sizes


@pytest.mark.parametrize("case", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_to_its_payload(case):
    payload = bytes.fromhex(case["payload_hex"])
    dec = FrameDecoder()
    assert dec.feed(case["line"].encode("ascii")) == [Frame(payload)]
    assert dec.stats.frames == 1 and dec.stats.bad_total == 0
    if not case.get("decode_only"):
        assert encode_frame(payload) == case["line"].encode("ascii")


@pytest.mark.parametrize("case", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_rejected_with_its_reason(case):
    dec = FrameDecoder()
    events = dec.feed(case["line"].encode("ascii"))
    assert [type(e) for e in events] == [BadFrame]
    assert events[0].reason == case["reason"]
    assert dec.stats.bad == {case["reason"]: 1} and dec.stats.frames == 0


def test_max_line_is_the_length_of_the_largest_frame():
    line = encode_frame(bytes(MAX_PAYLOAD))
    assert len(line) == MAX_LINE + 2 == 1383
    assert FrameDecoder().feed(line) == [Frame(bytes(MAX_PAYLOAD))]


def test_encoder_refuses_a_payload_over_the_limit():
    with pytest.raises(ValueError, match="1025 bytes.*1024"):
        encode_frame(bytes(MAX_PAYLOAD + 1))


@given(st.binary(max_size=MAX_PAYLOAD))
def test_any_payload_round_trips(payload):
    line = encode_frame(payload)
    assert line.startswith(PREFIX) and line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert FrameDecoder().feed(line) == [Frame(payload)]


def test_console_text_and_frames_interleave_in_order():
    a, b = encode_frame(b"one"), encode_frame(b"two")
    stream = b">>> print(1)\r\n1\r\n" + a + b"\r\n" + b"x #EA:not at start\n" + b
    assert decode_all(stream) == [ConsoleLine(b">>> print(1)"), ConsoleLine(b"1"), Frame(b"one"),
                                  ConsoleLine(b""), ConsoleLine(b"x #EA:not at start"), Frame(b"two")]


def test_lf_and_crlf_endings_give_the_same_events():
    frame = encode_frame(b"payload")
    assert decode_all(b"hi\r\n" + frame) == decode_all(b"hi\n" + frame.replace(b"\r\n", b"\n"))


def test_a_prompt_without_newline_is_pending_text():
    dec = FrameDecoder()
    assert dec.feed(b"MicroPython v1.29\r\n>>> ") == [ConsoleLine(b"MicroPython v1.29")]
    assert dec.pending_text() == b">>> "
    assert dec.feed(b"1+1\r\n") == [ConsoleLine(b">>> 1+1")]
    assert dec.pending_text() == b""


@pytest.mark.parametrize("partial", [b"#", b"#E", b"#EA", b"#EA:", b"#EA:AAEC"])
def test_a_line_that_may_become_a_frame_is_not_pending_text(partial):
    dec = FrameDecoder()
    dec.feed(partial)
    assert dec.pending_text() == b""


def test_an_overlong_frame_line_is_dropped_as_it_streams_with_bounded_memory():
    dec = FrameDecoder()
    events = dec.feed(PREFIX)
    for _ in range(1000):                      # 1 MB of one line, in 1 KB chunks
        events += dec.feed(b"A" * 1024)
        assert dec.buffered <= MAX_LINE + 1
    assert [e.reason for e in events] == [TOO_LONG]
    assert len(events[0].line) == MAX_LINE + 1
    assert dec.pending_text() == b""
    # It resynchronises at the line ending: the next frame is intact.
    assert dec.feed(b"AAAA:00000000\r\n" + encode_frame(b"next")) == [Frame(b"next")]
    assert dec.stats.bad == {TOO_LONG: 1} and dec.stats.frames == 1


def test_a_frame_line_just_over_the_limit_is_too_long_whatever_the_chunking():
    line = PREFIX + b"A" * (MAX_LINE - len(PREFIX) + 1) + b"\r\n"
    whole = decode_all(line)
    assert [e.reason for e in whole] == [TOO_LONG]
    assert decode_all(line, list(range(len(line)))) == whole


def test_an_overlong_console_line_is_delivered_in_pieces_without_loss():
    text = bytes(range(32, 127)) * 50            # 4750 bytes, no newline
    dec = FrameDecoder()
    events = []
    for i in range(0, len(text), 7):
        events += dec.feed(text[i:i + 7])
        assert dec.buffered <= MAX_LINE + 1
    events += dec.feed(b"\r\n")
    assert all(isinstance(e, ConsoleLine) for e in events)
    assert all(len(e.text) <= MAX_LINE for e in events)
    assert b"".join(e.text for e in events) == text


def test_the_tail_of_a_long_console_line_is_never_taken_for_a_frame():
    line = b"x" * MAX_LINE + b"y" + encode_frame(b"hidden")
    events = decode_all(line)
    assert not any(isinstance(e, Frame) for e in events)
    assert b"".join(e.text for e in events) == line.rstrip(b"\r\n")


def test_close_ends_an_unterminated_last_line():
    dec = FrameDecoder()
    assert dec.feed(encode_frame(b"last")[:-2]) == []
    assert dec.close() == [Frame(b"last")]
    assert dec.close() == []


def test_stats_count_frames_console_lines_and_bad_frames_by_reason():
    good = encode_frame(b"ok")
    bad = good.replace(good[-10:-2], b"%08x" % (crc32(b"ok") ^ 0xFF))
    dec = FrameDecoder()
    dec.feed(b"boot\r\n" + good + bad + bad + b"#EA:\r\n" + good)
    assert dec.stats.frames == 2
    assert dec.stats.console_lines == 1
    assert dec.stats.bad == {BAD_CRC: 2, "malformed": 1}
    assert dec.stats.bad_total == 3


# -- property tests over streams of frames and garbage

_payloads = st.one_of(st.binary(max_size=64), st.binary(min_size=MAX_PAYLOAD - 3, max_size=MAX_PAYLOAD))


def _corrupt_crc(payload: bytes) -> bytes:
    line = encode_frame(payload)
    return line[:-3] + (b"0" if line[-3:-2] != b"0" else b"1") + b"\r\n"


_parts = st.one_of(
    _payloads.map(encode_frame),
    _payloads.map(_corrupt_crc),
    st.binary(max_size=200),                                            # line noise, any bytes
    st.lists(st.sampled_from([PREFIX, b"#E", b"\r", b"\n", b"AAAA", b"=", b":", b"00000000",
                              b">>> "]), max_size=12).map(b"".join),    # frame-like debris
    st.integers(MAX_LINE - 10, MAX_LINE + 400).map(lambda n: PREFIX + b"Q" * n + b"\n"),
    st.integers(MAX_LINE - 10, 3 * MAX_LINE).map(lambda n: b"c" * n + b"\r\n"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_parts, max_size=12), st.data())
def test_any_chunking_of_a_stream_yields_the_same_events(parts, data):
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert decode_all(stream, cuts) == decode_all(stream)


@settings(max_examples=20, deadline=None)
@given(st.lists(_parts, max_size=6))
def test_byte_by_byte_feeding_yields_the_same_events(parts):
    stream = b"".join(parts)
    assert decode_all(stream, list(range(len(stream)))) == decode_all(stream)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300).filter(lambda g: PREFIX not in g), _payloads),
                max_size=8), st.data())
def test_garbage_between_frames_never_affects_later_frames(pairs, data):
    # Each frame follows garbage that ends with a line ending: every frame survives.
    stream = b"".join(garbage + b"\n" + encode_frame(payload) for garbage, payload in pairs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    frames = [e.payload for e in decode_all(stream, cuts) if isinstance(e, Frame)]
    assert frames == [payload for _, payload in pairs]
