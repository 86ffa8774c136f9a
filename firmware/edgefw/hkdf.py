# HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) on hashlib's SHA-256:
# MicroPython has no hmac module.
from hashlib import sha256

from micropython import const

_BLOCK = const(64)
_HASH_LEN = const(32)


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    pad = bytearray(_BLOCK)
    pad[:len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = sha256(pad)
    inner.update(msg)
    # 0x36 ^ 0x5C turns the inner pad into the outer one in place.
    for i in range(_BLOCK):
        pad[i] ^= 0x6A
    outer = sha256(pad)
    outer.update(inner.digest())
    return outer.digest()


def hkdf_extract(salt, ikm):
    # An absent salt is HashLen zeros, which HMAC's zero padding gives for b"".
    return hmac_sha256(salt or b"", ikm)


def hkdf_expand(prk, info, n):
    if n < 0 or n > 255 * _HASH_LEN:
        raise ValueError("hkdf: output length must be 0..8160 bytes")
    out = bytearray()
    t = b""
    i = 1
    while len(out) < n:
        t = hmac_sha256(prk, t + info + bytes((i,)))
        out += t
        i += 1
    return bytes(out[:n])


def hkdf(salt, ikm, info, n):
    return hkdf_expand(hkdf_extract(salt, ikm), info, n)
