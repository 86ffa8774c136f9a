"""Build ``tests/vectors/segments.json`` from docs/protocol.md section 5.3.

Run ``python tests/host/build_segment_vectors.py`` to rewrite it. Nothing here
imports ``edge_agent`` or ``edgefw``: the vectors test both sides' segment
code, so the splits are written out here from the section's rules, and the
bad sequences (with the outcome the section gives) by hand.

Each ``splits`` entry: a message (hex), the segment size (MTU - 3) and the
message counter, and the exact segments a sender writes. Each ``sequences``
entry: what a receiver is fed (hex segments, or ``"reset"`` for a
disconnect), what each feed returns (hex of a completed message, or null),
and ``bad_segments`` at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parents[1] / "vectors" / "segments.json"


def message(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def cut(msg: bytes, size: int, counter: int) -> list[bytes]:
    n = len(msg)
    first = min(n, size - 3)
    out = [bytes([0x80 | counter % 128, n // 256, n % 256]) + msg[:first]]
    rest = msg[first:]
    index = 1
    while rest:
        out.append(bytes([index % 128]) + rest[:size - 1])
        rest = rest[size - 1:]
        index += 1
    return out


SPLITS = [
    ("one byte at the default MTU", 1, 20, 0),
    ("fills the first segment exactly", 17, 20, 1),
    ("one byte into a continuation", 18, 20, 2),
    ("a HELLO-sized message at MTU 23", 120, 20, 127),
    ("counter kept modulo 128", 40, 20, 200),
    ("largest plain message at MTU 23", 1024, 20, 5),
    ("largest sealed message at MTU 23", 1036, 20, 6),
    ("one segment at MTU 247", 241, 244, 7),
    ("two segments at MTU 247", 242, 244, 8),
    ("largest sealed message at MTU 247", 1036, 244, 9),
    ("continuation index wraps after 127", 600, 5, 10),
]

H = bytes.fromhex

SEQUENCES: list[tuple[str, list[Any], list[str | None], int]] = [
    ("an empty write is a bad segment", [""], [None], 1),
    ("a first segment shorter than 3 bytes", ["8000"], [None], 1),
    ("a length of 0", ["800000"], [None], 1),
    ("a length above 1036", ["80040d" + "00" * 10], [None], 1),
    ("the largest length field", ["ffffff00"], [None], 1),
    ("a first segment with more data than its length", ["800001aabb"], [None], 1),
    ("a continuation with no message in progress", ["01aa"], [None], 1),
    ("a continuation with the wrong index", ["800005aabb", "02cc"], [None, None], 1),
    ("a continuation with index 0", ["800005aabb", "00cc"], [None, None], 1),
    ("data running past the length", ["800004aabb", "01ccddee"], [None, None], 1),
    ("a first segment drops the unfinished message",
     ["800005aabb", "810002ccdd"], [None, "ccdd"], 1),
    ("a bad first segment after an unfinished message counts both",
     ["800005aabb", "810000"], [None, None], 2),
    ("the receiver recovers at the next first segment",
     ["01aa", "800003aabb", "02dd", "820002eeff"], [None, None, None, "eeff"], 2),
    ("a header-only continuation adds nothing",
     ["800002aa", "01", "02bb"], [None, None, "aabb"], 0),
    ("a disconnect drops the unfinished message uncounted",
     ["800004aabb", "reset", "01ccdd"], [None, None, None], 1),
    ("a message can follow a completed one",
     ["800001aa", "810002bb", "01cc"], ["aa", None, "bbcc"], 0),
    ("a 600-byte first segment of a 600-byte message",
     ["800258" + "5a" * 600], ["5a" * 600], 0),
]


def build() -> dict[str, Any]:
    splits = []
    for name, n, size, counter in SPLITS:
        msg = message(n, counter)
        splits.append({"name": name, "message_hex": msg.hex(), "size": size, "counter": counter,
                       "segments_hex": [s.hex() for s in cut(msg, size, counter)]})
    sequences = [{"name": name, "feed": feed, "returns": returns, "bad_segments": bad}
                 for name, feed, returns, bad in SEQUENCES]
    return {"max_message": 1036, "splits": splits, "sequences": sequences}


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
