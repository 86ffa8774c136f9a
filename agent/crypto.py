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
