"""Device telemetry path (protocol version 2), measured on the real MicroPython
interpreter with the ESP32's heap budget and the firmware compiled to .mpy.

Prints, for the virtual board's 5 sensors and the ESP32's 7:
  - encode rate: ticks appended (TickWriter.append) plus batches built
    (Uplink, journal entries -> BATCH) in records/s, against a baseline in the
    same run: a plain streaming CBOR encoder writing the same records
    ([boot, uptime, k, v, ...] per tick) into one reused buffer (goal >= 0.8x);
    flash I/O is left out of both (a journal stand-in keeps the entries in RAM)
    and so is the time of the sensors' read() (timed alone and subtracted;
    the rate with it is printed too);
  - bytes allocated per record while appending ticks and while building
    batches (gc.mem_alloc() deltas with the collector off; goal <= 30 B);
  - wire bytes per record of a steady-state batch against the same records as
    SenML-JSON (names, units, times; goal <= 0.30).
Figures are printed, not asserted. This machine is much faster than a board
(an ESP32 runs MicroPython very roughly 30-100x slower): read the ratios.

Run: ``python bench/bench_telemetry_device.py``
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cbor2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.firmware.compiled import prelude  # noqa: E402
from tests.mpy import run  # noqa: E402

BOARDS = {
    "virtual": [("uptime", "s"), ("heap_free", "B"), ("temp", "Cel"), ("humidity", "%RH"), ("battery", "V")],
    "esp32": [("uptime", "s"), ("heap_free", "B"), ("mcu_temp", "Cel"), ("rssi", "dBm"), ("temp", "Cel"),
              ("humidity", "%RH"), ("battery", "V")],
}

DEVICE = r"""
import gc, os, time
ROOT = "/tmp/edge-bench-telemetry"
try:
    os.mkdir(ROOT)
except OSError:
    pass
from edgefw import cbor, messages
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink

TABLE = %r
PERIOD = 5000
TICKS = 40
EPOCH = 1795459442000


def values(name, i):
    # Readings as a board's sensors give them (quantized like sensors.py).
    if name == "uptime":
        return 1200 + i * 5
    if name == "heap_free":
        return 81234 - (i * 37) %% 900
    if name == "rssi":
        return -60 - i %% 9
    if name in ("temp", "mcu_temp"):
        return 21.5625 + (i %% 7) / 16
    if name == "humidity":
        return 45.125 + (i %% 5) / 8
    return 3.98828125 - (i %% 3) / 256


class Sensor:
    # Readings made in advance: the bench measures encoding, not sensors.
    def __init__(self, name, unit):
        self.name = name
        self.unit = unit
        self.vals = [values(name, i) for i in range(TICKS)]
        self.i = 0

    def read(self):
        v = self.vals[self.i]
        self.i = (self.i + 1) %% TICKS
        return v


class RamJournal:
    # A journal stand-in in RAM: the same entries, no flash I/O.
    def __init__(self):
        self.raw = bytearray(3072)
        self.entries = []
        self.used = 0
        self.next_seq = 0
        self.acked = 0
        self.low = 0
        self.dropped = 0
        self.refused = 0
        self.fs_full = 0
        self.root = ROOT
        self.keep = True

    def append(self, payload, count):
        n = len(payload)
        if self.keep:
            self.raw[self.used:self.used + n] = payload
            self.entries.append((self.next_seq, count, self.used, n))
            self.used += n
        self.next_seq += count
        return self.next_seq - count

    def read_last_into(self, buf):
        return -1

    def read_into(self, buf, index, at=None):
        # Entries were copied once, before timing: read_into costs nothing here.
        return self.got, None


class Clock:
    boot = 3
    changes = 0

    def epoch(self, boot):
        return (EPOCH, False)

    def known(self):
        return [3]


sensors = [Sensor(n, u) for n, u in TABLE]
j = RamJournal()
tw = TickWriter(j, sensors)
for i in range(TICKS):
    tw.append(3, 1200000 + i * PERIOD)
nrec = j.next_seq

# The real constructor; its table file goes to the bench's folder.
up = Uplink("esp32-3f9a0c12b7d4", "esp32", "0.2.0", Clock(), j, [(n, u) for n, u in TABLE])
raw = up._raw
idx = up._got
got = 0
off = 0
for first, count, o, n in j.entries:
    if off + n > len(raw) or 5 * got >= len(idx):
        break
    raw[off:off + n] = j.raw[o:o + n]
    idx[5 * got] = first >> 16
    idx[5 * got + 1] = first & 0xFFFF
    idx[5 * got + 2] = count
    idx[5 * got + 3] = off
    idx[5 * got + 4] = n
    got += 1
    off += n
j.got = got
payload, end = up._build(got, 0)
batch = bytes(payload)
brec = end

# Rates in records/s, each the best of ROUNDS short runs taken in turn: the
# machine is shared, and the best run is the one least disturbed.
ROUNDS = 8
SLICE = 150000  # us per run
per_tick = len(TABLE)
buf = bytearray(1024)
vals = [s.vals for s in sensors]


def appending():
    tw.append(3, 1200000)
    return per_tick


def reading():
    # The sensors' own read() (this bench's stand-ins): reading is not
    # encoding, so its time is taken out of the append time.
    for s in sensors:
        s.read()
    return per_tick


def building():
    up._build(got, 0)
    return brec


def baseline():
    # A plain streaming encoder: the same records into one reused buffer.
    i = 0
    for t in range(TICKS):
        i = cbor.put_head(buf, i, 0x80, 2 + 2 * per_tick)
        i = cbor.put(buf, i, 3)
        i = cbor.put(buf, i, 1200000 + t * PERIOD)
        for k in range(per_tick):
            i = cbor.put_head(buf, i, 0, k)
            i = cbor.put(buf, i, vals[k][t])
        if i > 900:
            i = 0
    return TICKS * per_tick


def rate(fn):
    n = 0
    t0 = time.ticks_us()
    while time.ticks_diff(time.ticks_us(), t0) < SLICE:
        n += fn()
    return n * 1e6 / time.ticks_diff(time.ticks_us(), t0)


j.keep = False
best = [0, 0, 0, 0]
for _ in range(ROUNDS):
    for i, fn in enumerate((appending, reading, building, baseline)):
        best[i] = max(best[i], rate(fn))
r_append, r_read, r_build, base = best
r_enc = 1 / (1 / r_append - 1 / r_read)  # appending without the reads
ours = 1 / (1 / r_enc + 1 / r_build)

# Allocation per record, collector off.
gc.collect()
gc.disable()
a = gc.mem_alloc()
for _ in range(TICKS):
    tw.append(3, 1200000)
b = gc.mem_alloc()
gc.enable()
gc.collect()
gc.disable()
b0 = gc.mem_alloc()
up._build(got, 0)
c = gc.mem_alloc() - b0 + b
gc.enable()
print("RATE", ours, base, r_enc, r_build, r_append)
print("ALLOC", (b - a) / (TICKS * per_tick), (c - b) / brec)
gc.collect()
for i in range(0, len(batch), 64):
    print("BATCH", batch[i:i + 64].hex())
"""


def senml_json(device_id: str, table: list[tuple[str, str]], batch: dict) -> bytes:
    """The batch's records as a compact SenML-JSON pack (RFC 8428): base name
    and base time in the first record, name, unit, value and time in each."""
    recs = []
    base_s = (batch[7] + batch[8]) / 1000
    for tick in batch[9]:
        for i in range(1, len(tick), 2):
            name, unit = table[tick[i]]
            r: dict = {"n": name}
            if unit:
                r["u"] = unit
            r["v"] = tick[i + 1]
            r["t"] = tick[0] / 1000
            if not recs:
                r = {"bn": device_id + "/", "bt": base_s, **r}
            recs.append(r)
    return json.dumps(recs, separators=(",", ":")).encode()


def main() -> int:
    print("device telemetry, protocol 2 (MicroPython Unix port, heap = esp32 budget, firmware as .mpy)")
    for board, table in BOARDS.items():
        out = run(prelude() + DEVICE % (table,), heap="esp32", timeout=120).stdout.decode()
        lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if not line.startswith("BATCH"))
        ours, base, r_append, r_build, r_with_reads = (float(x) for x in lines["RATE"].split())
        a_tick, a_batch = (float(x) for x in lines["ALLOC"].split())
        payload = bytes.fromhex("".join(line[6:] for line in out.splitlines() if line.startswith("BATCH")))
        batch = cbor2.loads(payload)
        nrec = sum(len(t) // 2 for t in batch[9])
        js = senml_json(batch[1], table, batch)
        print(f"{board}: {len(table)} sensors, a tick every 5 s")
        print(f"  encode (append + batch) rec/s  {ours:12,.0f}")
        print(f"  baseline streaming CBOR rec/s  {base:12,.0f}   ratio {ours / base:.2f}  (goal >= 0.8)")
        print(f"    of which: appending rec/s    {r_append:12,.0f}, building batches rec/s {r_build:12,.0f}")
        print(f"    appending with the sensors' read() rec/s {r_with_reads:10,.0f}  (reads are not encoding:"
              " timed alone and taken out above)")
        print(f"  bytes allocated per record     {a_tick:8.1f} appending, {a_batch:6.1f} building a batch"
              "  (goal <= 30)")
        print(f"  batch of {nrec} records          {len(payload):6d} B  {len(payload) / nrec:6.2f} B/record")
        print(f"  same records as SenML-JSON     {len(js):6d} B  {len(js) / nrec:6.2f} B/record")
        print(f"  BATCH / SenML-JSON             {len(payload) / len(js):8.3f}  (goal <= 0.30)")
    shutil.rmtree("/tmp/edge-bench-telemetry", ignore_errors=True)  # the uplink's table file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
