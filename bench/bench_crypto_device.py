"""Device pairing and session cryptography (edgefw.sha512, hkdf, ccm, cpace),
timed on the real MicroPython interpreter with the ESP32's heap budget and the
firmware compiled to .mpy.

Prints, against a baseline measured in the same run (one bare X25519 scalar
multiplication, edgefw.x25519, the cost pairing cannot avoid):
  - CPU time of the CPace generator (SHA-512 of the generator string and the
    Elligator 2 map), SHA-512 of 200 bytes, HKDF-SHA256 (32-byte salt and
    key, 32 bytes out), isk_ir, and one whole CPace side (generator, two
    scalar multiplications, ISK);
  - AES-CCM seal + open of 20, 244 and 1024 bytes (8-byte tag, 13-byte
    nonce, 4 bytes of AAD): MB/s of payload (each byte sealed and opened),
    and the time against cryptolib's raw AES-ECB over the same blocks (once
    for the seal, once for the open);
  - a pure-MicroPython ChaCha20 block function (written here only, not
    shipped): its keystream MB/s, a floor under ChaCha20-Poly1305 without
    cryptolib (Poly1305 would only add), against AES-CCM on cryptolib;
  - heap: the least free heap (after a ballast takes the rest) in which one
    CPace side and one 1 KB CCM seal + open still run, collections
    included, and the bytes a CCM seal and an open allocate (collector off).
Figures are printed, not asserted (tests/firmware/test_crypto_device.py
holds generous caps). This machine is much faster than a board (an ESP32
runs MicroPython very roughly 30-100x slower): read the ratios.

Run: ``python bench/bench_crypto_device.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.firmware.compiled import prelude  # noqa: E402
from tests.firmware.test_crypto_device import fits_in_free_heap  # noqa: E402
from tests.mpy import run  # noqa: E402

DEVICE = r"""
import gc, time
from cryptolib import aes
from edgefw import cpace
from edgefw.ccm import CCM
from edgefw.hkdf import hkdf
from edgefw.sha512 import sha512
from edgefw.x25519 import x25519

ROUNDS = 7


def best_us(fn, n=1):
    # The best of ROUNDS runs of n calls, per call: the least disturbed run.
    best = None
    for _ in range(ROUNDS):
        t0 = time.ticks_us()
        for _ in range(n):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0) / n
        best = dt if best is None or dt < best else best
    return best


# A minimal ChaCha20 block (RFC 8439 section 2.3), for comparison only.
def _qr(s, a, b, c, d):
    M = 0xFFFFFFFF
    s[a] = (s[a] + s[b]) & M
    x = s[d] ^ s[a]
    s[d] = ((x << 16) | (x >> 16)) & M
    s[c] = (s[c] + s[d]) & M
    x = s[b] ^ s[c]
    s[b] = ((x << 12) | (x >> 20)) & M
    s[a] = (s[a] + s[b]) & M
    x = s[d] ^ s[a]
    s[d] = ((x << 8) | (x >> 24)) & M
    s[c] = (s[c] + s[d]) & M
    x = s[b] ^ s[c]
    s[b] = ((x << 7) | (x >> 25)) & M


def chacha20_block(key_words, counter, nonce_words):
    init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + key_words + [counter] + nonce_words
    s = list(init)
    for _ in range(10):
        _qr(s, 0, 4, 8, 12)
        _qr(s, 1, 5, 9, 13)
        _qr(s, 2, 6, 10, 14)
        _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15)
        _qr(s, 1, 6, 11, 12)
        _qr(s, 2, 7, 8, 13)
        _qr(s, 3, 4, 9, 14)
    out = bytearray(64)
    for i in range(16):
        w = (s[i] + init[i]) & 0xFFFFFFFF
        out[4 * i:4 * i + 4] = w.to_bytes(4, "little")
    return out


# RFC 8439 2.3.2: the block function's test vector, so the timed code is right.
kw = [int.from_bytes(bytes(range(4 * i, 4 * i + 4)), "little") for i in range(8)]
nw = [0x09000000, 0x4A000000, 0]
assert chacha20_block(kw, 1, nw)[:4] == b"\x10\xf1\xe7\xe4"

sid = b"0123456789abcdef"
prs = b"48213907"
ci = b"\x0bA_initiator\x0bB_responder"
y = cpace.sample_scalar()
g = cpace.generator(prs, ci, sid)
Y = cpace.scalar_mult_vfy(y, g)
K = cpace.scalar_mult_vfy(y, Y)


def side():
    g = cpace.generator(prs, ci, sid)
    Ya = cpace.scalar_mult_vfy(y, g)
    k = cpace.scalar_mult_vfy(y, Ya)
    cpace.isk_ir(sid, k, Ya, b"a", Ya, b"b")


print("T x25519", best_us(lambda: x25519(y, g)))
print("T generator", best_us(lambda: cpace.generator(prs, ci, sid)))
d200 = bytes(200)
print("T sha512_200", best_us(lambda: sha512(d200), 10))
print("T hkdf", best_us(lambda: hkdf(bytes(32), bytes(32), b"edge session v1", 32), 10))
print("T isk_ir", best_us(lambda: cpace.isk_ir(sid, K, Y, b"a", Y, b"b"), 10))
print("T side", best_us(side))
print("T chacha20_block", best_us(lambda: chacha20_block(kw, 1, nw), 20))

c = CCM(bytes(range(16)))
ecb = aes(bytes(range(16)), 1)
nonce = bytes(13)
for n in (20, 244, 1024):
    msg = bytes(n)
    sealed = c.seal(nonce, b"hdr1", msg)
    blocks = bytearray((n + 15) // 16 * 16)
    t = best_us(lambda: c.open(nonce, b"hdr1", c.seal(nonce, b"hdr1", msg)), 20)
    raw = best_us(lambda: (ecb.encrypt(blocks, blocks), ecb.encrypt(blocks, blocks)), 20)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    c.seal(nonce, b"hdr1", msg)
    b = gc.mem_alloc()
    c.open(nonce, b"hdr1", sealed)
    e = gc.mem_alloc()
    gc.enable()
    print("CCM", n, t, raw, b - a, e - b)
"""


def least_free_heap(what: str, heap: str) -> int:
    """The least free heap (bytes, to 64) in which ``what`` runs."""
    lo, hi = 256, 96 * 1024
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if fits_in_free_heap(what, mid, heap=heap):
            hi = mid
        else:
            lo = mid
    return hi


def main() -> int:
    print("device crypto (MicroPython Unix port, heap = esp32 budget, firmware as .mpy)")
    out = run(prelude() + DEVICE, heap="esp32", timeout=300).stdout.decode().strip().splitlines()
    t = {line.split()[1]: float(line.split()[2]) for line in out if line.startswith("T ")}
    base = t["x25519"]
    print(f"  X25519 scalar mult (baseline)   {base / 1000:8.2f} ms   1.00x")
    for key, label in (("generator", "CPace generator (hash + map)"), ("sha512_200", "SHA-512 of 200 B"),
                       ("hkdf", "HKDF-SHA256, 32 B out"), ("isk_ir", "CPace isk_ir"),
                       ("side", "one CPace side (gen+2 mult+ISK)")):
        print(f"  {label:32s}{t[key] / 1000:8.2f} ms   {t[key] / base:5.2f}x")
    print("  AES-CCM seal + open (8-byte tag, 13-byte nonce, 4 B AAD):")
    ccm_mbs = 0.0
    for line in out:
        if line.startswith("CCM "):
            _, n, us, raw, a_seal, a_open = line.split()
            mbs = 2 * int(n) / float(us)
            ccm_mbs = mbs
            print(f"    {int(n):5d} B  {float(us):8.1f} us  {mbs:6.2f} MB/s   {float(us) / float(raw):5.1f}x raw"
                  f" cryptolib ECB of the same blocks;  allocates {a_seal} B seal, {a_open} B open")
    cc = 64 / t["chacha20_block"]
    print(f"  pure ChaCha20 keystream         {cc:6.2f} MB/s  ({t['chacha20_block']:.1f} us per 64-byte block;"
          f" Poly1305 not counted)")
    print(f"  AES-CCM (cryptolib) 1 KB        {ccm_mbs:6.2f} MB/s   {ccm_mbs / cc:5.1f}x the ChaCha20 keystream alone")
    for what, label in (("cpace_side", "one CPace side"), ("ccm_1k", "1 KB CCM seal + open")):
        print(f"  least free heap for {label:22s}{least_free_heap(what, 'esp32'):7,d} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
