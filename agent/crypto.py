"""The host's side of the pairing and session cryptography, byte-compatible with the device's.

The device (``firmware/edgefw/``: ``sha512``, ``hkdf``, ``ccm``, ``cpace``)
writes these in plain MicroPython; the host takes them from pycryptodome and
hand-writes only what no library has: Elligator 2 on Curve25519 and the
string functions of CPace. ``tests/vectors/crypto.json`` holds the published
vectors both sides pass.

- :func:`hmac_sha256`, :func:`hkdf`: RFC 2104 / RFC 5869 with SHA-256.
- :class:`CCM`: AES-128-CCM (RFC 3610, NIST SP 800-38C), nonces of 7..13
  bytes, tags of 4..16 bytes; ``open`` returns ``None`` for anything that is
  not what ``seal`` gave.
- CPace, suite CPACE-X25519-SHA512 of draft-irtf-cfrg-cpace-21,
  initiator/responder transcript: :func:`cpace_generator`,
  :func:`sample_scalar`, :func:`scalar_mult_vfy`, :func:`isk_ir`.
"""

from __future__ import annotations

import secrets

from Crypto.Cipher import AES
from Crypto.Hash import HMAC, SHA256, SHA512
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF

# The longest AAD whose length RFC 3610 encodes in 2 bytes; the device keeps
# to it, so the host does too.
MAX_AAD = 0xFEFF


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 of ``msg`` under ``key`` (RFC 2104)."""
    return HMAC.new(key, msg, digestmod=SHA256).digest()


def hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> bytes:
    """``n`` bytes of HKDF-SHA256 (RFC 5869); an empty salt means HashLen zeros."""
    out = HKDF(ikm, n, salt or bytes(32), SHA256, context=info)
    assert isinstance(out, bytes)
    return out


def _check(nonce: bytes, tag_len: int) -> None:
    if not 7 <= len(nonce) <= 13:
        raise ValueError(f"ccm: nonce must be 7..13 bytes, got {len(nonce)}")
    if not (4 <= tag_len <= 16 and tag_len % 2 == 0):
        raise ValueError(f"ccm: tag_len must be even, 4..16, got {tag_len}")


class CCM:
    """AES-128-CCM with a fixed key; the nonce must never repeat under one key."""

    def __init__(self, key: bytes):
        if len(key) != 16:
            raise ValueError("ccm: key must be 16 bytes")
        self._key = bytes(key)

    def seal(self, nonce: bytes, aad: bytes, plaintext: bytes, tag_len: int = 8) -> bytes:
        """Ciphertext || tag."""
        _check(nonce, tag_len)
        if len(aad) > MAX_AAD or len(plaintext) >> (8 * (15 - len(nonce))):
            raise ValueError("ccm: aad over 65279 bytes or message too long for the nonce")
        c = AES.new(self._key, AES.MODE_CCM, nonce=nonce, mac_len=tag_len)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(plaintext)
        return ct + tag

    def open(self, nonce: bytes, aad: bytes, data: bytes, tag_len: int = 8) -> bytes | None:
        """The plaintext, or None when ``data`` is not what :meth:`seal` gave for this nonce and aad."""
        _check(nonce, tag_len)
        n = len(data) - tag_len
        if n < 0 or len(aad) > MAX_AAD or n >> (8 * (15 - len(nonce))):
            return None
        c = AES.new(self._key, AES.MODE_CCM, nonce=nonce, mac_len=tag_len)
        c.update(aad)
        try:
            return c.decrypt_and_verify(data[:n], data[n:])
        except ValueError:
            return None


# -- CPace, CPACE-X25519-SHA512 (draft-irtf-cfrg-cpace-21)

CPACE_DSI = b"CPace255"
_P = 2**255 - 19
_A = 486662


def prepend_len(data: bytes) -> bytes:
    """``data`` preceded by its length in LEB128."""
    n = len(data)
    head = bytearray()
    while n >= 0x80:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + data


def lv_cat(*parts: bytes) -> bytes:
    """The parts, each preceded by its length (the draft's lv_cat)."""
    return b"".join(prepend_len(p) for p in parts)


def generator_string(dsi: bytes, prs: bytes, ci: bytes, sid: bytes, s_in_bytes: int = 128) -> bytes:
    """lv_cat(DSI, PRS, zero padding, CI, sid); the padding fills the hash's first block with DSI and PRS."""
    zpad = max(0, s_in_bytes - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(zpad), ci, sid)


def transcript_ir(ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    """The initiator/responder transcript: lv_cat(Ya, ADa) || lv_cat(Yb, ADb)."""
    return lv_cat(ya, ada) + lv_cat(yb, adb)


def elligator2(r: int) -> int:
    """The Curve25519 u-coordinate Elligator 2 maps field element ``r`` to (RFC 9380, Z = 2).

    Neither 1 + 2r^2 nor v^3 + Av^2 + v can be 0 on this curve, so the
    Legendre symbol picks v or -v - A.
    """
    v = -_A * pow(1 + 2 * r * r, -1, _P) % _P
    square = pow(v * (v * (v + _A) + 1), (_P - 1) // 2, _P) == 1
    return v if square else (-v - _A) % _P


def cpace_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """The generator g (32-byte u-coordinate) for password ``prs``, channel identifier ``ci`` and session id ``sid``."""
    h = SHA512.new(generator_string(CPACE_DSI, prs, ci, sid)).digest()
    r = int.from_bytes(h[:32], "little") & (2**255 - 1)
    return elligator2(r).to_bytes(32, "little")


def sample_scalar() -> bytes:
    """A fresh secret scalar: 32 random bytes (X25519 clamps them)."""
    return secrets.token_bytes(32)


def scalar_mult_vfy(y: bytes, X: bytes) -> bytes:
    """X25519(y, X) (RFC 7748: y clamped, bit 255 of X ignored).

    Raises ValueError when X is a low-order point (the result would be all
    zeros, and the protocol must abort). pycryptodome refuses such points when
    they are imported; the zero check covers the rest.
    """
    if len(y) != 32 or len(X) != 32:
        raise ValueError("cpace: scalar and point must be 32 bytes")
    try:
        k = key_agreement(static_priv=import_x25519_private_key(y), static_pub=import_x25519_public_key(X),
                          kdf=lambda x: x)
    except ValueError:
        raise ValueError("cpace: the peer's share is a low-order point") from None
    if not any(k):
        raise ValueError("cpace: the peer's share is a low-order point")
    return bytes(k)


def isk_ir(sid: bytes, K: bytes, ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    """The 64-byte intermediate session key of the initiator/responder setting."""
    return SHA512.new(lv_cat(CPACE_DSI + b"_ISK", sid, K) + transcript_ir(ya, ada, yb, adb)).digest()
