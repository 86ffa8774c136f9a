"""One BLE pairing (docs/protocol.md 5.4) as the device lives it: the real
pairing core (edgefw.pairing, compiled to .mpy) on the real MicroPython with
the ESP32's heap budget, against the host's core (edge_agent.pairing) in this
process.

Prints, against one bare X25519 scalar multiplication measured in the same
device process (the unit the issue's goal is written in: at most 3 per side):
  - the device's CPU time for PAIR_START (the whole reply: checks, attempt
    count written to flash, CPace, the static key's proof, tags) and for
    PAIR_CONFIRM (tag check, bond written), and the steps inside PAIR_START
    timed one by one with the same functions: the generator (SHA-512 and the
    Elligator 2 map), each scalar multiplication, the ISK, the key schedule;
  - the scalar multiplications each side made, counted by wrapping the X25519
    functions (not by reading the code);
  - the host's time for its three messages, against its own scalar
    multiplication (pycryptodome);
  - the device's heap: the least free heap (a ballast takes the rest, after
    the modules a running agent already holds are loaded) in which a whole
    pairing still runs, collections and the exchange's own modules (CPace,
    SHA-512, HKDF, loaded for one PAIR_START and dropped after) included;
    and the heap the idle pairing core holds.
Figures are printed, not asserted. An ESP32 runs MicroPython very roughly
30-100x slower than this machine: read the ratios.

Run: ``python bench/bench_pairing.py``
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from edge_agent import crypto, pairing  # noqa: E402
from tests.firmware.compiled import prelude  # noqa: E402
from tests.firmware.pairing_device import CODE, atomic_bytes, clamp, provision  # noqa: E402
from tests.mpy import board_heap, micropython_exe  # noqa: E402

# The device: one process, one pairing, driven over stdin/stdout (hex lines).
DEVICE = r"""
import gc, json, sys, time
from binascii import hexlify, unhexlify
from edgefw import x25519 as _x
CALLS = [0]
_real = _x.x25519
def counted(k, u):
    CALLS[0] += 1
    return _real(k, u)
_x.x25519 = counted   # before cpace / pairing_exchange import it by name

class Clock:
    def uptime_ms(self):
        return 0

def best_us(fn, n=5):
    best = None
    for _ in range(n):
        t0 = time.ticks_us(); fn(); dt = time.ticks_diff(time.ticks_us(), t0)
        best = dt if best is None or dt < best else best
    return best

from edgefw import pairing
gc.collect(); before = gc.mem_alloc()
p = pairing.Pairing("", %(dev)r, Clock())
gc.collect(); idle = gc.mem_alloc() - before
# The agent has these loaded already: the ballast leaves BALLAST bytes for
# what pairing itself loads and allocates.
from edgefw import messages, session  # noqa
BALLAST = %(ballast)d
ballast = []
if BALLAST:
    gc.collect()
    while True:        # take every byte but BALLAST, in blocks that fit
        left = gc.mem_free() - BALLAST
        if left < 64:
            break
        try:
            ballast.append(bytearray(min(left - 32, 4096)))
        except MemoryError:
            break

out = {"idle_heap": idle}
try:
    start = unhexlify(sys.stdin.readline().strip())
    CALLS[0] = 0
    t0 = time.ticks_us(); reply, _ = p.control(start, 0); out["start_us"] = time.ticks_diff(time.ticks_us(), t0)
    out["device_mults"] = CALLS[0]
    print(hexlify(reply).decode()); sys.stdout.flush()
    confirm = unhexlify(sys.stdin.readline().strip())
    t0 = time.ticks_us(); done, s = p.control(confirm, 0); out["confirm_us"] = time.ticks_diff(time.ticks_us(), t0)
    out["done"] = s is not None
    print(hexlify(done).decode())
except MemoryError:
    out["memory_error"] = True
    print("-")
    print("-")
if not BALLAST:
    # The steps of PAIR_START, one by one, with the functions it uses.
    from edgefw import cpace, hkdf
    from edgefw.pairing_exchange import channel
    sid = bytes(range(16)); ya = cpace.sample_scalar(); d = cpace.sample_scalar()
    g = cpace.generator(b"%(code)s", channel(%(dev)r), sid)
    Y = _real(ya, g); Ea = _real(d, b"\x09" + bytes(31)); D = Ea
    K = _real(ya, Y)
    isk = cpace.isk_ir(sid, K, Y, b"a" * 40, Y, b"d" * 33)
    def schedule():
        prk = hkdf.hkdf_extract(sid, isk + K)
        for info in (b"edge pair confirm device", b"edge pair confirm host", b"edge bond id", b"edge bond key"):
            hkdf.hkdf_expand(prk, info, 32)
        hkdf.hmac_sha256(prk, Y + Y + D); hkdf.hmac_sha256(prk, Y + Y + D)
    out["mult_us"] = best_us(lambda: _real(ya, g))
    out["generator_us"] = best_us(lambda: cpace.generator(b"%(code)s", channel(%(dev)r), sid))
    out["isk_us"] = best_us(lambda: cpace.isk_ir(sid, K, Y, b"a" * 40, Y, b"d" * 33))
    out["schedule_us"] = best_us(schedule)
print("RESULT " + json.dumps(out))
"""


def run_device(folder: Path, ballast: int = 0) -> tuple[dict, dict]:
    """One pairing with the device in micropython; (device figures, host figures)."""
    code = prelude() + DEVICE % {"ballast": ballast, "dev": DEVICE_ID, "code": CODE}
    proc = subprocess.Popen([micropython_exe(), "-X", f"heapsize={board_heap('esp32')}", "-c", code],
                            cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"MICROPYPATH": ".frozen", "PATH": "/usr/bin:/bin"})
    assert proc.stdin and proc.stdout
    host: dict = {"mults": 0}
    real = crypto.scalar_mult_vfy

    def counted(y: bytes, x: bytes) -> bytes:
        host["mults"] += 1
        return real(y, x)

    crypto.scalar_mult_vfy = counted      # type: ignore[assignment]
    try:
        ini = pairing.Initiator(DEVICE_ID, CODE, "owner", pairing.new_host_id(), host_key=HOST_KEY)
        t0 = time.perf_counter()
        start = ini.start()
        host["start_us"] = (time.perf_counter() - t0) * 1e6
        proc.stdin.write(start.hex().encode() + b"\n")
        proc.stdin.flush()
        reply = proc.stdout.readline().strip()
        if reply != b"-":
            t0 = time.perf_counter()
            confirm = ini.reply(bytes.fromhex(reply.decode()))
            host["reply_us"] = (time.perf_counter() - t0) * 1e6
            proc.stdin.write(confirm.hex().encode() + b"\n")
            proc.stdin.flush()
            done = proc.stdout.readline().strip()
            t0 = time.perf_counter()
            if done != b"-":
                ini.done(bytes.fromhex(done.decode()))
            host["done_us"] = (time.perf_counter() - t0) * 1e6
    except (BrokenPipeError, ValueError, pairing.PairingError):
        pass        # the device ran out of heap mid-way (ballast runs)
    finally:
        crypto.scalar_mult_vfy = real     # type: ignore[assignment]
    # Not communicate(): it reads the pipe's descriptor and would miss what
    # readline() already buffered.
    proc.stdin.close()
    out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else b""
    proc.wait(timeout=120)
    line = [x for x in out.decode().splitlines() if x.startswith("RESULT ")]
    if not line:
        if ballast:      # out of heap where not even the result could be printed
            return {"memory_error": True}, host
        raise SystemExit(f"device failed:\n{err.decode()}")
    return json.loads(line[0][7:]), host


HOST_KEY = pairing.new_host_key()       # made once per host installation, as the registry keeps it
KEY = bytes(range(1, 33))
PUB = crypto.scalar_mult_vfy(clamp(KEY), b"\x09" + bytes(31))
DEVICE_ID = "esp32-" + hashlib.sha256(PUB).hexdigest()[:12]     # as the bench makes ids


def provisioned(folder: Path, keep_pub: bool = True) -> None:
    """A board's flash as `edge flash` leaves it: key, code and (this
    version) the kept public key; without it, as an older agent left it."""
    provision(folder, KEY)
    if keep_pub:
        (folder / "identity" / "pub").write_bytes(atomic_bytes(PUB))


def host_mult_us() -> float:
    y, g = crypto.sample_scalar(), b"\x09" + bytes(31)
    best = None
    for _ in range(20):
        t0 = time.perf_counter()
        crypto.scalar_mult_vfy(y, g)
        dt = (time.perf_counter() - t0) * 1e6
        best = dt if best is None or dt < best else best
    assert best is not None
    return best


def least_free_heap() -> tuple[int, int]:
    """(A, B): with A bytes of free heap or more a whole pairing completed at
    every step tried (2 KB apart, from 64 KB down); B is the least that
    completed at all. Fitting is not monotonic (where the ballast's blocks
    fall decides the holes big enough for a module or a big int), so a
    binary search would report chance."""
    fits = {}
    for free in range(64 * 1024, 4 * 1024 - 1, -2048):
        with tempfile.TemporaryDirectory() as d:
            provisioned(Path(d))
            dev, _ = run_device(Path(d), ballast=free)
        fits[free] = bool(dev.get("done")) and not dev.get("memory_error")
    always = min(f for f in fits if all(fits[g] for g in fits if g >= f))
    return always, min((f for f in fits if fits[f]), default=always)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        provisioned(Path(d))
        dev, host = run_device(Path(d))
    with tempfile.TemporaryDirectory() as d:
        provisioned(Path(d), keep_pub=False)
        first, _ = run_device(Path(d))
    if not dev.get("done"):
        raise SystemExit(f"the pairing did not complete: {dev}")
    unit = dev["mult_us"]
    hunit = host_mult_us()
    print("BLE pairing (protocol 5.4), device = MicroPython Unix port, esp32 heap, firmware as .mpy")
    print(f"  device: one X25519 scalar multiplication (baseline)   {unit / 1000:8.2f} ms   1.00x")
    rows = [("PAIR_START -> PAIR_REPLY (whole)", dev["start_us"]),
            ("  generator: SHA-512 + Elligator 2", dev["generator_us"]),
            ("  3 scalar multiplications", 3 * unit),
            ("  ISK (SHA-512 of the transcript)", dev["isk_us"]),
            ("  key schedule: HKDF + 2 HMAC tags", dev["schedule_us"]),
            ("PAIR_CONFIRM -> PAIR_DONE (tag, bond on flash)", dev["confirm_us"])]
    for name, us in rows:
        print(f"  device: {name:<45} {us / 1000:8.2f} ms  {us / unit:5.2f}x")
    print(f"  device: scalar multiplications made in one pairing   {dev['device_mults']}   (goal: at most 3)")
    print(f"          ... the first on a board flashed before identity/pub was kept: {first['device_mults']}")
    print(f"  host:   one scalar multiplication (pycryptodome)     {hunit / 1000:8.3f} ms   1.00x")
    host_total = host["start_us"] + host.get("reply_us", 0) + host.get("done_us", 0)
    print(f"  host:   start + reply + done                         {host_total / 1000:8.3f} ms  "
          f"{host_total / hunit:5.2f}x")
    print(f"  host:   scalar multiplications made in one pairing   {host['mults']}   "
          "(Ya, K, S; the host's Ea is made once)")
    print(f"  device heap held by the idle pairing core            {dev['idle_heap']:8,} B")
    always, least = least_free_heap()
    print(f"  free heap a whole pairing always ran in (2 KB steps) {always:8,} B of {board_heap('esp32'):,}"
          f" (least it ran in: {least:,} B)")


if __name__ == "__main__":
    main()
