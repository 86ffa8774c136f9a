"""The host's segments (agent/segments.py) keep docs/protocol.md 5.3, as the
shared vectors (tests/vectors/segments.json) write it; the device is held to
the same vectors in tests/firmware/test_segments_device.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from edge_agent.segments import MAX_MESSAGE, Reassembler, split
from tests.mpy import REPO

VECTORS = json.loads((REPO / "tests" / "vectors" / "segments.json").read_text())


@pytest.mark.parametrize("v", VECTORS["splits"], ids=lambda v: v["name"])
def test_split_writes_the_segments_of_the_vectors(v):
    msg = bytes.fromhex(v["message_hex"])
    got = list(split(msg, v["size"], v["counter"]))
    assert [s.hex() for s in got] == v["segments_hex"]
    assert all(len(s) <= v["size"] for s in got)


@pytest.mark.parametrize("v", VECTORS["splits"], ids=lambda v: v["name"])
def test_reassembler_joins_the_segments_of_the_vectors(v):
    r = Reassembler()
    out = [r.feed(bytes.fromhex(s)) for s in v["segments_hex"]]
    assert out[:-1] == [None] * (len(out) - 1)
    assert out[-1] == bytes.fromhex(v["message_hex"])
    assert r.bad_segments == 0


@pytest.mark.parametrize("v", VECTORS["sequences"], ids=lambda v: v["name"])
def test_reassembler_keeps_the_outcome_of_each_sequence(v):
    r = Reassembler()
    got = []
    for item in v["feed"]:
        if item == "reset":
            r.reset()
            got.append(None)
        else:
            m = r.feed(bytes.fromhex(item))
            got.append(None if m is None else m.hex())
    assert got == v["returns"]
    assert r.bad_segments == v["bad_segments"]


def test_split_refuses_empty_and_oversized_messages_and_tiny_segments():
    for msg, size in ((b"", 20), (b"x" * (MAX_MESSAGE + 1), 244), (b"x", 3)):
        with pytest.raises(ValueError):
            list(split(msg, size, 0))


@given(st.binary(min_size=1, max_size=MAX_MESSAGE), st.integers(4, 244), st.integers(0, 1000))
def test_any_message_survives_any_segment_size(msg, size, counter):
    r = Reassembler()
    out = [r.feed(s) for s in split(msg, size, counter)]
    assert out[-1] == msg and r.bad_segments == 0


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_garbage_never_holds_more_than_one_message(segs):
    r = Reassembler()
    for s in segs:
        m = r.feed(s)
        assert m is None or 0 < len(m) <= MAX_MESSAGE
        assert len(r._buf) <= MAX_MESSAGE
