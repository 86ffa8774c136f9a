# CPace, suite CPACE-X25519-SHA512 of draft-irtf-cfrg-cpace-21, with the
# initiator/responder transcript. One side:
#   g = generator(prs, ci, sid); y = sample_scalar(); Y = scalar_mult_vfy(y, g)
#   send Y (and AD), receive the peer's Y'
#   K = scalar_mult_vfy(y, Y')       (ValueError: abort the pairing)
#   isk = isk_ir(sid, K, Ya, ADa, Yb, ADb)   (a = initiator, b = responder)
# The host mirrors this in edge_agent.crypto; tests/vectors/crypto.json keeps
# both on the draft's vectors.
import os

from edgefw.sha512 import sha512
from edgefw.x25519 import x25519

DSI = b"CPace255"
_S_IN_BYTES = 128              # SHA-512's input block
_P = (1 << 255) - 19
_A = 486662                    # Curve25519: v^2 = u^3 + A u^2 + u
_HALF_A = 243331               # A / 2
_LEGENDRE = (_P - 1) // 2


def prepend_len(data):
    # data preceded by its length in LEB128.
    n = len(data)
    out = bytearray()
    while n >= 128:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def lv_cat(*parts):
    return b"".join(prepend_len(p) for p in parts)


def generator_string(dsi, prs, ci, sid, s_in_bytes):
    # The zero padding makes DSI and PRS fill the hash's first block, so the
    # hashing time does not depend on a short PRS's length.
    zpad = max(0, s_in_bytes - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(zpad), ci, sid)


def transcript_ir(ya, ada, yb, adb):
    return lv_cat(ya, ada) + lv_cat(yb, adb)


def elligator2(r):
    # The u-coordinate (int) of the Curve25519 point of field element r,
    # RFC 9380's map_to_curve_elligator2 with Z = 2, in the draft's form
    # x = e v - (1 - e) A/2 with e the Legendre symbol of v^3 + A v^2 + v.
    # 1 + 2 r^2 is never 0 (-1/2 is not a square mod p), nor is that
    # symbol (A^2 - 4 is not a square), so e is 1 or -1.
    p = _P
    v = -_A * pow(1 + 2 * r * r, p - 2, p) % p
    eps = pow(v * (v * (v + _A) + 1), _LEGENDRE, p)
    e = 1 - 2 * (eps >> 254)   # 1 for 1, -1 for p - 1: no branch on the secret
    return (e * v - (1 - e) * _HALF_A) % p


def generator(prs, ci, sid):
    h = sha512(generator_string(DSI, prs, ci, sid, _S_IN_BYTES))
    # decodeUCoordinate (RFC 7748): the first 32 bytes, little-endian, bit 255 cleared.
    r = int.from_bytes(h[:32], "little") & ((1 << 255) - 1)
    return elligator2(r).to_bytes(32, "little")


def sample_scalar():
    return os.urandom(32)


def scalar_mult_vfy(y, X):
    # X25519(y, X); ValueError when the result is the neutral element (all
    # zeros: X was a low-order point), which must abort the protocol.
    k = x25519(y, X)
    acc = 0
    for b in k:
        acc |= b
    if acc == 0:
        raise ValueError("cpace: the peer's share is a low-order point")
    return k


def isk_ir(sid, K, ya, ada, yb, adb):
    return sha512(lv_cat(DSI + b"_ISK", sid, K) + transcript_ir(ya, ada, yb, adb))
