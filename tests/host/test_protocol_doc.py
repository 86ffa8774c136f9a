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


def _annotated_hex(block: str) -> bytes:
    hexed = ""
    for line in block.splitlines():
        code = line.strip().split("  ")[0]
        hexed += "".join(t for t in code.split() if re.fullmatch(r"[0-9a-f]+", t))
    return bytes.fromhex(hexed)


def test_the_ota_worked_example_is_what_the_library_signs_and_verifies():
    from edge_ota.cose import Ed25519Signer
    from edge_ota.manifest import Installed, KeyList, Manifest, TrustedState

    section = DOC.split("### 6.6 Worked example")[1].split("\n## 7.")[0]
    blocks = [b for b in re.findall(r"```\n(.*?)```", section, re.S)]
    assert len(blocks) == 2
    signer = Ed25519Signer.from_seed(bytes(range(0x20, 0x40)))
    root = Ed25519Signer.from_seed(bytes(range(0x20)))
    manifest = Manifest.for_image(bytes(range(256)) * 40, board="esp32-devkitc",
                                  component="agent", version="1.3.0", sequence=7,
                                  expires=1800086400, min_version="1.0.0")
    key_list = KeyList.of(1, (signer.public_key, 1830000000))
    shown_manifest, shown_list = (_annotated_hex(b) for b in blocks)
    assert shown_manifest == manifest.sign(signer)
    assert shown_list == key_list.sign(root)
    for value in (signer.public_key.hex(), signer.kid.hex(), root.public_key.hex(),
                  root.kid.hex(), f"{len(shown_manifest)} bytes"):
        assert value in section
    state = TrustedState(root.public_key)
    state.update_key_list(shown_list)
    assert state.verify_manifest(shown_manifest, board="esp32-devkitc", now=1800000000,
                                 installed={"agent": Installed("1.2.0", 6)}) == manifest


def test_section_numbers_in_the_protocol_document_follow_each_other():
    numbers = [int(n) for n in re.findall(r"^## (\d+)\.", DOC, re.M)]
    assert numbers == list(range(1, len(numbers) + 1))
