# Small files replaced whole, never overwritten in place: write() puts the
# data in "<name>.new", closes it, then renames it over "<name>". Rename
# replaces atomically on LittleFS and Posix, so a power cut or a kill leaves
# either the old or the new complete file.
#
# On flash a file is its data followed by the CRC-32 (binascii.crc32, u32
# big-endian) of that data; read() returns the data only when the CRC
# matches, so a torn or stray file is never trusted.
# A full flash must not freeze the device: the journal frees room only after
# it has persisted its pointer, and the clock persists an epoch before any
# record of its boot is sent, so the very writes that make room need room.
# reserve() keeps one block's worth of flash in a file of its own; a write
# meeting ENOSPC removes that file and tries once more. Each write is a new
# file renamed over the old one, so the old copy's block comes free with the
# rename, and the reserve is taken back at once: a full flash can go on
# persisting state for as long as the reserve could be made once.
import os
import struct
from binascii import crc32

from micropython import const

_LIMIT = const(4096)
_ENOSPC = const(28)
_reserve = None  # [path, size] once reserve() is called


def read(path, limit=_LIMIT):
    # The data of the last complete write(), or None if there is none. If
    # "<name>" is unusable but a complete "<name>.new" exists (a replace cut
    # short where rename is not atomic, e.g. FAT: remove then rename), that is
    # the newer data: the replace is finished so no later write can clobber it.
    data = _load(path, limit)
    if data is None:
        tmp = path + ".new"
        data = _load(tmp, limit)
        if data is not None:
            try:
                _replace(tmp, path)
            except OSError:
                pass
    return data


def write(path, data):
    try:
        _write(path, data)
    except OSError as e:
        if not e.args or e.args[0] != _ENOSPC or not _release():
            raise
        _write(path, data)
        refill()


def reserve(path, size=4096):
    # Keeps `size` bytes of flash for state writes on a full flash (see the
    # top of this file); best effort: on a flash already full it is made
    # later, by refill().
    global _reserve
    _reserve = [path, size]
    refill()


def refill():
    # Takes the reserve back if it is missing; False when there is no room.
    if _reserve is None or _exists(_reserve[0]):
        return True
    path, size = _reserve
    try:
        f = open(path, "wb")
        try:
            zeros = bytes(256)
            while size > 0:
                f.write(zeros if size >= 256 else zeros[:size])
                size -= 256
        finally:
            f.close()
        return True
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return False


def _release():
    # Frees the reserve for one write; False when there is none.
    if _reserve is None:
        return False
    try:
        os.remove(_reserve[0])
        return True
    except OSError:
        return False


def _write(path, data):
    tmp = path + ".new"
    if not _exists(path) and _exists(tmp):
        # "<name>.new" may be the only complete copy: settle it before
        # truncating "<name>.new" below.
        read(path)
    tail = bytearray(4)
    struct.pack_into(">I", tail, 0, crc32(data))
    f = open(tmp, "wb")
    try:
        f.write(data)
        f.write(tail)
        f.flush()
        sync = getattr(os, "fsync", None)
        if sync is not None:
            # CPython on Linux: the data must reach the disk before the
            # rename does, or a power cut could leave an empty "<name>".
            sync(f.fileno())
    finally:
        f.close()
    _replace(tmp, path)


def remove(path):
    # Deletes "<name>" and any leftover "<name>.new" (factory reset).
    for p in (path + ".new", path):
        try:
            os.remove(p)
        except OSError:
            pass


def _replace(tmp, path):
    try:
        os.rename(tmp, path)
    except OSError:
        # Some filesystems refuse to rename over an existing file. Between
        # these two calls only "<name>.new" exists, and read() takes it.
        os.remove(path)
        os.rename(tmp, path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _load(path, limit):
    try:
        size = os.stat(path)[6]
        # A garbage file larger than any we write must not exhaust the heap
        # (and read(n) reserves n bytes up front on MicroPython).
        if size < 4 or size > limit + 4:
            return None
        f = open(path, "rb")
    except OSError:
        return None
    try:
        raw = f.read(size)
    finally:
        f.close()
    n = len(raw) - 4
    if n < 0:
        return None
    data = raw[:n]
    if crc32(data) != struct.unpack_from(">I", raw, n)[0]:
        return None
    return data
