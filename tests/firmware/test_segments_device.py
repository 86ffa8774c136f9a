"""The device's segments (edgefw/segments.py), on MicroPython, keep the shared
vectors (tests/vectors/segments.json) byte for byte, as the host's do."""

from __future__ import annotations

import json

from tests.mpy import REPO, run

VECTORS = json.loads((REPO / "tests" / "vectors" / "segments.json").read_text())

_CHECK = r"""
import sys, json, binascii, gc
from edgefw.segments import Reassembler, split
v = json.loads(sys.stdin.read())
buf = bytearray(244)
for s in v["splits"]:
    msg = binascii.unhexlify(s["message_hex"])
    got = [binascii.hexlify(bytes(x)).decode() for x in split(msg, s["size"], s["counter"], buf)]
    r = Reassembler()
    out = None
    for x in s["segments_hex"]:
        out = r.feed(binascii.unhexlify(x))
    print(json.dumps([got == s["segments_hex"], out is not None and bytes(out) == msg, r.bad_segments]))
for q in v["sequences"]:
    r = Reassembler()
    got = []
    for item in q["feed"]:
        if item == "reset":
            r.reset()
            got.append(None)
        else:
            m = r.feed(binascii.unhexlify(item))
            got.append(None if m is None else binascii.hexlify(bytes(m)).decode())
    print(json.dumps([got == q["returns"], r.bad_segments]))
"""


def test_device_segments_match_every_shared_vector():
    out = run(_CHECK, heap="esp32", stdin=json.dumps(VECTORS).encode()).stdout.decode().splitlines()
    splits, seqs = VECTORS["splits"], VECTORS["sequences"]
    assert len(out) == len(splits) + len(seqs)
    for v, line in zip(splits, out):
        assert json.loads(line) == [True, True, 0], v["name"]
    for v, line in zip(seqs, out[len(splits):]):
        assert json.loads(line) == [True, v["bad_segments"]], v["name"]


def test_device_reassembler_allocates_nothing_per_segment():
    code = r"""
import gc
from edgefw.segments import Reassembler, split
r = Reassembler()
buf = bytearray(244)
msg = bytes(range(256)) * 4
segs = [bytes(s) for s in split(msg, 244, 3, buf)]
gc.collect()
gc.disable()
before = gc.mem_free()
for _ in range(20):
    for s in segs:
        m = r.feed(s)
after = gc.mem_free()
print(before - after, len(m), len(segs))
"""
    used, n, count = map(int, run(code, heap="esp32").stdout.split())
    assert n == 1024
    # A memoryview of each segment and of each completed message cost a few
    # bytes; no copy of a segment's data (up to 244 bytes) does.
    assert used < 20 * count * 128, used


def test_device_split_refuses_bad_sizes():
    code = r"""
from edgefw.segments import split
n = 0
for msg, size in ((b"", 20), (b"x" * 1037, 244), (b"x", 3)):
    try:
        list(split(msg, size, 0, bytearray(244)))
    except ValueError:
        n += 1
print(n)
"""
    assert run(code, heap="esp32").stdout.split() == [b"3"]
