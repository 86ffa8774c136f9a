"""COSE_Sign1 (RFC 9052) with EdDSA over Ed25519, encoded deterministically.

Bytes in, bytes out: nothing here knows a file, a CLI or a transport. The
shape is the one docs/protocol.md section 6.1 fixes: tag 18, a protected
header ``{1: -8, 4: kid}``, an empty unprotected header, the payload as a
byte string, and a 64-byte Ed25519 signature over the Sig_structure
``["Signature1", protected, h'', payload]``.

Decoding is strict: every CBOR item must be in deterministic encoding (RFC
8949 section 4.2.1; re-encoding it gives the same bytes) with nothing after
it, and each failure is a typed error naming the check that failed.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from edge_agent.errors import BadInput

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HDR_ALG = 1
HDR_KID = 4
KID_LEN = 8


class OtaError(BadInput):
    """A document was refused. ``check`` names the failed check (one word,
    the names docs/protocol.md section 6.5 gives)."""

    check = "malformed"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(f"{self.check}: {message}", hint)


class Malformed(OtaError):
    check = "malformed"


class TrailingBytes(OtaError):
    check = "trailing-bytes"


class NotCanonical(OtaError):
    check = "not-canonical"


class BadSignature(OtaError):
    check = "bad-signature"


def kid_of(public_key: bytes) -> bytes:
    """A key's id: the first 8 bytes of SHA-256 of its raw 32-byte public key."""
    if len(public_key) != 32:
        raise Malformed(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    return hashlib.sha256(public_key).digest()[:KID_LEN]


class Signer(Protocol):
    """What signs: a key on disk, or a hardware key standing in for it."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Ed25519Signer:
    """An Ed25519 private key held in memory (pycryptodome)."""

    def __init__(self, key: Any):
        self._key = key
        self._public = key.public_key().export_key(format="raw")

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """From the 32-byte RFC 8032 secret key."""
        from Crypto.Signature import eddsa

        return cls(eddsa.import_private_key(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._public)

    @property
    def kid(self) -> bytes:
        return kid_of(self._public)

    def sign(self, message: bytes) -> bytes:
        from Crypto.Signature import eddsa

        return bytes(eddsa.new(self._key, "rfc8032").sign(message))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    from Crypto.Signature import eddsa

    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        eddsa.new(eddsa.import_public_key(public_key), "rfc8032").verify(message, signature)
    except ValueError:
        return False
    return True


def dumps(obj: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2.1). For the documents here (maps
    with unsigned-integer keys, or byte-string keys of one length) cbor2's
    canonical order is the bytewise order of the encoded keys."""
    return cbor2.dumps(obj, canonical=True)


def loads(data: bytes, what: str) -> Any:
    """One CBOR item, refused unless it is the whole of ``data`` and encoded
    deterministically."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise Malformed(f"{what} is not bytes")
    data = bytes(data)
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, EOFError) as e:
        raise Malformed(f"{what} is not CBOR ({e})") from None
    if fp.tell() != len(data):
        raise TrailingBytes(f"{len(data) - fp.tell()} byte(s) after the {what}")
    try:
        again = dumps(obj)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        raise Malformed(f"{what} holds an item this protocol does not use") from None
    if again != data:
        raise NotCanonical(f"{what} is not in deterministic encoding (RFC 8949 section 4.2.1)")
    return obj


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes Ed25519 signs: ``["Signature1", protected, h'', payload]``."""
    return dumps(["Signature1", protected, b"", payload])


def protected_header(kid: bytes) -> bytes:
    return dumps({HDR_ALG: ALG_EDDSA, HDR_KID: kid})


@dataclass(frozen=True)
class Sign1:
    """A decoded COSE_Sign1, not yet verified."""

    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    def verify(self, public_key: bytes) -> None:
        """Raises :class:`BadSignature` unless ``public_key`` signed this."""
        if not ed25519_verify(public_key, sig_structure(self.protected, self.payload),
                              self.signature):
            raise BadSignature(f"the signature is not the key {self.kid.hex()}'s")


def sign1(payload: bytes, signer: Signer) -> bytes:
    """A tagged COSE_Sign1 of ``payload`` by ``signer``, deterministically encoded."""
    protected = protected_header(kid_of(signer.public_key))
    signature = signer.sign(sig_structure(protected, payload))
    return dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def decode_sign1(data: bytes) -> Sign1:
    """The parts of a COSE_Sign1, checked for shape (not for signature)."""
    obj = loads(data, "COSE_Sign1")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise Malformed("not a COSE_Sign1 (tag 18)")
    parts = obj.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise Malformed("a COSE_Sign1 is an array of 4")
    protected, unprotected, payload, signature = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) \
            or not isinstance(signature, bytes):
        raise Malformed("protected header, payload and signature must be byte strings")
    if unprotected != {}:
        raise Malformed("the unprotected header must be empty")
    if len(signature) != 64:
        raise Malformed(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
    header = loads(protected, "protected header")
    if not isinstance(header, dict) or set(header) != {HDR_ALG, HDR_KID}:
        raise Malformed("the protected header must be {1: alg, 4: kid}")
    if header[HDR_ALG] != ALG_EDDSA:
        raise Malformed(f"algorithm {header[HDR_ALG]!r} is not EdDSA (-8)")
    kid = header[HDR_KID]
    if not isinstance(kid, bytes) or len(kid) != KID_LEN:
        raise Malformed("the kid must be an 8-byte byte string")
    return Sign1(protected, kid, payload, signature)
