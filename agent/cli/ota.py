"""``edge ota``: the release side of signed updates (docs/protocol.md section 6).

The files live in ``$EDGE_HOME/keys`` (0700) beside the root key
(:mod:`edge_ota.keys`):

- ``NAME.pem``: a signing key, Ed25519 PKCS#8 PEM, mode 0600, never overwritten;
- ``ota-keys.cose``: the key list (6.3) the root signed last;
- ``ota-keys.json``: which name each listed kid has, for people and ``--revoke``.

``keygen`` makes a signing key and re-signs the list, ``sign`` makes a
manifest (6.2), ``verify`` makes a device's checks (6.5) on the host, and
``bundle`` makes the image a manifest covers (7.1, 7.8). ``publish``,
``rollout``, ``status`` and ``push`` (:mod:`edge_agent.cli.ota_rollout`) put releases into the gateway's update
store (:mod:`edge_agent.update_store`), steer their staged rollout and follow
what each device reports (:mod:`edge_agent.ota_server`, section 7).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import click

from edge_agent.cli.options import Duration, check_regular_file
from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import write_atomic as _write_atomic
from edge_agent.update_store import iso as _iso

DEFAULT_KEY = "ota-signing"
KEY_LIST = "ota-keys.cose"
KEY_NAMES = "ota-keys.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _key_name(name: str) -> str:
    from edge_ota.keys import ROOT_NAME

    if not _NAME.fullmatch(name) or name in (ROOT_NAME, "ota-keys"):
        raise BadInput(f"{name!r} is not a name for a signing key",
                       "use letters, digits, '.', '_' and '-' (not ota-root or ota-keys)")
    return name


def _load_signer(name: str):
    from Crypto.PublicKey import ECC

    from edge_ota.cose import Ed25519Signer
    from edge_ota.keys import key_dir

    path = key_dir() / f"{_key_name(name)}.pem"
    if not path.exists():
        raise NotFound(f"no signing key {name!r} at {path}",
                       f"make one with `edge ota keygen --signing {name}`")
    try:
        key = ECC.import_key(path.read_text())
    except (ValueError, IndexError, TypeError):
        raise BadInput(f"{path} is not an Ed25519 private key", "restore it from your backup") from None
    if key.curve != "Ed25519" or not key.has_private():
        raise BadInput(f"{path} is not an Ed25519 private key", "restore it from your backup")
    return Ed25519Signer(key)


def _current_list(root: bytes):
    """The key list the root signed last (checked against ``root``) and the
    names of its kids; an empty list (sequence 0) when there is none yet."""
    from edge_ota.keys import key_dir
    from edge_ota.manifest import KeyList, TrustedState

    path, names_path = key_dir() / KEY_LIST, key_dir() / KEY_NAMES
    names: dict[str, str] = {}
    if names_path.exists():
        try:
            names = dict(json.loads(names_path.read_text()))
        except (ValueError, TypeError):
            raise BadInput(f"{names_path} is not a JSON map", "delete it; kids show unnamed") from None
    if not path.exists():
        return KeyList(0), names
    state = TrustedState(root)
    try:
        state.update_key_list(path.read_bytes())
    except BadInput as e:
        raise BadInput(f"the key list {path} does not verify against the root: {e.message}",
                       "restore it from your backup, or delete it and run `edge ota keygen` "
                       "again for every signing key") from None
    return state.key_list, names


def _save_list(root_signer, sequence: int, keys: dict[bytes, tuple[bytes, int]],
               names: dict[str, str]):
    from edge_ota.keys import key_dir
    from edge_ota.manifest import KeyList

    new = KeyList(sequence, keys).checked()
    _write_atomic(key_dir() / KEY_LIST, new.sign(root_signer))
    kept = {k.hex() for k in keys}
    _write_atomic(key_dir() / KEY_NAMES,
                  json.dumps({k: v for k, v in names.items() if k in kept}, indent=1).encode())
    return new


def _rows(key_list, names: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": names.get(kid.hex()), "kid": kid.hex(), "expires": exp,
             "expires_at": _iso(exp)}
            for kid, (_, exp) in sorted(key_list.keys.items(), key=lambda kv: kv[1][1])]


@click.group()
def ota() -> None:
    """Signed updates: signing keys, manifests and their checks (protocol section 6).

    \b
    Example:
      edge ota keygen                          # a signing key, listed by the root
      edge ota bundle --board esp32 --version 1.3.0 -o build/agent.bin
      edge ota sign build/agent.bin --board esp32 --component agent \\
          --version 1.3.0 --sequence 7 -o agent.manifest
      edge ota verify agent.manifest --image build/agent.bin --board esp32

    Keys live in $EDGE_HOME/keys; back up ota-root.pem, it can update the fleet.
    """


@ota.command()
@click.option("--signing", "name", default=DEFAULT_KEY, show_default=True, metavar="NAME",
              help="Name of the signing key to make ($EDGE_HOME/keys/NAME.pem).")
@click.option("--expires", type=Duration(min=1), default="365d", show_default=True,
              help="How long devices accept the key (30d, 12h, ...).")
@click.option("--revoke", metavar="NAME", default=None,
              help="Make no key: re-sign the key list without the key NAME.")
@click.option("--rotate-root", is_flag=True,
              help="Make no signing key: make a new OTA root, signed over by the current one "
                   "(devices move to it when they next ask for updates), and re-sign the key list with it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keygen(name: str, expires: float, revoke: str | None, rotate_root: bool, as_json: bool) -> None:
    """Make a signing key and re-sign the key list with the OTA root.

    The new key is Ed25519 (PKCS#8 PEM, mode 0600) in $EDGE_HOME/keys; an
    existing file is never overwritten. The root (made on first use) signs a
    new key list, one sequence above the last, naming every signing key that
    has not expired. --revoke re-signs the list without a key: devices that
    receive it refuse that key's manifests.

    \b
    Example:
      edge ota keygen --signing release-2025 --expires 365d
      edge ota keygen --revoke release-2024
      edge ota keygen --rotate-root        # the old root stays as ota-root-epoch-N.pem

    --rotate-root: the current root signs a rotation to a new root
    (ota-root-rotation-N.cose in the key folder); gateways offer it to each
    device before anything else, and boards flashed from now on trust the new
    root at its epoch. Keep the retired root's file with your backups.
    """
    from edge_ota.cose import kid_of
    from edge_ota.keys import key_dir, new_private_key, root_signer

    if rotate_root and revoke is not None:
        raise BadInput("--rotate-root and --revoke are two steps", "run them one after the other")
    root = root_signer()
    current, names = _current_list(root.public_key)
    now = int(time.time())
    keys = {kid: entry for kid, entry in current.keys.items() if entry[1] > now}
    made: dict[str, Any] | None = None
    revoked: dict[str, Any] | None = None
    rotated: dict[str, Any] | None = None
    if rotate_root:
        from edge_ota.keys import rotate_root as rotate

        epoch, new_root, rotation = rotate()
        root = root_signer()
        rotated = {"epoch": epoch, "root": new_root.hex(), "kid": kid_of(new_root).hex(),
                   "rotation": str(rotation)}
    elif revoke is not None:
        by_name = {v: k for k, v in names.items()}
        kid_hex = by_name.get(_key_name(revoke))
        if kid_hex is None and (key_dir() / f"{revoke}.pem").exists():
            kid_hex = _load_signer(revoke).kid.hex()
        if kid_hex is None or bytes.fromhex(kid_hex) not in keys:
            raise NotFound(f"no signing key {revoke!r} in key list {current.sequence}",
                           f"check the name: the list's keys are named in {key_dir() / KEY_NAMES}")
        del keys[bytes.fromhex(kid_hex)]
        revoked = {"name": revoke, "kid": kid_hex}
    else:
        path = key_dir() / f"{_key_name(name)}.pem"
        if path.exists():
            raise BadInput(f"a signing key {name!r} exists already at {path}",
                           "pick another name (--signing NAME): a key file is never overwritten")
        key = new_private_key(path)
        if key is None:     # the name was taken meanwhile
            raise BadInput(f"a signing key {name!r} exists already at {path}",
                           "pick another name (--signing NAME)")
        pub = key.public_key().export_key(format="raw")
        kid = kid_of(pub)
        key_expires = now + int(expires)
        keys[kid] = (pub, key_expires)
        names[kid.hex()] = name
        made = {"name": name, "path": str(path), "kid": kid.hex(), "expires": key_expires,
                "expires_at": _iso(key_expires)}
    new = _save_list(root, current.sequence + 1, keys, names)
    rows = _rows(new, names)
    list_path = str(key_dir() / KEY_LIST)
    result = {"key": made, "revoked": revoked, "root_rotation": rotated,
              "key_list": {"path": list_path, "sequence": new.sequence, "keys": rows}}
    if as_json:
        click.echo(json.dumps(result))
        return
    if made:
        click.echo(f"made signing key {made['name']} ({made['kid']}) at {made['path']}, "
                   f"valid until {made['expires_at']}")
    if revoked:
        click.echo(f"revoked signing key {revoked['name']} ({revoked['kid']}); its file stays")
    if rotated:
        click.echo(f"rotated the OTA root to epoch {rotated['epoch']} ({rotated['kid']}); the rotation "
                   f"is {rotated['rotation']}: gateways offer it to every device first")
    click.echo(f"key list {new.sequence} signed by the root at {list_path}:")
    for row in rows:
        click.echo(f"  {row['name'] or '?':20} {row['kid']}  until {row['expires_at']}")
    if not new.keys:
        click.echo("  (no signing keys: devices accept no manifest)")


@ota.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--board", required=True, help="Board name the image is built for (esp32, picow, ...).")
@click.option("--component", required=True, type=click.Choice(["agent", "firmware"]),
              help="What the image replaces.")
@click.option("--version", "version", required=True, metavar="X.Y.Z", help="The image's version.")
@click.option("--sequence", required=True, type=click.IntRange(0), metavar="N",
              help="Anti-rollback counter: above every earlier manifest's for this component.")
@click.option("--min-version", default=None, metavar="X.Y.Z",
              help="The device must run at least this version.")
@click.option("--expires", type=Duration(), default="90d", show_default=True,
              help="How long devices accept the manifest.")
@click.option("--key", "key_name", default=DEFAULT_KEY, show_default=True, metavar="NAME",
              help="Signing key ($EDGE_HOME/keys/NAME.pem).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's fields as JSON.")
def sign(image: str, board: str, component: str, version: str, sequence: int,
         min_version: str | None, expires: float, key_name: str, output: str,
         as_json: bool) -> None:
    """Make a signed manifest (COSE_Sign1) for an image.

    The digest (SHA-256) and size come from IMAGE; the key must be in the
    current key list (`edge ota keygen`). The file is written under a new
    name and renamed, so a reader never sees half of it.

    \b
    Example:
      edge ota sign build/agent.bin --board esp32 --component agent \\
          --version 1.3.0 --sequence 7 --min-version 1.0.0 -o agent.manifest
    """
    from edge_ota.keys import root_public_key
    from edge_ota.manifest import Manifest

    check_regular_file(image, "image")
    signer = _load_signer(key_name)
    current, _ = _current_list(root_public_key())
    entry = current.keys.get(signer.kid)
    now = int(time.time())
    if entry is None:
        raise BadInput(f"signing key {key_name!r} ({signer.kid.hex()}) is not in key list "
                       f"{current.sequence}: devices would refuse the manifest (unknown-key)",
                       "sign with a listed key, or make one with `edge ota keygen`")
    if entry[1] <= now:
        raise BadInput(f"signing key {key_name!r} expired at {_iso(entry[1])}",
                       "make a new one with `edge ota keygen --signing NAME`")
    data = Path(image).read_bytes()
    manifest = Manifest.for_image(data, board=board, component=component, version=version,
                                  sequence=sequence, expires=now + int(expires),
                                  min_version=min_version)
    signed = manifest.sign(signer)
    out = Path(output)
    _write_atomic(out, signed)
    fields = _fields(manifest)
    fields.update({"manifest": str(out), "bytes": len(signed), "key": key_name,
                   "kid": signer.kid.hex()})
    if as_json:
        click.echo(json.dumps(fields))
        return
    click.echo(f"signed {component} {version} for {board} (sequence {sequence}) with "
               f"{key_name} ({signer.kid.hex()}): {out}, {len(signed)} bytes")
    click.echo(f"  image {image}: {manifest.size} bytes, sha256 {manifest.digest.hex()}")
    click.echo(f"  expires {fields['expires_at']}")


def _fields(m) -> dict[str, Any]:
    return {"board": m.board, "component": m.component, "version": m.version,
            "sequence": m.sequence, "digest": m.digest.hex(), "size": m.size,
            "target": m.target, "min_version": m.min_version, "expires": m.expires,
            "expires_at": _iso(m.expires)}


@ota.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--image", default=None, type=click.Path(dir_okay=False),
              help="Also check the image's size and SHA-256 against the manifest.")
@click.option("--board", default=None, help="Check the manifest is for this board.")
@click.option("--installed-sequence", type=click.IntRange(0), default=None, metavar="N",
              help="Check the sequence is above a device's counter N.")
@click.option("--json", "as_json", is_flag=True, help="Print the list of checks as JSON.")
def verify(manifest: str, image: str | None, board: str | None,
           installed_sequence: int | None, as_json: bool) -> None:
    """Check a manifest as a device would, in the protocol's order (section 6.5).

    The signature and its key's chain are checked against the root's public
    key and the current key list in $EDGE_HOME/keys; then the board and the
    counter (when given), the expiry, and with --image the size and digest.
    Each check prints its result; the first failure ends the run with exit 5
    naming it (unknown-key, bad-signature, wrong-board, rollback, expired,
    size-mismatch, digest-mismatch, ...).

    \b
    Example:
      edge ota verify agent.manifest --image build/agent.bin --board esp32 \\
          --installed-sequence 6
    """
    from edge_agent.update_store import FIX, checks as host_checks
    from edge_ota.cose import OtaError
    from edge_ota.keys import root_public_key

    check_regular_file(manifest, "manifest")
    if image is not None:
        check_regular_file(image, "image")
    root = root_public_key(create=False)
    key_list, names = _current_list(root)
    data = Path(manifest).read_bytes()
    checks: list[dict[str, Any]] = []
    failure: OtaError | None = None
    try:
        for step, detail in host_checks(data, key_list, names, board, installed_sequence, image):
            checks.append({"check": step, "ok": True, "detail": detail})
    except OtaError as e:
        failure = e
        checks.append({"check": getattr(e, "step", e.check), "ok": False, "failed": e.check,
                       "detail": e.message.removeprefix(f"{e.check}: ")})
    if as_json:
        click.echo(json.dumps(checks))
    else:
        for c in checks:
            mark = "ok  " if c["ok"] else "FAIL"
            tail = c["detail"] if c["ok"] else f"{c['failed']}: {c['detail']}"
            click.echo(f"{mark} {c['check']:10} {tail}")
    if failure is not None:
        raise BadInput(f"{manifest} fails check {failure.message}",
                       failure.hint or FIX.get(failure.check, "sign the image again"))
    if not as_json:
        click.echo(f"{manifest}: every check passed")


_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_VERSION_LINE = re.compile(r'^VERSION = "[^"]*"$', re.M)
ESP_CHIP_ID_OFFSET = 12      # u16le in an ESP app image's extended header (esptool's layout)


def _agent_bundle(board: dict, version: str | None) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """The agent bundle for ``board``: ``firmware/edgefw`` compiled for its ``mpy_arch``
    in a temporary copy (``VERSION`` stamped there when ``version`` is given)."""
    import shutil
    import tempfile

    from edge_agent.firmware import agent_version, build
    from edge_agent.paths import FIRMWARE_DIR
    from edge_ota.bundle import pack

    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        shutil.copytree(FIRMWARE_DIR / "edgefw", src / "edgefw",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(FIRMWARE_DIR / "main.py", src / "main.py")
        init = src / "edgefw" / "__init__.py"
        if version is not None:
            text = init.read_text()
            if not _VERSION_LINE.search(text):
                raise BadInput(f"{FIRMWARE_DIR / 'edgefw' / '__init__.py'} states no VERSION to stamp",
                               'put a line VERSION = "x.y.z" in it')
            init.write_text(_VERSION_LINE.sub(f'VERSION = "{version}"', text, count=1))
        stated = agent_version(src)
        # Stage 0 (main.py) is never updated over the air: only the package goes in.
        files = [(p.relative_to(out).as_posix(), p.read_bytes())
                 for p in build(out, board.get("mpy_arch"), source=src)
                 if p.relative_to(out).parts[0] == "edgefw"]
    files.sort()
    return pack(files), stated, files


def _firmware_image(board: dict, firmware: str) -> bytes:
    """A MicroPython application image for ``board``'s OTA partition, checked (7.8)."""
    from esptool.targets import CHIP_DEFS

    from edge_agent.image import check_image

    name = board["name"]
    if board.get("ota_method") != "slots" or board.get("micropython_port") != "esp32":
        why = (f"its ota_method is {board.get('ota_method')!r}" if board.get("ota_method") != "slots"
               else f"its MicroPython port {board.get('micropython_port')!r} has no OTA partition")
        raise BadInput(f"board {name} cannot take a firmware image over the air: {why} "
                       "(protocol.md 7.8: ESP32 family boards with OTA slots only)",
                       f"update its firmware with `edge flash --firmware FILE`, or bundle its agent: "
                       f"`edge ota bundle --board {name}`")
    data = check_image(board, Path(firmware))
    chip = CHIP_DEFS.get(board.get("chip", ""))
    want = getattr(chip, "IMAGE_CHIP_ID", None)
    got = int.from_bytes(data[ESP_CHIP_ID_OFFSET:ESP_CHIP_ID_OFFSET + 2], "little") \
        if len(data) >= ESP_CHIP_ID_OFFSET + 2 else None
    if want is not None and got != want:
        raise BadInput(f"{firmware} is an application image for chip id {got}, not {board['chip']} "
                       f"(chip id {want})",
                       f"use a MicroPython .bin built for {name} (micropython.org/download)")
    return data


@ota.command()
@click.option("--board", "board_name", required=True, help="Board the image is for (esp32, picow, ...).")
@click.option("--version", "version", default=None, metavar="X.Y.Z",
              help="Stamp this version into the agent (edgefw/__init__ VERSION); default: as the source says.")
@click.option("--firmware", default=None, type=click.Path(dir_okay=False),
              help="Bundle this MicroPython firmware image instead of the agent (ESP32 family).")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Where to write the image [default: agent-BOARD-VERSION.bundle or firmware-BOARD.bin].")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def bundle(board_name: str, version: str | None, firmware: str | None, output: str | None,
           as_json: bool) -> None:
    """Build the image an update carries, ready for `edge ota sign`.

    The agent (component agent): firmware/edgefw compiled with mpy-cross for
    the board's mpy_arch and packed as an agent bundle (protocol section
    7.1). main.py is left out: stage 0 is never updated over the air. With
    --version the version is stamped into a temporary copy; the source tree
    is never changed.

    With --firmware (component firmware): a MicroPython application image
    for a board with OTA slots (ESP32 family), checked and copied.

    \b
    Example:
      edge ota bundle --board esp32 --version 1.3.0 -o agent.bundle
      edge ota sign agent.bundle --board esp32 --component agent \\
          --version 1.3.0 --sequence 7 -o agent.manifest
      edge ota bundle --board esp32 --firmware ESP32_GENERIC-OTA.bin -o fw.bin
    """
    import hashlib

    from edge_agent.boards import load_board

    board = load_board(board_name)
    if version is not None and not _VERSION.fullmatch(version):
        raise BadInput(f"version {version!r} is not X.Y.Z", "give three numbers, as in 1.3.0")
    files: list[tuple[str, bytes]] | None = None
    if firmware is not None:
        check_regular_file(firmware, "firmware image")
        data, component = _firmware_image(board, firmware), "firmware"
        default = f"firmware-{board_name}.bin"
    else:
        data, version, files = _agent_bundle(board, version)
        component = "agent"
        default = f"agent-{board_name}-{version}.bundle"
    out = Path(output or default)
    _write_atomic(out, data)
    digest = hashlib.sha256(data).hexdigest()
    result: dict[str, Any] = {
        "component": component, "board": board_name, "version": version, "output": str(out),
        "bytes": len(data), "sha256": digest, "mpy_arch": board.get("mpy_arch") if files else None,
        "files": [{"name": n, "bytes": len(d)} for n, d in files] if files is not None else None}
    if as_json:
        click.echo(json.dumps(result))
        return
    what = f"agent {version} ({len(files)} files, mpy_arch {result['mpy_arch']})" if files is not None \
        else f"firmware image {firmware}"
    click.echo(f"bundled {what} for {board_name}: {out}, {len(data)} bytes")
    click.echo(f"  sha256 {digest}")
    for name, body in files or []:
        click.echo(f"  {len(body):7} {name}")
    click.echo(f"next: edge ota sign {out} --board {board_name} --component {component} "
               f"--version {version or 'X.Y.Z'} --sequence N -o {out.with_suffix('.manifest')}")


# The gateway's side (publish, rollout, status, push) registers itself on the group.
from edge_agent.cli import ota_rollout  # noqa: E402,F401
