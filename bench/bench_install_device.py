"""Installing an agent bundle on the device (edgefw.slots, docs/protocol.md
7.7): the streamed, checked unpack of a verified bundle into the inactive
slot, on the real MicroPython interpreter with the ESP32's heap budget and
the firmware compiled to .mpy. The bundle is the agent itself: every module
of edgefw compiled, as `edge ota bundle` would pack it (~100 KB).

Prints, against baselines measured in the same run:
  - heap: the free heap once edgefw.slots is imported (the baseline: what a
    board has for the job), and the least free heap in which the install
    still runs (a ballast takes the rest; tests.mpy.BALLAST), so the peak the
    install adds, collections included;
  - time: one install against the floor: the same files made and their
    bytes copied out of the bundle with the same 512-byte buffer, no check
    (on this machine making a file costs ~0.2 ms: both are dominated by it).
Figures are printed, not asserted. This machine is much faster than a
board: read the ratios.

Run: ``python bench/bench_install_device.py``
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.firmware.compiled import compiled_firmware  # noqa: E402
from tests.firmware.slots_device import bundle  # noqa: E402
from tests.mpy import BALLAST, run  # noqa: E402

PRE = f"import sys, gc\nsys.path[:] = [{str(compiled_firmware())!r}, '.frozen']\n"

TIMED = """
import os, time
from edgefw import slots
LAYOUT = %r
t = slots.AgentTarget("")

BUF = bytearray(512)

def cp(a, b):
    src = open(a, "rb")
    dst = open(b, "wb")
    while True:
        n = src.readinto(BUF)
        if not n:
            break
        dst.write(memoryview(BUF)[:n])
    src.close()
    dst.close()

def copy():
    # The same files, removed, made and written with no check: the floor.
    for name, off, size in LAYOUT:
        try:
            os.remove("copy/" + name.replace("/", "_"))   # made anew, as the slot's are
        except OSError:
            pass
    src = open("ota/dl", "rb")
    try:
        os.mkdir("copy")
    except OSError:
        pass
    for name, off, size in LAYOUT:
        src.seek(off)
        dst = open("copy/" + name.replace("/", "_"), "wb")
        while size >= 512:
            src.readinto(BUF)
            dst.write(BUF)
            size -= 512
        if size:
            src.readinto(memoryview(BUF)[:size])
            dst.write(memoryview(BUF)[:size])
        dst.close()
    src.close()

def install():
    t.install(1, "d", "1")

def best(fn):
    b = None
    for _ in range(5):
        cp("bundle.bin", "ota/dl")   # install deletes it
        gc.collect()
        t0 = time.ticks_us()
        fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        b = dt if b is None or dt < b else b
    return b

print("T copy", best(copy))
print("T install", best(install))
"""

FITS = """
from edgefw import slots
t = slots.AgentTarget("")
FREE = %d
""" + BALLAST + """
try:
    t.install(1, "d", "1")
    print("OK")
except MemoryError:
    print("MEM")
"""


def agent_bundle() -> bytes:
    root = compiled_firmware()
    files = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted((root / "edgefw").iterdir())]
    return bundle(files)


def layout(data: bytes) -> list[tuple[str, int, int]]:
    """(name, offset of its data, size) of each file of a bundle."""
    out, i = [], 4
    while data[i]:
        n = data[i]
        name = data[i + 1:i + 1 + n].decode()
        size = int.from_bytes(data[i + 1 + n:i + 5 + n], "big")
        out.append((name, i + 5 + n, size))
        i += 5 + n + size
    return out


def fits(work: Path, data: bytes, free: int) -> bool:
    fs = work / f"fs{free}"
    (fs / "ota").mkdir(parents=True)
    (fs / "ota" / "dl").write_bytes(data)
    try:
        out = run(PRE + FITS % free, heap="esp32", cwd=fs, check=False).stdout.decode()
        return "OK" in out
    finally:
        shutil.rmtree(fs)


def main() -> int:
    data = agent_bundle()
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        work = Path(tmp)
        fs = work / "fs"
        (fs / "ota").mkdir(parents=True)
        (fs / "bundle.bin").write_bytes(data)
        out = run(PRE + TIMED % (layout(data),), heap="esp32", cwd=fs, timeout=300).stdout.decode().split("\n")
        t = {line.split()[1]: int(line.split()[2]) for line in out if line.startswith("T ")}
        free = int(run(PRE + "from edgefw import slots\ngc.collect()\nprint(gc.mem_free())", heap="esp32",
                       cwd=fs).stdout.split()[-1])
        files = len(list((compiled_firmware() / "edgefw").iterdir()))
        lo, hi = 64, 16 * 1024
        while hi - lo > 32:
            mid = (lo + hi) // 2
            if fits(work, data, mid):
                hi = mid
            else:
                lo = mid
    print(f"device install of an agent bundle ({len(data):,d} B, {files} files; MicroPython Unix port, "
          f"heap = esp32 budget, firmware as .mpy)")
    print(f"  free heap with edgefw.slots loaded (baseline)  {free:8,d} B")
    print(f"  least free heap the install runs in           {hi:8,d} B   {hi / free:6.1%} of the baseline")
    print(f"  the same files written, no check (floor)      {t['copy'] / 1000:8.2f} ms   1.00x")
    print(f"  install (checked unpack into the slot)        {t['install'] / 1000:8.2f} ms   "
          f"{t['install'] / t['copy']:5.2f}x the copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
