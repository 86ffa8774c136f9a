"""The device's frame codec agrees byte for byte with the shared vectors
(tests/vectors/frames.json), which the host's codec is tested against too."""

from __future__ import annotations

import json

from tests.mpy import REPO, run

VECTORS = json.loads((REPO / "tests" / "vectors" / "frames.json").read_text())

_CHECK = r"""
import sys, binascii
from edgefw import frame
for raw in sys.stdin.buffer.read().split(b"\n"):
    if not raw:
        continue
    kind, hexline, hexpayload = raw.split(b" ")
    line = binascii.unhexlify(hexline)
    try:
        got = frame.decode(line)
        out = "ok " + binascii.hexlify(got).decode()
    except ValueError as e:
        out = "err " + str(e).replace(" ", "_")
    if kind == b"enc":
        enc = frame.encode(binascii.unhexlify(hexpayload))
        out += " " + ("same" if enc == line else "differs")
    print(out)
"""


def test_device_frame_codec_matches_every_shared_vector():
    lines = []
    for v in VECTORS:
        kind = "bad" if "reason" in v else ("dec" if v.get("decode_only") else "enc")
        lines.append(f"{kind} {v['line'].encode().hex()} {v.get('payload_hex', '') or '-'}")
    # '-' stands for an empty payload in the line format above.
    stdin = "\n".join(lines).replace(" -", " ").encode() + b"\n"
    out = run(_CHECK, heap="esp32", stdin=stdin).stdout.decode().splitlines()
    assert len(out) == len(VECTORS)
    for v, result in zip(VECTORS, out):
        if "reason" in v:
            assert result.startswith("err "), f"{v['name']}: device accepted a bad frame ({result})"
        else:
            assert result.split()[:2] == ["ok", v["payload_hex"]] or (
                v["payload_hex"] == "" and result.split() [:1] == ["ok"]), f"{v['name']}: {result}"
            if not v.get("decode_only"):
                assert result.endswith(" same"), f"{v['name']}: device encodes differently"


def test_device_rejects_garbage_lines_with_value_error_only():
    code = r"""
from edgefw import frame
import os
bad = [b"", b"#EA", b"#EA:", b"#EA::", b"#EA:::::::::", b"#EA:" + b"A" * 5000 + b":00000000",
       b"#EA:\xff\xfe:00000000", b"#EA:AAAA:zzzzzzzz", b"hello", b"#EA:AAAA:-0000001"]
for i in range(300):
    bad.append(b"#EA:" + os.urandom(i % 40) + b":" + os.urandom(8))
n = 0
for b in bad:
    try:
        frame.decode(b)
    except ValueError:
        n += 1
print(n, len(bad))
"""
    n, total = run(code, heap="esp32").stdout.split()
    assert n == total
