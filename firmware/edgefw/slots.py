# Agent slots and the pointer ota/slot (docs/protocol.md 7.7): the download
# file ota/dl, the unpack of a verified agent bundle (7.1) into the inactive
# slot, the switch, confirm, rollback. Stage 0 (stage0.py, beside main.py)
# reads the pointer at boot; every pointer change here is one
# edgefw.atomic.write (a new file renamed over the old), so a power cut
# leaves the old pointer or the new one.
# Slots: "" (what `edge flash` installs), "a", "b". The inactive slot is the
# one of a, b that is not active; it is never the rollback target: an install
# refuses to run on trial, and one into the slot named prev first drops prev
# from the pointer (stage 0 falls back to prev when the active slot is gone).
import json
import os

from micropython import const

from edgefw import atomic

_BLOCK = const(4096)
_MAX_FILES = const(128)
_RESERVE = const(16384)  # flash kept free for the agent's state
_NAME_OK = b"abcdefghijklmnopqrstuvwxyz0123456789_.-/"


def _p(root, name):
    return root + "/" + name if root else name


def read(root):
    d = None
    raw = atomic.read(_p(root, "ota/slot"))
    if raw:
        try:
            d = json.loads(raw)
        except ValueError:
            pass
    if not isinstance(d, dict):
        d = {}
    for k in ("active", "prev", "why"):
        if not isinstance(d.get(k), str):
            d[k] = ""
    for k in ("seq", "digest", "version", "bad"):
        if not isinstance(d.get(k), dict):
            d[k] = {}
    return d


def _mkdir(root):
    try:
        os.mkdir(_p(root, "ota"))
    except OSError:
        pass


def _write(root, d):
    _mkdir(root)
    atomic.write(_p(root, "ota/slot"), json.dumps(d).encode())


def counter(root, component):
    return read(root)["seq"].get(component, 0)


def running_digest(root, component):
    return read(root)["digest"].get(component)


def bad(root, component):
    return read(root)["bad"].get(component)


def on_trial(root):
    return "trial" in read(root)


def confirm(root, esp32=None):
    # One write: the pending update becomes the device's (counter raised).
    d = read(root)
    p = d.get("pending")
    if "trial" not in d or not isinstance(p, dict):
        return None
    c = p["component"]
    if c == "firmware":
        if esp32 is None:
            # Confirming the pointer alone would let the bootloader go back.
            raise ValueError("confirming firmware needs the esp32 module")
        # Before the pointer: a cut between the two leaves the image valid
        # and the pointer on trial, which the next boot confirms again.
        try:
            esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError:
            pass  # -261: a firmware built without app rollback has nothing to cancel
    d["seq"][c] = p["seq"]
    d["digest"][c] = p["digest"]
    d["version"][c] = p["version"]
    d["bad"].pop(c, None)
    del d["trial"], d["pending"]
    _write(root, d)
    return p


_reported = False


def take_report(root):
    # Once per boot: what the client tells the host about the last update.
    global _reported
    if _reported:
        return None
    _reported = True
    d = read(root)
    r = d.get("rolled")
    if d["why"] and isinstance(r, dict):
        why = d["why"]
        d["why"] = ""
        _write(root, d)
        return ("rolled-back", r.get("component", "agent"), r.get("seq", 0), r.get("version", ""), why)
    p = d.get("pending")
    if "trial" in d and isinstance(p, dict):
        return ("trial", p["component"], p["seq"], p["version"], "")
    return None


def rollback(root, why):
    # Back to the previous slot now; the caller resets the board. False:
    # not on trial, nothing written.
    from stage0 import rolled_back
    d = read(root)
    if "trial" not in d:
        return False
    _write(root, rolled_back(d, why))
    return True


def inactive(d):
    return "b" if d["active"] == "a" else "a"


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _Bad(Exception):
    pass


class AgentTarget:
    component = "agent"

    def __init__(self, root):
        self.root = root
        self.dl = _p(root, "ota/dl")
        self._f = None
        self._r = None
        self._n = 0

    def capacity(self):
        try:
            st = os.statvfs(self.root or "/")
            free = st[0] * st[4]
        except (OSError, AttributeError):
            return 0
        try:
            free += os.stat(self.dl)[6]
        except OSError:
            pass
        return max(0, (free - _RESERVE) // 2)

    def begin(self, resume):
        self.close()
        _mkdir(self.root)
        n = 0
        if resume:
            try:
                size = os.stat(self.dl)[6]
            except OSError:
                size = 0
            n = size - size % _BLOCK
            if n != size:
                self._cut(n)
        self._f = open(self.dl, "ab" if n else "wb")
        self._n = n
        return n

    def _cut(self, n):
        # Files have no truncate() on MicroPython: the whole blocks are
        # copied to a new file renamed over the old.
        tmp = self.dl + ".new"
        buf = bytearray(512)
        mv = memoryview(buf)
        src = open(self.dl, "rb")
        dst = open(tmp, "wb")
        try:
            while n:
                k = src.readinto(mv[:min(n, 512)])
                if not k:
                    break
                dst.write(mv[:k])
                n -= k
        finally:
            src.close()
            dst.close()
        os.rename(tmp, self.dl)

    def write(self, offset, mv):
        if offset != self._n:
            raise ValueError("offset")
        self._f.write(mv)
        self._n = offset + len(mv)

    def flush(self):
        self._f.flush()
        if hasattr(os, "fsync"):
            os.fsync(self._f.fileno())

    def read_into(self, offset, buf):
        if self._r is None:
            self._r = open(self.dl, "rb")
        self._r.seek(offset)
        return self._r.readinto(buf) or 0

    def close(self):
        for f in (self._f, self._r):
            if f is not None:
                f.close()
        self._f = self._r = None

    def discard(self):
        self.close()
        _remove(self.dl)
        _remove(self.dl + ".new")

    def _marker(self):
        return _p(self.root, "ota/inst")

    def installed(self, seq, digest_hex):
        raw = atomic.read(self._marker())
        try:
            m = json.loads(raw)
        except (TypeError, ValueError):
            return False
        return m == [inactive(read(self.root)), seq, digest_hex]

    def install(self, seq, digest_hex, version):
        self.close()
        d = read(self.root)
        if "trial" in d:
            raise OSError("on trial: confirm or roll back first")
        slot = inactive(d)
        if d["prev"] == slot:
            d["prev"] = ""
            _write(self.root, d)
        atomic.remove(self._marker())
        folder = _p(self.root, "slots/" + slot)
        try:
            os.mkdir(_p(self.root, "slots"))
        except OSError:
            pass
        _rmtree(folder)
        os.mkdir(folder)
        try:
            _unpack(self.dl, folder)
        except _Bad:
            _rmtree(folder)
            self.discard()
            raise ValueError("bad-bundle")
        atomic.write(self._marker(), json.dumps([slot, seq, digest_hex]).encode())
        self.discard()

    def apply(self, seq, digest_hex, version):
        if not self.installed(seq, digest_hex):
            raise OSError("nothing installed for sequence %d" % seq)
        d = read(self.root)
        d["prev"] = d["active"]
        d["active"] = inactive(d)
        d["trial"] = 0
        d["pending"] = {"component": "agent", "seq": seq, "digest": digest_hex, "version": version}
        _write(self.root, d)


def _unpack(src, folder):
    # Streams the bundle (7.1) into folder, checking it as it goes; _Bad on
    # anything malformed. One 512-byte buffer; no name kept in memory: a
    # duplicate is a file already there.
    buf = bytearray(512)
    mv = memoryview(buf)
    left = os.stat(src)[6]
    f = open(src, "rb")
    try:
        if f.readinto(mv[:4]) != 4 or buf[:4] != b"EAB1":
            raise _Bad
        left -= 4
        files = 0
        while True:
            if not left or f.readinto(mv[:1]) != 1:
                raise _Bad  # no end byte
            left -= 1
            n = buf[0]
            if n == 0:
                break
            files += 1
            if n > 64 or files > _MAX_FILES or n + 4 > left:
                raise _Bad
            f.readinto(mv[:n + 4])  # the size was checked: the bytes are there
            left -= n + 4
            size = int.from_bytes(buf[n:n + 4], "big")
            if size > left:
                raise _Bad
            out = folder + "/" + _name(buf, n, folder)
            w = open(out, "wb")
            try:
                left -= size
                # Whole buffers need no slice (a slice is an allocation).
                while size >= 512:
                    f.readinto(buf)
                    w.write(buf)
                    size -= 512
                if size:
                    f.readinto(mv[:size])
                    w.write(mv[:size])
            finally:
                w.close()
        if left:
            raise _Bad  # bytes after the end
    finally:
        f.close()
    # A slot stage 0 would boot: the package is there.
    for ext in (".mpy", ".py"):
        try:
            os.stat(folder + "/edgefw/__init__" + ext)
            return
        except OSError:
            pass
    raise _Bad


def _name(buf, n, folder):
    # The name in buf[:n], checked (7.1), its folders made; _Bad otherwise.
    for i in range(n):
        if buf[i] not in _NAME_OK:
            raise _Bad
    name = bytes(buf[:n]).decode()
    parts = name.split("/")
    path = folder
    for i, s in enumerate(parts):
        if s in ("", ".", ".."):
            raise _Bad
        path += "/" + s
        try:
            is_dir = os.stat(path)[0] & 0x4000
        except OSError:
            if i < len(parts) - 1:
                os.mkdir(path)
            continue
        if i == len(parts) - 1 or not is_dir:
            raise _Bad  # a name twice, or a file where a folder goes
    return name
