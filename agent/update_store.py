"""The update store: the images of published OTA releases, checked before they are accepted.

``edge ota publish`` puts an image here and a release in the registry
(:meth:`edge_agent.store.Store.add_release`); the OTA server
(:mod:`edge_agent.ota_server`) reads it back to serve a transfer.

Rules it keeps:

- **Checked before accepted.** A manifest is published only after the checks
  a device makes that do not depend on the device (docs/protocol.md 6.5, in
  its order: shape, the signing key in the current key list and not expired,
  the signature, the payload, the expiry) and the image's size and SHA-256
  against it. Each refusal names its check and the fix (:data:`FIX`);
  nothing is written before every check passed.
- **One file per image, named by its digest.** ``<updates>/<sha256 hex>``,
  written under a new name, synced, then renamed: a reader or a power cut
  finds the whole image or none. The same image published twice is one file.
- **Read back checked.** An image is read whole and its size and digest are
  checked against the release before a single byte is served: a damaged or
  missing file is an error naming it and the fix (publish it again), never a
  transfer a device would refuse at its end.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import private_dir, updates_dir, write_atomic

if TYPE_CHECKING:
    from edge_agent.store import Release, Store

FIX = {
    "unknown-key": "sign with a key the current key list names (`edge ota keygen`)",
    "key-expired": "make a new signing key (`edge ota keygen --signing NAME`) and sign again",
    "bad-signature": "the file was changed or signed by another key: sign the image again",
    "wrong-board": "sign the board's own image with --board set to it",
    "rollback": "sign again with a --sequence above the device's counter",
    "expired": "sign again (--expires sets how long it is accepted)",
    "size-mismatch": "pass the image the manifest was made for, or sign this one",
    "digest-mismatch": "pass the image the manifest was made for, or sign this one",
}


def iso(ts: int) -> str:
    """Unix seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def checks(data: bytes, key_list: Any, names: dict[str, str], board: str | None,
           installed_sequence: int | None, image: str | None) -> Iterator[tuple[str, str]]:
    """Each check of section 6.5 that applies on the host, in order, as
    ``(step, detail)``; raises the failing one's :class:`OtaError` with its ``step``."""
    from edge_ota.cose import OtaError, decode_sign1
    from edge_ota.manifest import (DigestMismatch, Expired, KeyExpired, Manifest, Rollback,
                                   SizeMismatch, UnknownKey, WrongBoard)

    step = "shape"

    def at(name: str) -> None:
        nonlocal step
        step = name

    try:
        msg = decode_sign1(data)
        yield step, "a COSE_Sign1 in deterministic CBOR"
        at("signature")
        now = int(time.time())
        entry = key_list.keys.get(msg.kid)
        if entry is None:
            raise UnknownKey(f"key {msg.kid.hex()} is not in key list {key_list.sequence} "
                             "(unknown or revoked)")
        pub, key_expires = entry
        if now >= key_expires:
            raise KeyExpired(f"key {msg.kid.hex()} expired at {iso(key_expires)}")
        msg.verify(pub)
        who = names.get(msg.kid.hex()) or msg.kid.hex()
        yield step, f"by {who} ({msg.kid.hex()}), listed in key list {key_list.sequence} by the root"
        at("payload")
        m = Manifest.from_cbor(msg.payload)
        yield step, (f"{m.component} {m.version} for {m.board}, sequence {m.sequence}"
                     + (f", needs {m.min_version}+" if m.min_version else ""))
        if board is not None:
            at("board")
            if m.board != board:
                raise WrongBoard(f"for board {m.board!r}, not {board!r}")
            yield step, board
        if installed_sequence is not None:
            at("counter")
            if m.sequence <= installed_sequence:
                raise Rollback(f"sequence {m.sequence} is not above the counter {installed_sequence}")
            yield step, f"{m.sequence} > {installed_sequence}"
        at("expiry")
        if now >= m.expires:
            raise Expired(f"expired at {iso(m.expires)}")
        yield step, f"until {iso(m.expires)}"
        if image is not None:
            at("size")
            size = os.path.getsize(image)
            if size != m.size:
                raise SizeMismatch(f"the image is {size} bytes, the manifest says {m.size}")
            yield step, f"{size} bytes"
            at("digest")
            h = hashlib.sha256()
            with open(image, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 16), b""):
                    h.update(chunk)
            if h.digest() != m.digest:
                raise DigestMismatch("the image's SHA-256 is not the manifest's digest")
            yield step, f"sha256 {m.digest.hex()}"
    except OtaError as e:
        e.step = step  # type: ignore[attr-defined]
        raise


class UpdateStore:
    """The images of published releases, in ``root`` (default ``$EDGE_HOME/updates``)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else updates_dir()

    def _folder(self, create: bool) -> Path:
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"the update store {self.root} is not a folder",
                           "move that file away; `edge ota publish` makes the folder again")
        if create:
            private_dir(self.root)
        return self.root

    def path_of(self, digest: bytes) -> Path:
        """Where the image with SHA-256 ``digest`` is kept."""
        return self.root / digest.hex()

    def put(self, image: bytes, digest: bytes) -> str:
        """Keep ``image`` (whose SHA-256 must be ``digest``); its file name in the store."""
        from edge_ota.manifest import DigestMismatch

        if hashlib.sha256(image).digest() != digest:
            raise DigestMismatch("the image changed while it was published", FIX["digest-mismatch"])
        path = self._folder(create=True) / digest.hex()
        if path.is_file() and path.stat().st_size == len(image) and \
                hashlib.sha256(path.read_bytes()).digest() == digest:
            return path.name          # the same image, published before
        try:
            write_atomic(path, image)
        except OSError as e:
            raise BadInput(f"cannot write the image into the update store {self.root}: {e.strerror or e}",
                           "free some space, or make the folder writable") from None
        return path.name

    def load(self, release: Release) -> bytes:
        """The image of ``release``, whole, after its size and digest are checked."""
        path = self._folder(create=False) / release.image
        fix = (f"publish it again: `edge ota publish IMAGE MANIFEST` with the image of "
               f"{release.component} {release.version} (sha256 {release.digest.hex()[:16]}...)")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the image of release {release.id} is missing from the update store ({path})",
                           fix) from None
        except OSError as e:
            raise BadInput(f"cannot read the image of release {release.id} at {path}: {e.strerror or e}",
                           fix) from None
        if len(data) != release.size or hashlib.sha256(data).digest() != release.digest:
            raise BadInput(f"the image of release {release.id} in the update store is damaged ({path}: "
                           f"{len(data)} bytes, its SHA-256 is not the release's)", fix)
        return data


def publish(store: Store, updates: UpdateStore, manifest: bytes, image: Path, key_list: Any,
            names: dict[str, str], *, fraction: float, halt_at: float, min_devices: int,
            grow: tuple[float, float] | None = None, at: float | None = None) -> tuple[Release, bool]:
    """Check ``manifest`` and ``image`` (:func:`checks`), keep the image, record the release.

    Returns (the release, whether it is new); raises the failing check's
    :class:`~edge_ota.cose.OtaError` (with :data:`FIX`'s hint) before
    anything is written.
    """
    from edge_agent.messages import MAX_MANIFEST
    from edge_ota.cose import OtaError, decode_sign1
    from edge_ota.manifest import Manifest

    if len(manifest) > MAX_MANIFEST:
        raise BadInput(f"the manifest is {len(manifest)} bytes: an OTA_OFFER carries at most {MAX_MANIFEST}",
                       "this is not a manifest `edge ota sign` makes: sign the image again")
    try:
        for _ in checks(manifest, key_list, names, None, None, str(image)):
            pass
    except OtaError as e:
        if e.hint is None:
            e.hint = FIX.get(e.check, "sign the image again (`edge ota sign`)")
        raise
    m = Manifest.from_cbor(decode_sign1(manifest).payload)
    name = updates.put(Path(image).read_bytes(), m.digest)
    return store.add_release(board=m.board, component=m.component, version=m.version, sequence=m.sequence,
                             digest=m.digest, size=m.size, manifest=manifest, image=name, expires=m.expires,
                             fraction=fraction, halt_at=halt_at, min_devices=min_devices, grow=grow, at=at)
