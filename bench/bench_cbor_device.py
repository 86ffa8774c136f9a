"""Speed and memory of the device CBOR codec on a telemetry message.

Runs ``edgefw.cbor`` under the real MicroPython Unix port with the ESP32's heap
budget and measures, for one realistic BATCH message of protocol version 2
(a map with small integer keys holding 4 ticks of 5 records: 20 records):

- dumps and loads per second;
- bytes allocated per dumps and per loads (``gc.mem_alloc()`` deltas with the
  collector off, so every allocation counts);
- on MicroPython, the strict message decoder (``edgefw.messages.decode``, the
  rules of docs/protocol.md 2.1: a well-formedness walk, then the known keys)
  against plain ``loads`` of the same bytes: the price of strictness.

For context it measures in the same run cbor2 (a C extension) on CPython, and
``edgefw.cbor`` itself on CPython (the Raspberry Pi case). The ratio against
cbor2 says how far a pure-Python codec on a small interpreter is from a C codec
on a desktop one: context, not a competition. This machine is much faster than
a board (an ESP32 runs MicroPython very roughly 30-100x slower), and the Unix
port is 64-bit, so its objects are about twice the size of an ESP32's.

Run: ``python bench/bench_cbor_device.py`` (exit status 0; prints a table).
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cbor2  # noqa: E402

from tests.mpy import board_heap, firmware_on_path, run  # noqa: E402

firmware_on_path()
from edgefw import cbor as device_cbor  # noqa: E402

BOARD = "esp32"

# The message, built the same way by both interpreters (common subset).
MESSAGE = r'''
def message():
    # Sensors 0..4: temp (Cel), humidity (%RH), battery (V), rssi (dBm), heap_free (B).
    ticks = []
    for t in range(4):
        ticks.append([t * 5000, 0, 21.5 + t * 0.0625, 1, 45.25 + t * 0.125, 2, 3.98828125,
                      3, -61 - t, 4, 48123 - 16 * t])
    return {0: 7, 1: "dev-7f3a01", 2: 1200, 3: 7, 4: 0, 5: 0, 6: 645081766,
            7: 1763906000000, 8: 5230, 9: ticks}
'''

DEVICE = MESSAGE + r'''
import gc, json, time
from edgefw.cbor import dumps, loads
from edgefw.messages import decode

def rate(fn, arg, seconds):
    n = 0
    t0 = time.ticks_us()
    while True:
        for _ in range(20):
            fn(arg)
        n += 20
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt > seconds * 1000000:
            return n * 1000000 / dt

def allocated(fn, arg):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn(arg)
    used = gc.mem_alloc() - before
    gc.enable()
    return used

msg = message()
data = dumps(msg)
assert loads(data) == msg
gc.collect()
free = gc.mem_free()
print(json.dumps({"size": len(data), "dumps_per_s": rate(dumps, msg, SECONDS),
                  "loads_per_s": rate(loads, data, SECONDS),
                  "decode_per_s": rate(decode, data, SECONDS), "decode_alloc": allocated(decode, data),
                  "dumps_alloc": allocated(dumps, msg), "loads_alloc": allocated(loads, data),
                  "heap_free": free}))
'''


def cpython_rate(fn, arg, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn(arg)
        n += 20
        dt = time.perf_counter() - t0
        if dt > seconds:
            return n / dt


def cpython_alloc(fn, arg) -> int:
    """Peak bytes traced by tracemalloc during one call (CPython's nearest measure)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(arg)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def main() -> int:
    seconds = 1.0
    ns: dict = {}
    exec(MESSAGE, ns)
    msg = ns["message"]()

    proc = run(DEVICE.replace("SECONDS", repr(seconds)), heap=BOARD, timeout=120)
    mpy = json.loads(proc.stdout.decode().strip().splitlines()[-1])

    c2_bytes = cbor2.dumps(msg)
    dev_bytes = device_cbor.dumps(msg)
    assert cbor2.loads(dev_bytes) == msg and device_cbor.loads(c2_bytes) == msg
    rows = [
        ("edgefw.cbor on MicroPython (%s heap %d B)" % (BOARD, board_heap(BOARD)),
         mpy["dumps_per_s"], mpy["loads_per_s"], mpy["dumps_alloc"], mpy["loads_alloc"]),
        ("edgefw.cbor on CPython %d.%d" % sys.version_info[:2],
         cpython_rate(device_cbor.dumps, msg, seconds), cpython_rate(device_cbor.loads, dev_bytes, seconds),
         cpython_alloc(device_cbor.dumps, msg), cpython_alloc(device_cbor.loads, dev_bytes)),
        ("cbor2 %s (C extension) on CPython" % getattr(cbor2, "__version__", ""),
         cpython_rate(cbor2.dumps, msg, seconds), cpython_rate(cbor2.loads, c2_bytes, seconds),
         cpython_alloc(cbor2.dumps, msg), cpython_alloc(cbor2.loads, c2_bytes)),
    ]
    print("CBOR codec, one BATCH message of protocol 2: 20 records in 4 ticks, %d bytes from the device codec "
          "(%d from cbor2, which writes floats as doubles)" % (mpy["size"], len(c2_bytes)))
    print()
    print("%-48s %11s %11s %13s %13s" % ("implementation", "dumps/s", "loads/s", "B alloc/dumps", "B alloc/loads"))
    for name, d, lo, da, la in rows:
        print("%-48s %11.0f %11.0f %13d %13d" % (name, d, lo, da, la))
    c2 = rows[2]
    print()
    print("strict message decoder on MicroPython: %.0f decodes/s (%.2fx plain loads), %d B allocated per decode"
          % (mpy["decode_per_s"], mpy["decode_per_s"] / mpy["loads_per_s"], mpy["decode_alloc"]))
    print("cbor2-on-CPython / edgefw-on-MicroPython speed: dumps %.0fx, loads %.0fx "
          "(C extension on a desktop interpreter vs pure Python on a board interpreter: context only)"
          % (c2[1] / mpy["dumps_per_s"], c2[2] / mpy["loads_per_s"]))
    print("MicroPython heap free after setup: %d B; allocation per call is %.1f%% (dumps) and %.1f%% (loads) "
          "of it; bytes are gc.mem_alloc deltas with gc off (64-bit Unix port), CPython rows are tracemalloc peaks"
          % (mpy["heap_free"], 100.0 * mpy["dumps_alloc"] / mpy["heap_free"],
             100.0 * mpy["loads_alloc"] / mpy["heap_free"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
