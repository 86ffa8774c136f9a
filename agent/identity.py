"""Minting a device's identity on the bench (``edge provision``, ``edge flash``).

What a board gets, and where:

- ``identity/key``: its X25519 private key, made **on the board** from
  ``os.urandom`` by ``edgefw.identity.generate``; only the public key comes
  back. A board without ``os.urandom``, or whose generator fails its health
  check (``edgefw.identity.rng_ok``: stuck or repeating output, as on the
  emulated RP2040), gets a key drawn here from :mod:`secrets`, sent once and
  not kept (the host's copy is dropped).
- ``identity/setup``: the 8-digit setup code (the device needs it in plain for
  pairing); ``identity/anchors.json``: ``{"v": 1, "ota_root": "<64 hex>"}``,
  the OTA root public key (:mod:`edge_ota.keys`).
- ``config.json``: ``device_id`` and ``board`` (other keys kept), written
  last: a board whose config names the id its key derives to holds a
  *complete* identity; anything else is an interrupted or foreign one.

The registry row is written before the board's files and marked complete
after ``config.json``. A run cut short in between leaves an *orphan*: it is
removed at once when the link fails, else when the board is provisioned
again, and ``edge label`` refuses it meanwhile (its code was never on a
board that anyone could pair with).

Device id: ``<board>-<12 hex>``, the hex being the first 6 bytes of
SHA-256(public key), lowercase. It fits the firmware's rule (1-64 of
``[A-Za-z0-9._-]``) and the pairing payload's alphabet. 48 bits make a
collision unlikely below millions of devices; the registry refuses a second
device with the same id or public key, and provisioning then draws a new key.
Key fingerprint: the first 8 bytes of the same hash, 16 lowercase hex.

The registry keeps the public key, fingerprint, a salted scrypt verifier of the
setup code (``scrypt$n$r$p$salt_hex$hash_hex``) and the plain code only until
the label is made (``edge label``). ``provisioned`` stays 0 until ``edge
flash`` has read a passing self-test (:meth:`Store.mark_provisioned`).

Idempotent: a board with a complete identity that the registry knows (same
device id and public key) keeps it unless ``reprovision=True``. A corrupt key
file, or a complete identity the registry does not know, is reported and
replaced only with ``reprovision=True`` (owners paired with the old identity
must pair again).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import re
import secrets
import socket
from typing import TYPE_CHECKING, NamedTuple

from edge_agent import device_fs
from edge_agent.errors import BadInput, DeviceError

if TYPE_CHECKING:
    from edge_agent.board_link import BoardLink
    from edge_agent.store import Store

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
ID_HEX = 12


class Identity(NamedTuple):
    """A device identity; ``setup_code`` is set only when it was just minted."""

    device_id: str
    public_key: bytes
    fingerprint: str
    setup_code: str | None
    created: bool
    key_from_bench: bool = False     # just minted with a key drawn here (no usable RNG on the board)


def fingerprint(public_key: bytes) -> str:
    """16 lowercase hex digits: the first 8 bytes of SHA-256(public key)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def device_id_for(board: str, public_key: bytes) -> str:
    """The device id a key gets on a board type: ``<board>-<12 hex of SHA-256(key)>``."""
    return f"{board}-{hashlib.sha256(public_key).hexdigest()[:ID_HEX]}"


# -- setup codes

def is_weak_code(code: str) -> bool:
    """True for codes a person might guess: one or two digits repeated
    (00000000, 12121212) or a run up or down (12345678, 87654321, 90123456)."""
    if len(code) != 8 or not code.isdigit():
        raise ValueError("a setup code is 8 digits")
    d = [int(c) for c in code]
    steps = {(b - a) % 10 for a, b in zip(d, d[1:])}
    return code == code[:2] * 4 or steps in ({1}, {9})


def new_setup_code() -> str:
    """8 random decimal digits from :mod:`secrets`, weak patterns redrawn."""
    while True:
        code = f"{secrets.randbelow(10**8):08d}"
        if not is_weak_code(code):
            return code


def setup_verifier(code: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex``: a salted scrypt hash of the code."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(code.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_setup_code(verifier: str, code: str) -> bool:
    """Whether ``code`` matches ``verifier`` (compared in constant time).

    A malformed verifier raises :class:`BadInput`; limits on n, r, p keep a
    tampered registry from making this use unbounded memory.
    """
    try:
        kind, n, r, p, salt, digest = verifier.split("$")
        n_, r_, p_ = int(n), int(r), int(p)
        salt_b, digest_b = bytes.fromhex(salt), bytes.fromhex(digest)
    except (ValueError, AttributeError):
        raise BadInput("the setup-code verifier is malformed",
                       "mint a new identity with `edge flash --reprovision`") from None
    if kind != "scrypt" or not (2 <= n_ <= 2**20 and n_ & (n_ - 1) == 0) or not 1 <= r_ <= 32 \
            or not 1 <= p_ <= 16 or not 8 <= len(salt_b) <= 64 or not 16 <= len(digest_b) <= 64:
        raise BadInput("the setup-code verifier has unsupported parameters",
                       "mint a new identity with `edge flash --reprovision`")
    got = hashlib.scrypt(code.encode(), salt=salt_b, n=n_, r=r_, p=p_, dklen=len(digest_b),
                         maxmem=256 * r_ * n_ * p_ + 2**20)
    return hmac.compare_digest(got, digest_b)


# -- the board side, through the raw REPL

# Board snippets use binascii, not bytes.hex/fromhex (optional in MicroPython builds).
# Each starts with a collection: the agent that the raw REPL interrupted still
# holds most of a small heap, and what it left free is fragmented.
_PRELUDE = "import gc\ngc.collect()\nfrom edgefw import identity as _i\ngc.collect()\n"
# 'urandom': the board's generator passes its health check (edgefw.identity.rng_ok);
# when it does not, the key is drawn here and sent once.
_STATUS = _PRELUDE + """\
import json
from binascii import hexlify
_s, _k = _i.status('')
print(json.dumps({'key': _s, 'pub': hexlify(_k).decode() if _k else None,
                  'urandom': _i.rng_ok()}))
"""


def _board_state(link: BoardLink) -> tuple[dict, dict]:
    """(key status from the board, its config.json as a dict or {})."""
    try:
        out = link.exec(_STATUS)
    except DeviceError as e:
        if "ImportError" in e.message or "no module named" in e.message.lower():
            raise DeviceError(f"the board on {link.port} has no Edge Agent firmware with "
                              "identity support", "deploy it first: `edge flash --port "
                              f"{link.port} --board BOARD`") from None
        raise
    try:
        state = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeviceError(f"the board on {link.port} answered the identity check with {out!r}",
                          "check that it runs this version of the agent (`edge flash`)") from None
    raw = link.get(device_fs.CONFIG_JSON)
    config: dict = {}
    if raw:
        try:
            loaded = json.loads(raw)
            config = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            config = {}
    return state, config


_GENERATE = (_PRELUDE + "from binascii import hexlify, unhexlify\n"
             "print(hexlify(_i.generate(''%s)).decode())")


def _generate_on_board(link: BoardLink, urandom: bool) -> bytes:
    if urandom:
        out = link.exec(_GENERATE % "")
    else:
        # No usable RNG on the board: a key from the bench, sent once, not kept.
        key = bytearray(secrets.token_bytes(32))
        try:
            out = link.exec(_GENERATE % f", unhexlify({key.hex()!r})")
        finally:
            key[:] = bytes(32)
            del key
    try:
        pub = bytes.fromhex(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pub = b""
    if len(pub) != 32:
        raise DeviceError(f"the board on {link.port} returned no public key ({out!r})",
                          "run `edge provision` again; if it persists, re-flash the agent")
    return pub


def _operator(operator: str | None) -> str:
    if operator:
        return operator
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def provision(link: BoardLink, store: Store, board: dict, *, reprovision: bool = False,
              operator: str | None = None) -> Identity:
    """Give the board on ``link`` an identity (or keep the one it has); see the module doc.

    ``board`` is the board file (:func:`edge_agent.boards.load_board`).
    Raises :class:`DeviceError` for a corrupt key or an identity the registry
    does not know (both fixed by ``reprovision=True``) and when the board
    does not answer.
    """
    from edge_agent.boards import board_name
    from edge_ota.keys import root_public_key

    name = board_name(board.get("name") if isinstance(board, dict) else None)
    state, config = _board_state(link)
    key_state, pub_hex = state.get("key"), state.get("pub")
    old_id = config.get("device_id") if isinstance(config.get("device_id"), str) else None

    if key_state == "ok" and not reprovision:
        pub = bytes.fromhex(str(pub_hex))
        derived = device_id_for(name, pub)
        if old_id == derived:
            known = store.identity(derived)
            if known is not None and known["public_key"] == pub:
                if not known["identity_complete"]:
                    # The board got config.json, then the bench stopped
                    # before noting it: the identity is whole on the board.
                    store.complete_identity(derived)
                _ensure_anchors(link, root_public_key())
                return Identity(derived, pub, fingerprint(pub), None, False)
            raise DeviceError(
                f"the board on {link.port} holds identity {derived} (key {fingerprint(pub)}), "
                f"which the registry {store.path} does not know",
                "use the registry that provisioned it (--db), or mint a new identity with "
                "--reprovision (owners paired with it must pair again)")
        # A key without its config: an earlier run was cut short. Nobody can
        # have paired with it, so it is replaced below, and the registry row
        # that run left (an orphan, with its plain code) goes.
        store.drop_orphan(derived)
    elif key_state == "corrupt" and not reprovision:
        raise DeviceError(
            f"the identity key on the board on {link.port} is corrupt (identity/key fails its CRC)",
            "mint a new identity with --reprovision (owners paired with it must pair again)")
    elif key_state not in ("ok", "corrupt", "missing"):
        raise DeviceError(f"the board on {link.port} reported key state {key_state!r}",
                          "re-flash the agent with `edge flash`")

    anchor = root_public_key()
    board_rng = bool(state.get("urandom"))
    for _ in range(3):
        pub = _generate_on_board(link, board_rng)
        device_id = device_id_for(name, pub)
        taken = store.identity(device_id)
        if taken is None or taken["public_key"] == pub:
            break
    else:   # three 48-bit collisions in a row: something is wrong with the board's RNG
        raise DeviceError(f"the board on {link.port} keeps producing keys already registered",
                          "check its random number generator; do not ship it")
    code = new_setup_code()
    fp = fingerprint(pub)
    store.record_identity(device_id, name, pub, fp, setup_verifier(code), code, _operator(operator))
    if old_id and old_id != device_id:
        store.take_setup_code(old_id)    # a label for a replaced identity must not be printed
    try:
        link.exec(_PRELUDE + f"_i.write_setup('', {code!r})")
        _ensure_anchors(link, anchor)
        config = {**config, "device_id": device_id, "board": name}
        link.put(device_fs.CONFIG_JSON, device_fs.config_json(config))   # last: marks it complete
    except BaseException:
        # The board does not hold this identity (a power cut, a lost link):
        # no label may be made for it. If the bench itself stops here, the
        # row stays incomplete, is refused by `edge label`, and the next run
        # on this board removes it.
        store.drop_orphan(device_id)
        raise
    store.complete_identity(device_id)
    return Identity(device_id, pub, fp, code, True, key_from_bench=not board_rng)


def _ensure_anchors(link: BoardLink, ota_root: bytes) -> None:
    # After `edge ota keygen --rotate-root` a new board trusts the current
    # root at its epoch (docs/protocol.md 6.4): a rotation to epoch n + 1
    # must come from it.
    from edge_ota.keys import root_epoch

    want: dict[str, object] = {"v": 1, "ota_root": ota_root.hex()}
    if root_epoch():
        want["epoch"] = root_epoch()
    out = link.exec(_PRELUDE + "import json\nprint(json.dumps(_i.anchors('')))")
    try:
        have = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        have = None
    if have != want:
        link.exec(_PRELUDE + f"_i.write_anchors('', {want!r})")
