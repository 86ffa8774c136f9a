# The device's identity, in <root>/identity/, written by `edge provision`
# through the raw REPL and read later by pairing and OTA:
#   key           X25519 private key, 32 bytes. Made here from os.urandom and
#                 never printed: only its public key leaves the board.
#   setup         the 8-digit setup code, in plain: the PAKE needs the code
#                 itself on this side (protecting flash is the board's job).
#   anchors.json  trust anchors (the OTA root public key), JSON.
#   pub           the public key of `key`, kept so pairing need not spend a
#                 scalar multiplication on it (written by generate and by the
#                 first pairing; checked against the device id when read).
# Every file goes through atomic.write (a new name, then rename, with a
# CRC-32 tail): a power cut leaves the old or the new file, and a torn or
# altered file reads as absent or "corrupt", never as a wrong key.
import json
import os

from edgefw import atomic
from edgefw.x25519 import clamp, public_key as _public

_FILES = ("key", "setup", "anchors.json", "pub")


def _path(root, name=None):
    d = root + "/identity" if root else "identity"
    return d + "/" + name if name else d


def rng_ok():
    # A health check of os.urandom, not a proof of entropy: it exists, two
    # 32-byte draws differ, and each holds at least 16 distinct byte values
    # (a uniform draw has about 30; fewer than 16 has a probability near
    # 3e-17). It catches a stuck or repeating source, such as the emulated
    # RP2040's, which gives b'*' for every byte: every board would get the
    # same key. The bench asks before provisioning and sends a key when it
    # fails (agent/identity.py).
    f = getattr(os, "urandom", None)
    if f is None:
        return False
    a = f(32)
    b = f(32)
    return a != b and len(set(a)) >= 16 and len(set(b)) >= 16


def generate(root, key=None):
    # A new key pair replaces any old one; returns the 32-byte public key.
    # `key` is for boards whose os.urandom is missing or fails rng_ok():
    # the bench sends one, once. Without it, a failing generator is refused
    # before anything is written.
    if key is None:
        if not rng_ok():
            raise OSError("identity: os.urandom is missing or repeats itself; "
                          "the bench must send the key")
        key = os.urandom(32)
    if len(key) != 32:
        raise ValueError("identity: a key is 32 bytes")
    key = clamp(key)
    try:
        os.mkdir(_path(root))
    except OSError:
        pass
    atomic.write(_path(root, "key"), key)
    pub = _public(key)
    atomic.write(_path(root, "pub"), pub)
    return pub


def private_key(root):
    k = atomic.read(_path(root, "key"), 32)
    return k if k is not None and len(k) == 32 else None


def public_key(root):
    k = private_key(root)
    return _public(k) if k is not None else None


def cached_public_key(root, device_id):
    # The kept public key, or None. Ids made by the bench end in the first 6
    # bytes of SHA-256(public key) in hex: a kept key that does not match its
    # id (a key changed by an older agent) is not used.
    pub = atomic.read(_path(root, "pub"), 32)
    if pub is None or len(pub) != 32:
        return None
    tail = device_id[-12:]
    if len(device_id) > 13 and device_id[-13] == "-":
        import hashlib
        from binascii import hexlify
        if hexlify(hashlib.sha256(pub).digest()[:6]).decode() != tail:
            return None
    return pub


def keep_public_key(root, pub):
    # Best effort: a full flash only costs the next boot a multiplication.
    try:
        atomic.write(_path(root, "pub"), pub)
    except OSError:
        pass


def status(root):
    # "missing" (never minted), "corrupt" (a key file that fails its CRC or
    # size check) or "ok"; with the public key when ok.
    pub = public_key(root)
    if pub is not None:
        return "ok", pub
    p = _path(root, "key")
    if atomic._exists(p) or atomic._exists(p + ".new"):
        return "corrupt", None
    return "missing", None


def write_setup(root, code):
    if not isinstance(code, str) or len(code) != 8 or not code.isdigit():
        raise ValueError("identity: the setup code is 8 digits")
    atomic.write(_path(root, "setup"), code.encode())


def setup_code(root):
    data = atomic.read(_path(root, "setup"), 8)
    return data.decode() if data is not None else None


def write_anchors(root, anchors):
    if not isinstance(anchors, dict):
        raise ValueError("identity: anchors must be a dict")
    atomic.write(_path(root, "anchors.json"), json.dumps(anchors).encode())


def anchors(root):
    data = atomic.read(_path(root, "anchors.json"))
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def factory_reset(root):
    # Erases the identity; the board needs `edge provision` again.
    for name in _FILES:
        atomic.remove(_path(root, name))
    try:
        os.rmdir(_path(root))
    except OSError:
        pass
