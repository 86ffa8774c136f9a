# The device's bonds (docs/protocol.md 5.4.2) and its wrong-code count
# (5.4.4), in <root>/state/:
#   bonds    CBOR [account, [[bond_id, host_id, bond_key], ...]], at most 4
#            bonds, the newest last; absent when unbound.
#   pairing  the failed-attempt count, u32 big-endian.
# Both go through atomic.write (new name, rename, CRC-32 tail). What is read
# back is checked field by field: a file that fails (CRC, shape, lengths,
# account alphabet) reads as no bonds and is reported by load()'s third
# value, never trusted in part and never a crash.
import os
import struct

from edgefw import atomic

from micropython import const

MAX_BONDS = const(4)
_LIMIT = const(512)  # a full bonds file is about 300 bytes


def _path(root, name):
    return (root + "/state/" if root else "state/") + name


def _mkdir(root):
    try:
        os.mkdir(root + "/state" if root else "state")
    except OSError:
        pass


def load(root):
    # -> (account or None, [[bond_id, host_id, bond_key], ...], corrupt)
    raw = atomic.read(_path(root, "bonds"), _LIMIT)
    if raw is None:
        p = _path(root, "bonds")
        return None, [], atomic._exists(p) or atomic._exists(p + ".new")
    from edgefw import cbor, drop
    try:
        v = cbor.loads(raw)
    except ValueError:
        return None, [], True
    finally:
        drop("cbor")  # a rare read: its code need not stay in the heap
        drop("cbor_tree")
    if _valid(v):
        return v[0], v[1], False
    return None, [], True


def _valid(v):
    from edgefw.messages import valid_id
    if not isinstance(v, list) or len(v) != 2 or not valid_id(v[0]):
        return False
    bl = v[1]
    if not isinstance(bl, list) or not 1 <= len(bl) <= MAX_BONDS:
        return False
    for b in bl:
        if not isinstance(b, list) or len(b) != 3:
            return False
        for x, n in zip(b, (8, 16, 32)):
            if not isinstance(x, bytes) or len(x) != n:
                return False
    return True


def owner(root):
    return load(root)[0]


def find(root, bond_id):
    # -> the bond [bond_id, host_id, bond_key] or None
    for b in load(root)[1]:
        if b[0] == bond_id:
            return b
    return None


def add(root, account, host_id, bond_id, bond_key):
    # Adds a bond for account (the owner's, or the first: the caller checks);
    # replaces one of the same host_id; drops the oldest past MAX_BONDS.
    cur, bl, _ = load(root)
    if cur != account:
        bl = []
    bl = [b for b in bl if b[1] != host_id and b[0] != bond_id]
    bl.append([bond_id, host_id, bond_key])
    from edgefw import messages
    _mkdir(root)
    atomic.write(_path(root, "bonds"), messages.dump([account, bl[-MAX_BONDS:]]))


def clear(root):
    # Unpair: every bond goes; any account may pair again.
    atomic.remove(_path(root, "bonds"))


def attempts(root):
    raw = atomic.read(_path(root, "pairing"), 4)
    if raw is None or len(raw) != 4:
        return 0
    return struct.unpack(">I", raw)[0]


def set_attempts(root, n):
    p = _path(root, "pairing")
    if n == 0:
        atomic.remove(p)
        return
    _mkdir(root)
    atomic.write(p, struct.pack(">I", min(n, 0xFFFFFFFF)))


def factory_reset(root=""):
    # Bonds and the wrong-code count go; the identity stays (the label pairs).
    clear(root)
    atomic.remove(_path(root, "pairing"))
