# Ed25519 signature verification (RFC 8032 section 5.1.7) on big ints, for
# boards without a crypto library: the device checks what the OTA root key
# signed. Verification only: a device never signs with Ed25519.
#
# The check is the cofactorless one: [S]B - [k]A, encoded, must equal the
# 32 bytes of R (RFC 8032 5.1.7 allows it; it is what most libraries do, and
# the two forms differ only for keys or R with a small-order component, which
# an honest signer never makes). Comparing encodings instead of decoding R
# saves a square root and rejects every R a decoder would refuse (y >= p,
# "-0"), since an encoding is canonical.
#
# Refused: S >= L (a malleable signature), a public key that is not a point
# (or not canonically encoded), wrong lengths, anything but bytes-like
# inputs. verify() returns False for all of these; it raises only
# MemoryError.
#
# Points are in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z,
# on -x^2 + y^2 = 1 + d x^2 y^2. The two scalars are written as width-5
# NAFs and walked together (one doubling per bit, an addition per non-zero
# digit) with tables of the odd multiples 1..15 of B and of -A; B's table
# is made on the first verify and kept (~1 KB).
#
# A long message can be hashed as it arrives:
#     h = ed25519.start(pub, sig)        # SHA-512 already fed with R || A
#     for chunk in chunks: h.update(chunk)
#     ok = ed25519.finish(pub, sig, h)
from edgefw.sha512 import SHA512

_P = (1 << 255) - 19
_L = (1 << 252) + 27742317777372353535851937790883648493
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161
_SQRTM1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960

_btable = None


def _decode(s):
    # The point a 32-byte encoding names (extended, Z = 1), or None.
    p = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    # x = u v^3 (u v^7)^((p-5)/8): a candidate square root of u / v, one pow.
    v3 = v * v % p * v % p
    x = u * v3 % p * pow(u * v3 % p * v3 % p * v % p, (p - 5) >> 3, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRTM1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return (x, y, 1, x * y % p)


def _dbl(P):
    p = _P
    X, Y, Z, _ = P
    a = X * X % p
    b = Y * Y % p
    h = a + b
    e = (h - (X + Y) * (X + Y)) % p
    g = a - b
    f = (2 * Z * Z + g) % p
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _add(P, q):
    # P (extended) + q, q in the cached form (Y-X, Y+X, 2dT, 2Z).
    p = _P
    X, Y, Z, T = P
    a = (Y - X) * q[0] % p
    b = (Y + X) * q[1] % p
    c = T * q[2] % p
    d = Z * q[3] % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _cached(P):
    p = _P
    X, Y, Z, T = P
    return ((Y - X) % p, (Y + X) % p, T * _D2 % p, 2 * Z % p)


def _table(P):
    # The odd multiples P, 3P, 5P, 7P, cached form: width-4 NAF, whose
    # tables take half the heap of width 5's for ~10 % more additions (an
    # OTA check runs beside the agent, in what its heap has left).
    P2 = _cached(_dbl(P))
    t = [_cached(P)]
    for _ in range(3):
        P = _add(P, P2)
        t.append(_cached(P))
    return t


def _naf(k, out):
    # Width-4 NAF of k into out (a bytearray of 256, two's complement
    # digits, odd in -7..7); returns the number of digits.
    i = 0
    while k:
        if k & 1:
            d = k & 15
            if d > 8:
                d -= 16
            k -= d
            out[i] = d & 255
        else:
            out[i] = 0
        k >>= 1
        i += 1
    return i


def _double_mult(s, k, A):
    # [s]B + [k]A (A extended), as extended coordinates.
    global _btable
    if _btable is None:
        _btable = _table((_BX, _BY, 1, _BX * _BY % _P))
    tb = _btable
    ta = _table(A)
    ns = bytearray(256)
    na = bytearray(256)
    top = max(_naf(s, ns), _naf(k, na))
    p = _P
    X, Y, Z, T = 0, 1, 1, 0
    for i in range(top - 1, -1, -1):
        ds = ns[i]
        da = na[i]
        # Doubling (a = -1); T only when an addition follows.
        a = X * X % p
        b = Y * Y % p
        h = a + b
        e = (h - (X + Y) * (X + Y)) % p
        g = a - b
        f = (2 * Z * Z + g) % p
        X = e * f % p
        Y = g * h % p
        Z = f * g % p
        if ds | da:
            T = e * h % p
            for dd, tab in ((ds, tb), (da, ta)):
                if not dd:
                    continue
                if dd > 127:
                    q = tab[(256 - dd) >> 1]
                    q0, q1, q2 = q[1], q[0], p - q[2]      # -Q: swap Y-X, Y+X; negate T
                else:
                    q = tab[dd >> 1]
                    q0, q1, q2 = q[0], q[1], q[2]
                a = (Y - X) * q0 % p
                b = (Y + X) * q1 % p
                c = T * q2 % p
                d = Z * q[3] % p
                e = b - a
                f = d - c
                g = d + c
                h = b + a
                X = e * f % p
                Y = g * h % p
                Z = f * g % p
                T = e * h % p
    return X, Y, Z


def _encode(X, Y, Z):
    p = _P
    zi = pow(Z, p - 2, p)
    x = X * zi % p
    y = Y * zi % p
    return (y | (x & 1) << 255).to_bytes(32, "little")


def start(public_key, signature):
    # A SHA-512 fed with R || A: update() it with the message, then finish().
    h = SHA512()
    try:
        h.update(bytes(signature[:32]))
        h.update(bytes(public_key))
    except (TypeError, ValueError):
        pass          # finish() refuses the same inputs
    return h


def finish(public_key, signature, h):
    # Whether signature is public_key's over the message h (from start())
    # was fed with.
    try:
        if len(public_key) != 32 or len(signature) != 64:
            return False
        public_key = bytes(public_key)
        signature = bytes(signature)
        digest = h.digest()
    except (TypeError, ValueError, AttributeError):
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    A = _decode(public_key)
    if A is None:
        return False
    k = int.from_bytes(digest, "little") % _L
    p = _P
    negA = ((p - A[0]) % p, A[1], 1, (p - A[3]) % p)
    X, Y, Z = _double_mult(s, k, negA)
    if Z == 0:
        return False
    return _encode(X, Y, Z) == signature[:32]


def verify(public_key, message, signature):
    # Whether signature (64 bytes) is public_key's (32 bytes) over message.
    h = start(public_key, signature)
    try:
        h.update(message)
    except (TypeError, ValueError):
        return False
    return finish(public_key, signature, h)
