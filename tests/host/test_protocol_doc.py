"""The worked examples in docs/protocol.md are real: every frame line in it
decodes, and every annotated payload is the frame's payload."""

from __future__ import annotations

import re

from edge_agent.frames import Frame, FrameDecoder
from edge_agent.messages import decode_message
from tests.mpy import REPO

DOC = (REPO / "docs" / "protocol.md").read_text()


def test_every_frame_in_the_protocol_document_is_valid():
    lines = [line for line in DOC.splitlines() if line.startswith("#EA:") and "<" not in line]
    assert len(lines) >= 4
    for line in lines:
        events = FrameDecoder().feed(line.encode() + b"\r\n")
        assert len(events) == 1 and isinstance(events[0], Frame), line
        decode_message(events[0].payload)


def test_the_annotated_hex_of_each_example_is_its_frames_payload():
    # Each example: a frame in a code block, then a code block of annotated
    # hex whose first column(s) are the payload bytes.
    blocks = re.findall(r"```\n(.*?)```", DOC.split("## 3. Worked examples")[1].split("\n## 4.")[0], re.S)
    frame_payload = None
    checked = 0
    for block in blocks:
        if block.startswith("#EA:"):
            frame_payload = FrameDecoder().feed(block.strip().encode() + b"\r\n")[0].payload
            continue
        hexed = ""
        for line in block.splitlines():
            code = line.split("  ")[0] if not line.startswith("   ") else line.strip().split("  ")[0]
            hexed += "".join(t for t in code.split() if re.fullmatch(r"[0-9a-f]+", t))
        assert bytes.fromhex(hexed) == frame_payload, block[:80]
        checked += 1
    frames = [b for b in blocks if b.startswith("#EA:")]
    assert checked == len(frames) >= 7    # TIME, HELLO, SENSORS, BATCH, ACK, REFUSE, STATUS
