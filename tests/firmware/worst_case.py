"""The worst case a board's heap must hold, built for tests and bench/bench_heap.py.

- catch-up: the journal is full of records from an earlier boot that never
  learned the time (estimated epochs, section 2.5), all still to send;
- console flood: noise, oversized frame lines and bad frames written as fast
  as the device reads them, never a 0x03 at a line start;
- sensors: every read raises.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.device import PipeDevice, install
from tests.mpy import FIRMWARE, run

# Fills the journal from an earlier boot (boot 0) with the board's own table,
# as that boot's agent would have: ticks every 100 ms until the journal drops.
_PREFILL = """
import os, sys
os.chdir({fs!r})
try:
    os.mkdir("state")
except OSError:
    pass
from edgefw import config, sensors_build
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.port import Unix
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink
board, cfg = config.load("")
port = Unix()
clock = Clock(port, "state/clock")
clock.start()
jb = cfg["journal_bytes"]
journal = Journal("journal", max_bytes=jb, seg_bytes=min(4096, jb // 4))
journal.open()
found = sensors_build.build(board, port, clock, cfg["device_id"])
ticks = TickWriter(journal, found)
Uplink(cfg["device_id"], board["name"], "0.1.0", clock, journal, ticks.table)
t = 0
while journal.dropped == 0:
    t += 100
    ticks.append(clock.boot, t)
print(journal.next_seq - journal.low, journal.used_bytes)
"""

# Lines the device's boot runs before main.py to make every sensor fail, and
# to print the free heap after each tick (bench figures only).
FAIL_SENSORS = """
import edgefw.sensors as _S
def _fail(self):
    raise OSError(5)
_S.Sensor.read = _fail
"""

TRACE_HEAP = """
import gc as _gc, edgefw.agent as _A
_tick = _A.Agent.tick
def _traced(self):
    r = _tick(self)
    _gc.collect()
    print("#HEAP", _gc.mem_free())
    return r
_A.Agent.tick = _traced
"""


# The modules a running agent keeps imported (boot-time and rare code lives in
# modules dropped after use), and code printing the heap their import takes;
# run after code that puts the firmware on sys.path. Shared by
# tests/firmware/test_heap.py and bench/bench_heap.py.
AGENT_MODULES = ["agent", "boot", "clock", "journal", "link_serial", "sensors", "ticks", "uplink"]
IMPORT_COST = """
import gc
gc.collect()
before = gc.mem_alloc()
for m in %r:
    __import__("edgefw." + m)
gc.collect()
print(gc.mem_alloc() - before)
""" % (AGENT_MODULES,)


def prefill(fs: Path) -> int:
    """Fill the journal of the board folder ``fs`` from an earlier boot; returns the records pending."""
    code = "import sys\nsys.path.insert(0, %r)\n" % str(FIRMWARE) + _PREFILL.format(fs=str(fs))
    out = run(code, heap=4 * 1024 * 1024, timeout=120).stdout.split()
    return int(out[0])


def board_folder(tmp: Path, board: str) -> Path:
    return install(tmp / "fs", board=board, sample_period_ms=100)


class Flood:
    """Writes hostile console input to a device as fast as it reads it."""

    def __init__(self, dev: PipeDevice):
        self.dev = dev
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        chunks = [
            b"#EA:" + b"A" * 2000 + b"\n",                   # oversized frame line
            b"#EA:AAAA:00000000\n",                           # bad CRC
            b"#EA:!!!!:00000000\n",                           # bad base64
        ]
        i = 0
        while not self.stop.is_set():
            noise = os.urandom(400).replace(b"\x03", b"x\x03").replace(b"\n\x03", b"\nx")
            data = chunks[i % len(chunks)] if i % 4 == 3 else noise + b"\n"
            self.dev.write(data)   # each write is below PIPE_BUF: never splits a host frame
            self.sent += len(data)
            i += 1

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def device(fs: Path, board: str, heap: int | None = None, before_main: str = "") -> PipeDevice:
    """A pipe device on ``fs`` whose boot runs ``before_main`` first; ``heap`` overrides the budget."""
    dev = PipeDevice(fs, board=board)
    if heap is not None:
        dev.heap = heap
    if before_main:
        main = fs / "main.py"
        main.write_text(before_main + main.read_text())
    return dev
