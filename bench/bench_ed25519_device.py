"""Ed25519 verification on the device (edgefw.ed25519, the check of what the
OTA root key signed), timed on the real MicroPython interpreter with the
ESP32's heap budget (the smallest of boards/*.json) and the firmware
compiled to .mpy.

Prints, against baselines measured in the same run (one bare X25519 scalar
multiplication, edgefw.x25519, and hashlib.sha256 over 64 KB, fed 4 KB at a time):
  - one verify of a 300-byte manifest, warm (B's table already made) and
    the first one (which makes it), and a verify that makes B's table each
    time (what keeping the table saves);
  - the SHA-512 share of that verify (edgefw.sha512 of R || A || 300 B) and
    the decoding of A (a square root: one pow);
  - for the choice of algorithm, on the same big ints: an RSA-2048 verify's
    arithmetic (pow(s, 65537, n), no padding check), written here only;
  - heap: the least free heap (after a ballast takes the rest) in which a
    verify still runs, first and warm, collections included.
Figures are printed, not asserted (tests/firmware/test_ed25519_device.py
holds a generous cap). This machine is much faster than a board (an ESP32
runs MicroPython very roughly 30-100x slower): read the ratios.

Run: ``python bench/bench_ed25519_device.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

from Crypto.PublicKey import ECC, RSA
from Crypto.Signature import eddsa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import tests.firmware.test_ed25519_device as edtest  # noqa: E402
from tests.firmware.compiled import prelude  # noqa: E402
from tests.mpy import run  # noqa: E402

DEVICE = r"""
import hashlib, time
from binascii import unhexlify as h
from edgefw import ed25519
from edgefw.sha512 import sha512
from edgefw.x25519 import x25519

ROUNDS = 5
pub = h(%r)
msg = h(%r)
sig = h(%r)
n = int.from_bytes(h(%r), "big")
s = int.from_bytes(h(%r), "big")


def best_us(fn, n=1):
    best = None
    for _ in range(ROUNDS):
        t0 = time.ticks_us()
        for _ in range(n):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0) / n
        best = dt if best is None or dt < best else best
    return best


t0 = time.ticks_us()
assert ed25519.verify(pub, msg, sig)
print("T first", time.ticks_diff(time.ticks_us(), t0))
print("T x25519", best_us(lambda: x25519(bytes(range(32)), b"\x09" + bytes(31))))
b4k = bytes(4096)


def sha256_64k():
    # 64 KB fed 4 KB at a time (one 64 KB block does not fit beside the rest).
    hs = hashlib.sha256()
    for _ in range(16):
        hs.update(b4k)
    hs.digest()


print("T sha256_64k", best_us(sha256_64k))
print("T verify", best_us(lambda: ed25519.verify(pub, msg, sig)))


def cold():
    ed25519._btable = None
    ed25519.verify(pub, msg, sig)


print("T verify_cold", best_us(cold))
ram = sig[:32] + pub + msg
print("T sha512", best_us(lambda: sha512(ram), 5))
print("T decode", best_us(lambda: ed25519._decode(pub), 5))
print("T rsa2048", best_us(lambda: pow(s, 65537, n), 5))
"""


def least_free_heap(warm: bool) -> int:
    lo, hi = 256, 64 * 1024
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if edtest.fits_in_free_heap(mid, heap="esp32", warm=warm):
            hi = mid
        else:
            lo = mid
    return hi


def main() -> int:
    key = ECC.construct(curve="Ed25519", seed=bytes(range(32)))
    msg = bytes(range(256)) + bytes(44)          # a 300-byte manifest
    sig = eddsa.new(key, "rfc8032").sign(msg)
    pub = key.public_key().export_key(format="raw")
    rsa = RSA.generate(2048)
    s = pow(int.from_bytes(msg[:200], "big"), rsa.d, rsa.n)
    code = DEVICE % (pub.hex(), msg.hex(), sig.hex(), rsa.n.to_bytes(256, "big").hex(), s.to_bytes(256, "big").hex())
    print("device Ed25519 verify (MicroPython Unix port, heap = esp32 budget, firmware as .mpy)")
    out = run(prelude() + code, heap="esp32", timeout=300).stdout.decode().strip().splitlines()
    t = {line.split()[1]: float(line.split()[2]) for line in out if line.startswith("T ")}
    x, sha = t["x25519"], t["sha256_64k"]
    print(f"  X25519 scalar mult (baseline)        {x / 1000:8.2f} ms   1.00x")
    print(f"  hashlib.sha256 of 64 KB (baseline)   {sha / 1000:8.2f} ms   {sha / x:5.2f}x X25519")
    for k, label in (("verify", "verify, 300 B manifest (warm)"), ("first", "first verify (makes B's table)"),
                     ("verify_cold", "verify making B's table each time"), ("sha512", "SHA-512 of R || A || 300 B"),
                     ("decode", "decode A (one pow)"), ("rsa2048", "RSA-2048 pow(s, 65537, n) (comparison)")):
        print(f"  {label:37s}{t[k] / 1000:8.2f} ms   {t[k] / x:5.2f}x X25519   {t[k] / sha:6.2f}x sha256 64 KB"
              f"   {t[k] / t['verify']:6.1%} of a verify")
    print(f"  keeping B's table saves              {(t['verify_cold'] - t['verify']) / t['verify_cold']:6.1%} of a verify")
    print(f"  least free heap, first verify        {least_free_heap(False):7,d} B")
    print(f"  least free heap, warm verify         {least_free_heap(True):7,d} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
