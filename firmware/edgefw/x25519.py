# X25519 (RFC 7748) on big ints, for boards without a crypto library.
#
# The ladder runs the same steps for every scalar: 255 iterations, a swap
# done by arithmetic (never a branch on a key bit) and one inversion by
# Fermat (pow). Big-int arithmetic itself is not constant-time in
# MicroPython; the structure is, which is what a pure-Python build can give.
_P = (1 << 255) - 19
_A24 = 121665          # (486662 - 2) / 4
BASE = b"\x09" + bytes(31)


def clamp(k):
    # RFC 7748 section 5: clear the 3 low bits and the top bit, set bit 254.
    k = bytearray(k)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def x25519(k, u):
    # The 32-byte result of scalar k times the point with u-coordinate u.
    if len(k) != 32 or len(u) != 32:
        raise ValueError("x25519: scalar and point must be 32 bytes")
    n = int.from_bytes(clamp(k), "little")
    b = bytearray(u)
    b[31] &= 127       # the top bit of u is ignored (section 5)
    x1 = int.from_bytes(b, "little") % _P
    p = _P
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in range(254, -1, -1):
        bit = (n >> t) & 1
        swap ^= bit
        d = swap * (x2 - x3)
        x2 -= d
        x3 += d
        d = swap * (z2 - z3)
        z2 -= d
        z3 += d
        swap = bit
        a = x2 + z2
        aa = a * a % p
        b = x2 - z2
        bb = b * b % p
        e = aa - bb
        da = (x3 - z3) * a % p
        cb = (x3 + z3) * b % p
        x3 = (da + cb) * (da + cb) % p
        z3 = x1 * (da - cb) * (da - cb) % p
        x2 = aa * bb % p
        z2 = e * (aa + _A24 * e) % p
    d = swap * (x2 - x3)
    x2 -= d
    d = swap * (z2 - z3)
    z2 -= d
    return (x2 * pow(z2, p - 2, p) % p).to_bytes(32, "little")


def public_key(k):
    return x25519(k, BASE)
