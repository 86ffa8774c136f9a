"""OTA manifests, signing-key lists and root rotations (docs/protocol.md section 6).

A library over bytes: it builds and signs the three documents, and checks
them as a device does, in the order section 6.5 gives, raising an
:class:`~edge_ota.cose.OtaError` whose ``check`` names the rule that failed.
:class:`TrustedState` is the device's trust (root, root epoch, current key
list); it changes only after a document has passed every check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from edge_ota.cose import (KID_LEN, BadSignature, Malformed, OtaError, Sign1, Signer,
                           decode_sign1, dumps, kid_of, loads, sign1)

KIND_MANIFEST = 1
KIND_KEY_LIST = 2
KIND_ROOT_ROTATION = 3

# Manifest keys.
K_KIND, K_BOARD, K_COMPONENT, K_VERSION, K_SEQUENCE = 0, 1, 2, 3, 4
K_DIGEST, K_SIZE, K_TARGET, K_MIN_VERSION, K_EXPIRES = 5, 6, 7, 8, 9
# Key-list keys.
L_SEQUENCE, L_KEYS = 1, 2
# Root-rotation keys.
R_EPOCH, R_NEXT_ROOT = 1, 2

TARGETS = {"agent": "agent-slot", "firmware": "ota-partition"}
MAX_TEXT = 32
MAX_UINT = 2**64 - 1
_SEMVER = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


class UnknownKey(OtaError):
    check = "unknown-key"


class KeyExpired(OtaError):
    check = "key-expired"


class NotRoot(OtaError):
    check = "not-root"


class StaleKeyList(OtaError):
    check = "stale-key-list"


class StaleRotation(OtaError):
    check = "stale-rotation"


class WrongBoard(OtaError):
    check = "wrong-board"


class WrongComponent(OtaError):
    check = "wrong-component"


class Rollback(OtaError):
    check = "rollback"


class VersionTooOld(OtaError):
    check = "version-too-old"


class Expired(OtaError):
    check = "expired"


class TooLarge(OtaError):
    check = "too-large"


class SizeMismatch(OtaError):
    check = "size-mismatch"


class DigestMismatch(OtaError):
    check = "digest-mismatch"


def parse_version(text: str) -> tuple[int, int, int]:
    """``MAJOR.MINOR.PATCH`` (digits only, no leading zeros) as a tuple to compare."""
    m = _SEMVER.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise Malformed(f"version {text!r} is not MAJOR.MINOR.PATCH")
    return int(m[1]), int(m[2]), int(m[3])


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_UINT:
        raise Malformed(f"{what} must be an unsigned integer")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or not 1 <= len(v.encode()) <= MAX_TEXT:
        raise Malformed(f"{what} must be a text string of 1..{MAX_TEXT} bytes")
    return v


def _payload_map(payload: bytes, kind: int, required: set[int], optional: set[int]) -> dict:
    body = loads(payload, "payload")
    if not isinstance(body, dict):
        raise Malformed("the payload must be a map")
    if body.get(K_KIND) != kind:
        raise Malformed(f"the payload is not of kind {kind} (key 0)")
    keys = set(body)
    if not required <= keys:
        raise Malformed(f"the payload lacks key(s) {sorted(required - keys)}")
    if not keys <= required | optional:
        raise Malformed(f"the payload has unknown key(s) {sorted(keys - required - optional)}")
    return body


@dataclass(frozen=True)
class Manifest:
    board: str
    component: str
    version: str
    sequence: int
    digest: bytes
    size: int
    target: str
    expires: int
    min_version: str | None = None

    @classmethod
    def for_image(cls, image: bytes, *, board: str, component: str, version: str,
                  sequence: int, expires: int, min_version: str | None = None) -> Manifest:
        """The manifest of ``image``: its digest and size, the component's target."""
        if component not in TARGETS:
            raise Malformed(f"component {component!r} is not one of {sorted(TARGETS)}")
        return cls(board, component, version, sequence, hashlib.sha256(image).digest(),
                   len(image), TARGETS[component], expires, min_version).checked()

    def checked(self) -> Manifest:
        """Itself, after every field's range (section 6.2) is checked."""
        _text(self.board, "board")
        if self.component not in TARGETS:
            raise Malformed(f"component {self.component!r} is not one of {sorted(TARGETS)}")
        parse_version(self.version)
        _uint(self.sequence, "sequence")
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise Malformed("digest must be 32 bytes (SHA-256)")
        if _uint(self.size, "size") == 0:
            raise Malformed("size must be at least 1")
        if self.target != TARGETS[self.component]:
            raise Malformed(f"component {self.component} installs to "
                            f"{TARGETS[self.component]}, not {self.target!r}")
        _uint(self.expires, "expires")
        if self.min_version is not None:
            parse_version(self.min_version)
        return self

    def to_cbor(self) -> bytes:
        self.checked()
        body: dict[int, Any] = {K_KIND: KIND_MANIFEST, K_BOARD: self.board,
                                K_COMPONENT: self.component, K_VERSION: self.version,
                                K_SEQUENCE: self.sequence, K_DIGEST: self.digest,
                                K_SIZE: self.size, K_TARGET: self.target,
                                K_EXPIRES: self.expires}
        if self.min_version is not None:
            body[K_MIN_VERSION] = self.min_version
        return dumps(body)

    @classmethod
    def from_cbor(cls, payload: bytes) -> Manifest:
        b = _payload_map(payload, KIND_MANIFEST,
                         {K_KIND, K_BOARD, K_COMPONENT, K_VERSION, K_SEQUENCE, K_DIGEST,
                          K_SIZE, K_TARGET, K_EXPIRES}, {K_MIN_VERSION})
        return cls(b[K_BOARD], b[K_COMPONENT], b[K_VERSION], b[K_SEQUENCE], b[K_DIGEST],
                   b[K_SIZE], b[K_TARGET], b[K_EXPIRES], b.get(K_MIN_VERSION)).checked()

    def sign(self, signer: Signer) -> bytes:
        return sign1(self.to_cbor(), signer)


@dataclass(frozen=True)
class KeyList:
    """The signing keys the root vouches for: ``{kid: (public key, expires)}``."""

    sequence: int
    keys: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, sequence: int, *keys: tuple[bytes, int]) -> KeyList:
        """From ``(public key, expires)`` pairs."""
        return cls(sequence, {kid_of(pub): (pub, exp) for pub, exp in keys}).checked()

    def checked(self) -> KeyList:
        _uint(self.sequence, "key-list sequence")
        for kid, entry in self.keys.items():
            pub, expires = entry
            if not isinstance(pub, bytes) or kid != kid_of(pub):
                raise Malformed("a key list's kid must be its key's id (SHA-256, 8 bytes)")
            _uint(expires, "a key's expiry")
        return self

    def to_cbor(self) -> bytes:
        self.checked()
        return dumps({K_KIND: KIND_KEY_LIST, L_SEQUENCE: self.sequence,
                      L_KEYS: {kid: [pub, exp] for kid, (pub, exp) in self.keys.items()}})

    @classmethod
    def from_cbor(cls, payload: bytes) -> KeyList:
        b = _payload_map(payload, KIND_KEY_LIST, {K_KIND, L_SEQUENCE, L_KEYS}, set())
        if not isinstance(b[L_KEYS], dict):
            raise Malformed("the keys must be a map")
        keys: dict[bytes, tuple[bytes, int]] = {}
        for kid, entry in b[L_KEYS].items():
            if not isinstance(kid, bytes) or len(kid) != KID_LEN \
                    or not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise Malformed("each key is kid (8 bytes): [public key, expires]")
            keys[kid] = (entry[0], entry[1])
        return cls(b[L_SEQUENCE], keys).checked()

    def sign(self, root: Signer) -> bytes:
        return sign1(self.to_cbor(), root)


@dataclass(frozen=True)
class RootRotation:
    """The current root names the next one; ``epoch`` is the next root's number."""

    epoch: int
    next_root: bytes

    def to_cbor(self) -> bytes:
        kid_of(self.next_root)
        return dumps({K_KIND: KIND_ROOT_ROTATION, R_EPOCH: _uint(self.epoch, "epoch"),
                      R_NEXT_ROOT: self.next_root})

    @classmethod
    def from_cbor(cls, payload: bytes) -> RootRotation:
        b = _payload_map(payload, KIND_ROOT_ROTATION, {K_KIND, R_EPOCH, R_NEXT_ROOT}, set())
        nxt = b[R_NEXT_ROOT]
        if not isinstance(nxt, bytes) or len(nxt) != 32:
            raise Malformed("the next root must be a 32-byte public key")
        return cls(_uint(b[R_EPOCH], "epoch"), nxt)

    def sign(self, root: Signer) -> bytes:
        return sign1(self.to_cbor(), root)


@dataclass(frozen=True)
class Installed:
    """What a device runs in one component: its version and anti-rollback counter."""

    version: str
    sequence: int


@dataclass
class TrustedState:
    """A device's trust: its root, the root's epoch, and the current key list.

    Each ``update_*`` changes the state only after every check passed.
    """

    root: bytes
    epoch: int = 0
    key_list: KeyList = field(default_factory=lambda: KeyList(0))

    def _by_root(self, data: bytes) -> Sign1:
        msg = decode_sign1(data)
        if msg.kid != kid_of(self.root):
            raise NotRoot(f"signed by {msg.kid.hex()}, not the current root "
                          f"{kid_of(self.root).hex()}")
        msg.verify(self.root)
        return msg

    def update_key_list(self, data: bytes) -> KeyList:
        """Installs a key list the root signed, if newer than the current one."""
        new = KeyList.from_cbor(self._by_root(data).payload)
        if new.sequence <= self.key_list.sequence:
            raise StaleKeyList(f"key list {new.sequence} is not newer than the current "
                               f"{self.key_list.sequence}")
        self.key_list = new
        return new

    def rotate_root(self, data: bytes) -> RootRotation:
        """Moves trust to the next root named by a message the current root signed."""
        rot = RootRotation.from_cbor(self._by_root(data).payload)
        if rot.epoch != self.epoch + 1:
            raise StaleRotation(f"rotation to epoch {rot.epoch}, expected {self.epoch + 1}")
        self.root, self.epoch = rot.next_root, rot.epoch
        return rot

    def verify_manifest(self, data: bytes, *, board: str, installed: dict[str, Installed],
                        now: int, capacity: dict[str, int] | None = None) -> Manifest:
        """The manifest in ``data`` if a device on ``board`` running ``installed``
        at ``now`` (Unix seconds) may install it; ``capacity`` (bytes per
        target) is the check made before downloading."""
        msg = decode_sign1(data)
        entry = self.key_list.keys.get(msg.kid)
        if entry is None:
            raise UnknownKey(f"key {msg.kid.hex()} is not in key list "
                             f"{self.key_list.sequence}", "sign with a key the root lists")
        pub, key_expires = entry
        if now >= key_expires:
            raise KeyExpired(f"key {msg.kid.hex()} expired at {key_expires}")
        msg.verify(pub)
        m = Manifest.from_cbor(msg.payload)
        if m.board != board:
            raise WrongBoard(f"for board {m.board!r}, this is {board!r}")
        current = installed.get(m.component)
        if current is None:
            raise WrongComponent(f"this device has no component {m.component!r}")
        if m.sequence <= current.sequence:
            raise Rollback(f"sequence {m.sequence} is not above the device's counter "
                           f"{current.sequence}")
        if m.min_version is not None \
                and parse_version(current.version) < parse_version(m.min_version):
            raise VersionTooOld(f"needs {m.min_version} or later, the device runs "
                                f"{current.version}")
        if now >= m.expires:
            raise Expired(f"the manifest expired at {m.expires}")
        if capacity is not None and m.size > capacity.get(m.target, 0):
            raise TooLarge(f"{m.size} bytes do not fit {m.target} "
                           f"({capacity.get(m.target, 0)} bytes)")
        return m


class ImageCheck:
    """The streamed image's check: feed chunks, then :meth:`finish` before switching."""

    def __init__(self, manifest: Manifest):
        self._m = manifest
        self._h = hashlib.sha256()
        self._n = 0

    def update(self, chunk: bytes) -> None:
        self._n += len(chunk)
        if self._n > self._m.size:
            raise SizeMismatch(f"more than the manifest's {self._m.size} bytes")
        self._h.update(chunk)

    def finish(self) -> None:
        if self._n != self._m.size:
            raise SizeMismatch(f"{self._n} bytes, the manifest says {self._m.size}")
        if self._h.digest() != self._m.digest:
            raise DigestMismatch("the image's SHA-256 is not the manifest's digest")


__all__ = ["BadSignature", "DigestMismatch", "Expired", "ImageCheck", "Installed", "KeyExpired",
           "KeyList", "Manifest", "NotRoot", "Rollback", "RootRotation", "SizeMismatch",
           "StaleKeyList", "StaleRotation", "TooLarge", "TrustedState", "UnknownKey",
           "VersionTooOld", "WrongBoard", "WrongComponent"]
