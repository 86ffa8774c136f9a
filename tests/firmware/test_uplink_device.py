"""The telemetry path under micropython with a board's heap (the firmware as
.mpy, as flashed): catching up a full journal of an earlier boot, with a real
journal on disk, never runs out of heap and delivers every record once."""

from __future__ import annotations

import ast
import inspect
import io
import shutil

import cbor2

from tests.firmware.compiled import prelude
from tests.firmware.fakes import DEVICE_FAKES
from tests.mpy import firmware_on_path, run

firmware_on_path()

from edgefw import messages  # noqa: E402

T0 = 1_763_906_430_123

SCENARIO = r"""
import gc, os
from edgefw import messages
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink

ROOT = sys.argv[1]
try:
    os.mkdir(ROOT + "/state")
except OSError:
    pass

TABLE = [("uptime", "s"), ("heap_free", "B"), ("mcu_temp", "Cel"), ("rssi", "dBm"),
         ("temp", "Cel"), ("humidity", "%RH"), ("battery", "V")]

def boot():
    port = Port()
    clock = Clock(port, ROOT + "/state/clock")
    clock.start()
    j = Journal(ROOT + "/journal", max_bytes=65536, seg_bytes=4096)
    j.open()
    tw = TickWriter(j, [Sensor(n, u, *(k * 100 + i if k % 2 else 20.0 + i / 16 for i in range(16)))
                        for k, (n, u) in enumerate(TABLE)])
    return port, clock, j, tw, Uplink("esp32-3f9a0c12b7d4", "esp32", "0.2.0", clock, j, tw.table)

if sys.argv[2] == "fill":
    # Boot 0 never hears a host: its journal fills up (and drops its oldest).
    port, clock, j, tw, up = boot()
    for i in range(2600):
        port.t += 5000
        tw.append(clock.boot, clock.uptime_ms())
    print(repr(["filled", j.next_seq, j.dropped, j.used_bytes]))
    sys.exit(0)

# Boot 1 (a new process, as a reboot): a host answers; every batch of boot 0
# goes out and is acknowledged.
port, clock, j, tw, up = boot()
port.t += 700
up.receive(messages.encode(messages.T_TIME, {1: T0}), port.t)
sent = 0
batches = 0
alloc = 0
big = 0
while True:
    # The first batch walks the journal once to estimate boot 0's epoch
    # (garbage the collector takes); later polls are measured with it off.
    gc.collect()
    if batches:
        gc.disable()
    a = gc.mem_alloc()
    payload, wait = up.poll(port.t)
    used = gc.mem_alloc() - a
    gc.enable()
    if payload is None:
        break
    if payload[2] != messages.T_BATCH:
        continue  # HELLO, SENSORS, STATUS
    if not batches:
        used = 0
    kind, f = messages.decode(payload)
    n = 0
    for t in f[9]:
        n += len(t) // 2
    if batches < 3 or f[2] + n >= j.next_seq - 200:
        print(repr(["batch", f[2], n, f[3], f[4], f[7] + f[8] + f[9][0][0], f[7] + f[8] + f[9][-1][0], len(payload)]))
    alloc += used
    big = max(big, used)
    sent += n
    batches += 1
    up.receive(messages.encode(messages.T_ACK, {1: "esp32-3f9a0c12b7d4", 2: f[2] + n}), port.t)
print(repr(["done", sent, batches, j.acked, j.dropped, j.next_seq, alloc, big]))
""".replace("T0", str(T0))


def test_catching_up_a_full_journal_of_an_earlier_boot_fits_the_esp32_heap_and_sends_every_record_once(tmp_path):
    rows = []
    for step in ("fill", "catch up"):
        out = run(prelude() + DEVICE_FAKES + SCENARIO, heap="esp32", args=[str(tmp_path), step],
                  timeout=300).stdout.decode()
        rows += [ast.literal_eval(line) for line in out.splitlines()]
    filled = rows[0]
    done = rows[-1]
    _, sent, batches, acked, dropped, next_seq, alloc, big = done
    assert filled[2] > 0  # the journal was full: the oldest were dropped, counted
    assert acked == next_seq and sent + dropped == next_seq  # every record once, or counted
    batch_rows = [r for r in rows if r[0] == "batch"]
    assert all(r[3] == 0 and r[4] == 1 for r in batch_rows)  # boot 0, estimated epoch
    assert all(r[7] <= messages.MAX_MESSAGE for r in batch_rows)
    # Boot 0's last record lands just before boot 1 started (T0 - 700 ms).
    assert batch_rows[-1][6] == T0 - 700 - 1
    # No payload copy per batch: reading the journal and building a batch
    # allocate a few small objects per entry (64-bit port: twice a board's).
    per_record = alloc / sent
    print(f"bytes allocated per record sent while catching up: {per_record:.1f} "
          f"({batches} batches, at most {big} B in one poll)")
    assert per_record <= 30


# Two Uplinks over one journal, the second sharing the first's scratch buffers
# (as the BLE link's shares the serial link's), polled in turn: each batch is
# built while the other Uplink's last payload (a view of its own buffer) is
# still held, and both go out the same. "alone": one Uplink, for reference.
SHARED = SCENARIO.split('if sys.argv[2] == "fill"')[0] + r"""
def batch(u):
    # The next BATCH of u (after any HELLO, SENSORS, STATUS), or None.
    while True:
        payload, wait = u.poll(port.t)
        if payload is None or payload[2] == messages.T_BATCH:
            return payload

if sys.argv[2] == "fill":
    port, clock, j, tw, up = boot()
    for i in range(400):
        port.t += 5000
        tw.append(clock.boot, clock.uptime_ms())
    sys.exit(0)

port, clock, j, tw, a = boot()
ups = [a]
if sys.argv[2] == "shared":
    ups.append(Uplink("esp32-3f9a0c12b7d4", "esp32", "0.2.0", clock, j, tw.table, share=a))
    assert ups[1]._raw is a._raw and ups[1]._got is a._got and ups[1]._out is not a._out
port.t += 700
for u in ups:
    u.receive(messages.encode(messages.T_TIME, {1: T0}), port.t)
n = 0
while True:
    first = ups[n % len(ups)]
    p = batch(first)
    if p is None:
        break
    if len(ups) > 1:
        other = ups[(n + 1) % 2]
        q = batch(other)
        # p is still first's batch, untouched by other's poll over the shared scratch.
        assert q is not None and len(q) == len(p), n
        for i in range(len(p)):
            assert q[i] == p[i], (n, i)
    for i in range(0, len(p), 64):
        print(bytes(p[i:i + 64]).hex())
    print("-")
    gc.collect()
    f = messages.decode(p)[1]
    end = f[2] + sum(len(t) // 2 for t in f[9])
    for u in ups:
        u.receive(messages.encode(messages.T_ACK, {1: "esp32-3f9a0c12b7d4", 2: end}), port.t)
    n += 1
print("done %d %d" % (j.acked, j.next_seq))
""".replace("T0", str(T0))


def test_two_uplinks_sharing_scratch_buffers_polled_in_turn_each_send_the_batches_one_alone_sends(tmp_path):
    fill = tmp_path / "fill"
    fill.mkdir()
    run(prelude() + DEVICE_FAKES + SHARED, heap="esp32", args=[str(fill), "fill"], timeout=120)
    outs = {}
    for mode in ("alone", "shared"):
        root = tmp_path / mode
        shutil.copytree(fill, root)
        out = run(prelude() + DEVICE_FAKES + SHARED, heap="esp32", args=[str(root), mode],
                  timeout=120).stdout.decode().split("\n")
        outs[mode] = "".join(line if line != "-" else " " for line in out if line).split()
    alone, shared = outs["alone"], outs["shared"]
    done = alone[-2:]
    assert alone[-3] == "done" and done[0] == done[1] and shared[-3:] == alone[-3:]
    assert len(alone) > 6 and shared == alone  # several batches, byte for byte
    seq = None
    for line in alone[:-3]:
        f = cbor2.loads(bytes.fromhex(line))
        assert f[0] == messages.T_BATCH and (seq is None or f[2] == seq)
        seq = f[2] + sum(len(t) // 2 for t in f[9])
    assert seq == int(done[1])


def want(k, i):
    # Sensor k's i-th reading in the test below (run on the device too).
    if k == 0:
        return 240 + 5 * i  # uptime, s: one byte, then two
    if k == 1:
        return 81234 - 37 * i
    if k == 3:
        return -60 - i % 9  # rssi
    if k == 6:
        return 3.98828125 - (i % 3) / 256 if i % 16 else 4.1  # 4.1: a double
    return 21.5625 + (i % 7) / 16 + k


TICKS = inspect.getsource(want) + r"""
import gc
from edgefw.ticks import TickWriter

class RamJournal:
    # Keeps each entry's bytes in one buffer made before: appending allocates nothing.
    def __init__(self):
        self.raw = bytearray(16000)
        self.ends = []
        self.used = 0
        self.next_seq = 0

    def append(self, payload, count):
        n = len(payload)
        self.raw[self.used:self.used + n] = payload
        self.used += n
        self.next_seq += count
        return self.next_seq - count

class Wave:
    # A board's readings (uptime and free heap in integers of two widths,
    # quantized temperatures, rssi, now and then a reading that needs a
    # double): the widths of a tick vary, within the few a board sees.
    def __init__(self, name, k):
        self.name = name
        self.unit = ""
        self.k = k
        self.i = 0
        self.vals = [want(k, i) for i in range(64)]

    def read(self):
        self.i += 1
        return self.vals[self.i % 64]

j = RamJournal()
tw = TickWriter(j, [Wave("s%d" % k, k) for k in range(7)])
for t in range(100):  # warm-up: the views the ticks need are made once
    tw.append(2, 70000 + 5000 * t)
gc.collect()
gc.disable()
a = gc.mem_alloc()
for t in range(100, 400):
    tw.append(2, 70000 + 5000 * t)
used = gc.mem_alloc() - a
gc.enable()
print(repr(used))
for i in range(0, j.used, 64):
    print(bytes(j.raw[i:min(i + 64, j.used)]).hex())
"""


def test_appending_ticks_allocates_nothing_once_warm_and_every_entry_keeps_its_bytes():
    # The tick writer hands the journal a view of its buffer; a new view each
    # tick would allocate in the hot path. The entries must still each hold
    # their own tick: decoded on the host, they are the readings in order.
    out = run(prelude() + TICKS, heap="esp32", timeout=120).stdout.decode().split()
    assert int(out[0]) == 0
    raw = bytes.fromhex("".join(out[1:]))
    entries = []
    dec = cbor2.CBORDecoder(io.BytesIO(raw))
    while dec.fp.tell() < len(raw):
        entries.append(dec.decode())
    assert len(entries) == 400
    for t, e in enumerate(entries):
        assert e[:2] == [2, 70000 + 5000 * t]
        got = dict(zip(e[2::2], e[3::2]))
        for k in range(7):
            i = (t + 1) % 64  # each sensor is read once per tick, from its second value on
            assert got[k] == want(k, i), (t, k)
