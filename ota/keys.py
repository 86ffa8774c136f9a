"""The OTA root key: the Ed25519 key pair whose public half every device trusts.

The private key lives in ``$EDGE_HOME/keys/ota-root.pem`` (PKCS#8 PEM, mode
0600, in a 0700 folder), its public half beside it in ``ota-root.pub``. It is
created on first use, with a notice on stderr: whoever holds it can update the
whole fleet, so it must be backed up and guarded. Devices receive the raw
32-byte public key as their trust anchor at provisioning
(``identity/anchors.json``). :func:`root_signer` signs the key list
(``edge ota keygen``). :func:`rotate_root` makes the next root: the current
one signs a root rotation (docs/protocol.md 6.4) kept beside it as
``ota-root-rotation-<epoch>.cose``, and is retired to
``ota-root-epoch-<n>.pem``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import state_dir

ROOT_NAME = "ota-root"


def key_dir() -> Path:
    """The folder holding the bench's signing keys: ``<state dir>/keys``."""
    return state_dir() / "keys"


def _paths() -> tuple[Path, Path]:
    d = key_dir()
    return d / f"{ROOT_NAME}.pem", d / f"{ROOT_NAME}.pub"


def new_private_key(private: Path):
    """A new Ed25519 key written to ``private`` (PKCS#8 PEM, 0600, folder 0700), or None if one is there.

    The file appears whole or not at all (written under a temporary name, then
    linked: link() fails when the name is taken, so two writers racing keep
    one key and never overwrite it).
    """
    from Crypto.PublicKey import ECC

    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ECC.generate(curve="ed25519")
    # Unique per process and thread: `edge flash --all` provisions from threads.
    tmp = private.with_name(f".{private.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.export_key(format="PEM"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, private)
        except FileExistsError:
            return None
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _create(private: Path) -> None:
    if new_private_key(private) is not None:
        print(f"created the OTA root key at {private}; back it up: whoever holds it can "
              "update your fleet", file=sys.stderr)


def root_public_key(create: bool = True) -> bytes:
    """The raw 32-byte Ed25519 public key of the OTA root; creates the pair if absent.

    With ``create=False`` a missing key raises :class:`NotFound`.
    """
    from Crypto.PublicKey import ECC

    private, public = _paths()
    if public.exists():
        try:
            return ECC.import_key(public.read_text()).export_key(format="raw")
        except (ValueError, IndexError, TypeError):
            raise BadInput(f"{public} is not an Ed25519 public key",
                           f"delete it: it is made again from {private.name}") from None
    if not private.exists():
        if not create:
            raise NotFound(f"no OTA root key at {private}",
                           "restore it from your backup, or run `edge provision` to create one")
        _create(private)
    try:
        key = ECC.import_key(private.read_text())
    except (ValueError, IndexError, TypeError):
        raise BadInput(f"{private} is not an Ed25519 private key",
                       "restore it from your backup") from None
    if key.curve != "Ed25519":
        raise BadInput(f"{private} holds a {key.curve} key, not Ed25519",
                       "restore the OTA root key from your backup")
    pem = key.public_key().export_key(format="PEM")
    tmp = public.with_name(f".{public.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(pem)
    tmp.replace(public)
    return key.public_key().export_key(format="raw")


def root_signer():
    """The OTA root as an :class:`~edge_ota.cose.Ed25519Signer`; creates the pair if absent."""
    from Crypto.PublicKey import ECC

    from edge_ota.cose import Ed25519Signer

    root_public_key()
    private, _ = _paths()
    return Ed25519Signer(ECC.import_key(private.read_text()))


ROTATION = "ota-root-rotation-{epoch}.cose"     # the rotation to ``epoch``, signed by root ``epoch - 1``
RETIRED = "ota-root-epoch-{epoch}.pem"          # a root that was rotated away, kept for the record


def root_epoch() -> int:
    """The current root's epoch: the number of rotations made (0: the first root)."""
    d = key_dir()
    n = 0
    while (d / ROTATION.format(epoch=n + 1)).exists():
        n += 1
    return n


def rotate_root() -> tuple[int, bytes, Path]:
    """Make the next root and the rotation the current root signs for it.

    Returns (new epoch, new public key, rotation file). Order, so a crash
    leaves a state the next call repairs or refuses clearly: the next key is
    written (``ota-root.next.pem``), then the rotation file, then the current
    root is retired and the next one takes its name.
    """
    from edge_ota.manifest import RootRotation

    signer = root_signer()
    private, public = _paths()
    epoch = root_epoch() + 1
    nxt = private.with_name(f"{ROOT_NAME}.next.pem")
    if nxt.exists():
        raise BadInput(f"{nxt} is left from a root rotation that did not finish",
                       "if ota-root-rotation files name its key, rename it to ota-root.pem; "
                       "otherwise delete it and rotate again")
    key = new_private_key(nxt)
    if key is None:
        raise BadInput(f"{nxt} appeared while rotating", "run one rotation at a time")
    new_pub = key.public_key().export_key(format="raw")
    rotation = RootRotation(epoch, new_pub).sign(signer)
    path = key_dir() / ROTATION.format(epoch=epoch)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(rotation)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    os.link(private, private.with_name(RETIRED.format(epoch=epoch - 1)))
    nxt.replace(private)
    public.unlink(missing_ok=True)
    root_public_key()
    return epoch, new_pub, path
