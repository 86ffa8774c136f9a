"""docs/protocol.md section 3 holds real bytes: the firmware, run under
micropython with the esp32 heap, produces exactly those frames, decodes each
payload and re-encodes it to the same bytes, and every annotated hex dump
spells the payload of the frame above it."""

from __future__ import annotations

import ast
import re

import cbor2

from tests.firmware.compiled import prelude
from tests.firmware.fakes import DEVICE_FAKES
from tests.mpy import REPO, run

DOC = (REPO / "docs" / "protocol.md").read_text()
SECTION = DOC[DOC.index("## 3. Worked examples"):DOC.index("## 4. Pairing payload")]
FRAMES = re.findall(r"#EA:[A-Za-z0-9+/=]*:[0-9a-f]{8}", SECTION)

# The scenario of section 3: boot 7, three sensors, records 0..119 already
# acknowledged, a host opening the link at uptime 70000 ms.
SCENARIO = r"""
import os
from edgefw import atomic, cbor, frame, messages
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink
ROOT = sys.argv[1]
os.mkdir(ROOT + "/state")
atomic.write(ROOT + "/state/clock", cbor.dumps([6, []]))
DEV = "esp32-3f9a0c12b7d4"

def out(p):
    print(repr(frame.encode(bytes(p)).decode().strip()))

port = Port()
clock = Clock(port, ROOT + "/state/clock")
clock.start()
j = Journal(ROOT + "/journal", 65536, 4096)
j.open()
tw = TickWriter(j, [Sensor("temp", "Cel", *([21.5625] * 41 + [21.625, 21.6875, 21.5625])),
                    Sensor("humidity", "%RH", *([45.125] * 41 + [45.0, 44.875, 45.125])),
                    Sensor("battery", "V", 3.98828125)])
up = Uplink(DEV, "esp32", "0.2.0", clock, j, tw.table)  # before any sample, as at boot
for i in range(40):
    port.t += 1000
    tw.append(clock.boot, clock.uptime_ms())
j.ack(120)
port.t = 56000
for i in range(3):
    tw.append(clock.boot, clock.uptime_ms())
    port.t += 5000
port.t = 70000
t = messages.encode(messages.T_TIME, {1: 1795460010000, 2: True})
out(t)
up.receive(t, port.t)
for _ in range(3):  # HELLO, SENSORS, BATCH
    out(up.poll(port.t)[0])
a = messages.encode(messages.T_ACK, {1: DEV, 2: 129})
out(a)
up.receive(a, port.t)
port.t = 75000
tw.append(clock.boot, clock.uptime_ms())
out(up.poll(port.t)[0])
r = messages.encode(messages.T_REFUSE, {1: DEV, 2: 129, 3: 132, 4: "time_range"})
out(r)
up.receive(r, port.t)
out(up.poll(port.t)[0])
"""

CHECK = r"""
from edgefw import frame, messages
for line in sys.stdin.read().split("\n"):
    if not line:
        continue
    payload = frame.decode(line.encode())
    kind, fields = messages.decode(payload)
    print(repr([kind, payload.hex(), messages.encode(kind, fields) == payload,
                frame.encode(payload).decode().strip() == line]))
"""


def test_the_firmware_produces_exactly_the_frames_of_section_3(tmp_path):
    out = run(prelude() + DEVICE_FAKES + SCENARIO, heap="esp32", args=[str(tmp_path)]).stdout.decode()
    produced = [ast.literal_eval(line) for line in out.splitlines()]
    # The document shows the TIME first, then what the device answers.
    order = [FRAMES.index(f) if f in FRAMES else -1 for f in produced]
    assert -1 not in order and sorted(set(order)) == list(range(len(FRAMES)))


def test_every_frame_of_section_3_decodes_on_the_device_and_re_encodes_to_the_same_bytes():
    out = run(prelude() + CHECK, heap="esp32", stdin="\n".join(FRAMES).encode()).stdout.decode()
    rows = [ast.literal_eval(line) for line in out.splitlines()]
    assert len(rows) == len(FRAMES) == 8
    assert sorted({r[0] for r in rows}) == [1, 2, 4, 5, 6, 7, 8]
    assert all(r[2] and r[3] for r in rows)


def _dumps_in_order() -> list[bytes]:
    """The annotated dumps: leading even-length hex tokens of each line of a code block."""
    dumps = []
    for block in re.findall(r"```\n(.*?)```", SECTION, re.S):
        if block.startswith("#EA:"):
            continue
        data = bytearray()
        for line in block.splitlines():
            for tok in line.split():
                if not re.fullmatch(r"(?:[0-9a-f]{2})+", tok):
                    break
                data += bytes.fromhex(tok)
        dumps.append(bytes(data))
    return dumps


def test_every_annotated_dump_spells_a_payload_of_a_frame_of_section_3():
    import base64

    payloads = [base64.b64decode(f.split(":")[1]) for f in FRAMES]
    dumps = _dumps_in_order()
    assert len(dumps) == 7 and all(d in payloads for d in dumps)


def test_the_walked_through_journal_entry_is_the_second_tick_of_the_batch():
    entry = bytes.fromhex(re.search(r"`(88 07 19 [0-9a-f ]+)`", SECTION).group(1).replace(" ", ""))
    assert cbor2.loads(entry) == [7, 61000, 0, 21.625, 1, 45.0, 2, 3.98828125]
    import base64

    batch = cbor2.loads(next(base64.b64decode(f.split(":")[1]) for f in FRAMES
                             if base64.b64decode(f.split(":")[1])[2] == 7))
    tick = batch[9][1]
    assert tick[1:] == cbor2.loads(entry)[2:] and batch[7] + batch[8] + tick[0] == 1795460001000
