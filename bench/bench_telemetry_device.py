"""Device telemetry encoding, measured on the real MicroPython interpreter.

Prints, under the ESP32 heap budget:
  - SenML records encoded per second (journal entries -> BATCH message),
  - bytes allocated per record while encoding,
  - wire bytes per record: our CBOR batch vs the same records as SenML-JSON
    (string labels, compact), the ratio measured on the same batch.
Baselines are measured in the same run; absolute figures are this machine's,
not a board's (an ESP32 runs MicroPython very roughly 30-100x slower).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cbor2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.mpy import run  # noqa: E402

DEVICE = r"""
import gc, time
from edgefw import senml, cbor
names = ["uptime", "heap_free", "mcu_temp", "temp", "humidity", "battery"]
units = {"uptime": "s", "heap_free": "B", "mcu_temp": "Cel", "temp": "Cel", "humidity": "%RH", "battery": "V"}
entries = []
for i in range(6):
    pairs = ["uptime", 1200 + i * 5, "heap_free", 81234 - i * 16, "mcu_temp", 41.3125 + i / 16,
             "temp", 21.5625 + i / 16, "humidity", 45.125, "battery", 3.98828125]
    entries.append(cbor.loads(senml.entry(3, 1200000 + i * 5000, pairs)))
nrec = 6 * 6
epoch = 1795459442000 - 1200000
payload = senml.build("esp32-1-a1b2c3", 120, entries, epoch, 3, 1230000, 0, units)
# Encoding rate
n = 0
t0 = time.ticks_us()
while time.ticks_diff(time.ticks_us(), t0) < 1500000:
    senml.build("esp32-1-a1b2c3", 120, entries, epoch, 3, 1230000, 0, units)
    n += 1
dt = time.ticks_diff(time.ticks_us(), t0) / 1e6
# Allocation per record (gc off for a few builds; mem_alloc counts live bytes)
gc.collect()
gc.disable()
a = gc.mem_alloc()
for _ in range(5):
    senml.build("esp32-1-a1b2c3", 120, entries, epoch, 3, 1230000, 0, units)
b = gc.mem_alloc()
gc.enable()
# Baseline: cbor.dumps of the values alone (no SenML structure)
flat = []
for e in entries:
    flat.extend(e[2:])
m = 0
t0 = time.ticks_us()
while time.ticks_diff(time.ticks_us(), t0) < 1500000:
    cbor.dumps(flat)
    m += 1
dt2 = time.ticks_diff(time.ticks_us(), t0) / 1e6
print("RATE", n * nrec / dt, m * nrec / dt2)
print("ALLOC", (b - a) / (5 * nrec))
print("PAYLOAD", payload.hex())
"""


def senml_json(pack: list[dict]) -> bytes:
    labels = {-2: "bn", -3: "bt", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 6: "t"}
    return json.dumps([{labels[k]: v for k, v in rec.items()} for rec in pack],
                      separators=(",", ":")).encode()


def main() -> int:
    out = run(DEVICE, heap="esp32", timeout=120).stdout.decode()
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    rate, base = (float(x) for x in lines["RATE"].split())
    alloc = float(lines["ALLOC"])
    payload = bytes.fromhex(lines["PAYLOAD"])
    msg = cbor2.loads(payload)
    pack = msg[6]
    nrec = len(pack)
    js = senml_json(pack)
    print("device telemetry encoding (MicroPython Unix port, heap = esp32 budget)")
    print(f"  SenML records encoded/s        {rate:12,.0f}")
    print(f"  baseline: values-only cbor/s   {base:12,.0f}   (ratio {rate / base:.2f})")
    print(f"  bytes allocated per record     {alloc:12.1f}")
    print(f"wire, one batch of {nrec} records")
    print(f"  CBOR BATCH payload             {len(payload):6d} B  {len(payload) / nrec:6.1f} B/record")
    print(f"  same records as SenML-JSON     {len(js):6d} B  {len(js) / nrec:6.1f} B/record")
    print(f"  CBOR / JSON                    {len(payload) / len(js):6.2f}")
    frame_len = 4 + (len(payload) + 2) // 3 * 4 + 11
    print(f"  serial frame (base64 + CRC)    {frame_len:6d} B  {frame_len / nrec:6.1f} B/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
