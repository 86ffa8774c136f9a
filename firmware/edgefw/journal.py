# Store-and-forward telemetry journal (docs/protocol.md, BATCH and ACK).
#
# Records are numbered by sequence (one number per sample, a pair of a
# tick); an entry holds `count` consecutive numbers and an opaque payload
# (a tick, ticks.py). Entries are
# appended to segment files "sXXXXXXXX.log" in `root` (XXXXXXXX: the first
# sequence number of the segment, 8 hex digits, so names sort in order).
# An entry on flash:
#   0  u8   magic 0xEA          1  u8   format version 1
#   2  u16  payload length      4  u32  first sequence number
#   8  u16  record count        10 u16  low 16 bits of CRC-32 of bytes 0..9
#   12 payload                  then u32 CRC-32 of header and payload
# (all big-endian). The header check lets a reader trust an entry's place
# and numbers even when its payload is damaged, and find the next entry
# after damage (resync) without trusting a byte of garbage.
#
# The file "state" (atomic.py) holds "EJS2" and u32s: acked (host's pointer,
# exact: it may fall inside an entry), floor, dropped, gapmark, refused (the
# records a host refused, docs/protocol.md 2.9); the 20-byte "EJS1" state of
# version 1 (no refused total) is still read. Rules:
# - every record below max(acked, floor) ("low") is acknowledged, refused
#   or counted in dropped, and never returned by pending() again (an entry
#   holding low is returned whole: its reader skips the records below);
# - an append that returned is durable (its file is closed); nothing else is
#   written per append;
# - a segment is deleted only after the state that makes all its records
#   fall below low is persisted, so a kill between the two leaves a segment
#   that open() deletes without counting it again;
# - sequence numbers never go backwards: next_seq after open() is at least
#   the end of every complete entry on flash, every segment's name, acked,
#   floor and gapmark; the newest segment is never deleted by an ACK, so
#   next_seq survives even a lost state file;
# - lost records (damaged entries, missing ranges) are counted in dropped
#   exactly once: gapmark says up to where losses have been counted;
# - a full filesystem (ENOSPC) on append drops the oldest segment by the
#   rule above and retries; if nothing can go, append raises OSError with
#   the state as it was (a torn entry seals its segment, never counted).
import os
import struct
from binascii import crc32

from . import atomic, drop

from micropython import const

_MAGIC = const(0xEA)
_VERSION = const(1)
_HDR = const(12)
_OVERHEAD = const(16)
_U32 = const(0xFFFFFFFF)
_CHUNK = const(64)
_STATE = b"EJS2"
_ENOSPC = const(28)


class Journal:
    def __init__(self, root, max_bytes=65536, seg_bytes=4096):
        if seg_bytes < 64 or seg_bytes > 0x10000:
            raise ValueError("journal seg_bytes must be 64..65536, got %d" % seg_bytes)
        if max_bytes < 2 * seg_bytes:
            raise ValueError("journal max_bytes (%d) must be at least 2 * seg_bytes (%d)"
                             % (max_bytes, seg_bytes))
        self.root = root
        self.max_bytes = max_bytes
        self.seg_bytes = seg_bytes
        self._pre = root if root.endswith("/") else root + "/"
        self._hdr = bytearray(_HDR)
        self._hdr10 = memoryview(self._hdr)[:10]
        self._tail = bytearray(4)
        self._buf = bytearray(_CHUNK)
        self._bufmv = memoryview(self._buf)
        self._sbuf = bytearray(24)
        self._segs = None  # [first_seq (name), file size, limit, end_seq or -1]
        self._lost = []  # [a, b) ranges of lost records at or above low
        # Read by others, written by the journal only (plain attributes, not
        # properties: each property's code would stay in the heap).
        self.acked = 0
        self._floor = 0
        self.dropped = 0
        self.refused = 0
        self.fs_full = 0  # appends that met a full filesystem
        self._gapmark = 0
        self.next_seq = 0
        self.used_bytes = 0
        self._sealed = False  # newest segment has a torn tail: append elsewhere
        self._apath = None
        self._cur = None  # (segment, offset) of the first pending entry
        self._prev = None  # end of the last entry a walk accepted
        self._e_first = 0
        self._e_count = 0
        self._e_len = 0

    # -- state ----------------------------------------------------------
    @property
    def low(self):
        # Every record below this is acknowledged, refused or dropped.
        return self._low()

    @property
    def pending_count(self):
        low = self._low()
        n = self.next_seq - low
        for a, b in self._lost:
            if b > low:
                n -= min(b, self.next_seq) - max(a, low)
        return n

    def _low(self):
        return self.acked if self.acked > self._floor else self._floor

    def _path(self, seq):
        return self._pre + "s%08x.log" % seq

    def _need(self):
        if self._segs is None:
            raise RuntimeError("journal %s is not open: call open() first" % self.root)

    def _save(self, acked, floor, dropped, gapmark, refused=None):
        if refused is None:
            refused = self.refused
        struct.pack_into(">4sIIIII", self._sbuf, 0, _STATE, acked, floor,
                         min(dropped, _U32), gapmark, min(refused, _U32))
        atomic.write(self._pre + "state", self._sbuf)

    # -- recovery -------------------------------------------------------
    def open(self):
        # Runs once: its code lives in journal_open.py and leaves the heap after.
        from edgefw import journal_open
        try:
            journal_open.run(self)
        finally:
            drop("journal_open")

    def _prune_lost(self):
        low = self._low()
        lost = self._lost
        while lost and lost[0][1] <= low:
            lost.pop(0)

    def _find(self, f, pos, limit):
        # Offset of the next entry at or after pos whose header is valid and
        # whose body ends by limit, or -1. Sets _e_first/_e_count/_e_len. An
        # entry numbered below the previous one accepted (_prev) is skipped:
        # numbers never repeat within a walk.
        h = self._hdr
        while pos + _OVERHEAD <= limit:
            f.seek(pos)
            if (f.readinto(h) == _HDR and h[0] == _MAGIC and h[1] == _VERSION
                    and (h[10] << 8 | h[11]) == crc32(self._hdr10) & 0xFFFF):
                n = h[2] << 8 | h[3]
                if pos + _OVERHEAD + n > limit:
                    return -1  # torn: the body runs past the end
                first = h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7]
                count = h[8] << 8 | h[9]
                if count and (self._prev is None or first >= self._prev):
                    self._e_first = first
                    self._e_count = count
                    self._e_len = n
                    self._prev = first + count
                    return pos
                pos += _OVERHEAD + n
                continue
            pos = self._resync(f, pos + 1, limit)
        return -1

    def _resync(self, f, pos, limit):
        # Next offset at or after pos holding the magic byte (or limit).
        b = self._buf
        while pos + _OVERHEAD <= limit:
            f.seek(pos)
            n = f.readinto(b)
            if not n:
                break
            i = 0
            while i < n:
                if b[i] == _MAGIC:
                    return pos + i
                i += 1
            pos += n
        return limit

    def _tail_ok(self, f, c):
        t = self._tail
        return f.readinto(t) == 4 and (t[0] << 24 | t[1] << 16 | t[2] << 8 | t[3]) == c

    # -- appending ------------------------------------------------------
    def append(self, payload, count=1):
        # Returns the first sequence number of the entry; durable on return.
        while True:
            try:
                return self._append(payload, count)
            except OSError as e:
                if not e.args or e.args[0] != _ENOSPC:
                    raise
                self.fs_full += 1
                # Room is made by the counted rule only, and never from the
                # newest segment (it holds the latest records).
                if len(self._segs) < 2:
                    raise
                self._drop()

    def _append(self, payload, count):
        self._need()
        n = len(payload)
        need = _OVERHEAD + n
        if count < 1 or count > 0xFFFF:
            raise ValueError("journal entry count must be 1..65535, got %d" % count)
        if need > self.seg_bytes:
            raise ValueError("journal entry of %d bytes exceeds seg_bytes %d: send fewer records "
                             "per entry or raise seg_bytes" % (need, self.seg_bytes))
        first = self.next_seq
        if first + count > _U32:
            raise ValueError("journal sequence numbers exhausted")
        segs = self._segs
        seg = segs[-1] if segs else None
        if seg is not None and (self._sealed or seg[1] + need > self.seg_bytes):
            seg = None
        # Oldest dropped only when full, never the segment written next.
        while self.used_bytes + need > self.max_bytes and segs and segs[0] is not seg:
            self._drop()
        h = self._hdr
        struct.pack_into(">BBHIH", h, 0, _MAGIC, _VERSION, n, first, count)
        struct.pack_into(">H", h, 10, crc32(self._hdr10) & 0xFFFF)
        struct.pack_into(">I", self._tail, 0, crc32(payload, crc32(h)))
        path = self._apath if seg is not None else self._path(first)
        try:
            # A new segment is created with "wb": a leftover of that name can
            # only hold a failed append (its numbers were never returned).
            f = open(path, "ab" if seg is not None else "wb")
            try:
                f.write(h)
                f.write(payload)
                f.write(self._tail)
            finally:
                f.close()
        except BaseException:
            if seg is None:
                try:
                    os.remove(path)
                except OSError:
                    pass
            else:
                # Part of the entry may be on flash: no more appends there.
                self._sealed = True
                try:
                    size = os.stat(path)[6]
                    self.used_bytes += size - seg[1]
                    seg[1] = size
                except OSError:
                    pass
            raise
        if seg is None:
            seg = [first, 0, 0, first]
            segs.append(seg)
            self._apath = path
            self._sealed = False
        seg[1] += need
        seg[2] = seg[1]
        seg[3] = first + count
        self.used_bytes += need
        self.next_seq = first + count
        return first

    def _drop(self):
        # The journal is full: the oldest segment goes, pending or not.
        # Invariant: its unacknowledged records are added to dropped and
        # floor moves past its end in ONE state write, and only then is the
        # file deleted. A kill before the write changes nothing; a kill after
        # it leaves a segment wholly below floor, which open() deletes
        # without counting it again. So the count is never lost nor doubled.
        seg = self._segs[0]
        low = self._low()
        end = seg[3]
        n = 0
        if end > low:
            n = end - low
            for a, b in self._lost:
                if a < end and b > low:
                    n -= min(b, end) - max(a, low)
        floor = end if end > self._floor else self._floor
        self._save(self.acked, floor, self.dropped + n, self._gapmark)
        self._floor = floor
        self.dropped += n
        self._cur = None
        self._prune_lost()
        # If this fails, append fails: the segment stays, already counted.
        os.remove(self._path(seg[0]))
        self._segs.pop(0)
        self.used_bytes -= seg[1]
        atomic.refill()

    # -- reading and acknowledging --------------------------------------
    def pending(self, max_bytes=1024, max_entries=32):
        # The oldest unacknowledged entries, in order, as
        # (first_seq, count, payload); stops before max_bytes of payload or
        # max_entries entries, but returns one entry if any is pending.
        self._need()
        return self._read(None, max_bytes, max_entries)[0]

    def read_into(self, buf, index, at=None):
        # The oldest pending entries read into buf (bytearray) with no
        # payload copy and no tuple per entry: index (an array("H"), 5 per
        # entry) gets the high and low 16 bits of first_seq, the count, the
        # offset in buf and the length of each (buf is at most 64 KB).
        # Returns (entries read, at): pass at back to go on from there (None:
        # from the head). Stops before an entry that would not fit in buf or
        # in index; an entry larger than buf is skipped (size buf above the
        # largest entry written).
        self._need()
        return self._read(at, len(buf), len(index) // 5, memoryview(buf), index)

    def read_last_into(self, buf):
        # The newest complete entry on flash (pending or not) read into
        # buf[0:n]; returns n, or -1 if there is none that fits. Read at
        # boot (uplink_start.py): its code is in journal_open.py, dropped after.
        self._need()
        from edgefw import journal_open
        try:
            return journal_open.read_last_into(self, buf)
        finally:
            drop("journal_open")

    def iter_pending(self):
        # Every pending entry in order, read a few at a time; no file stays
        # open between two yields.
        at = None
        while True:
            got, at = self._read(at, 1024, 8)
            if not got:
                return
            for e in got:
                yield e

    def _start(self):
        # (segment index, offset) where the pending entries begin.
        segs = self._segs
        c = self._cur
        if c is not None:
            i = 0
            for s in segs:
                if s is c[0]:
                    return i, c[1]
                i += 1
        low = self._low()
        i = 0
        while i < len(segs) and segs[i][3] <= low:
            i += 1
        return i, 0

    def _read(self, at, max_bytes, max_entries, into=None, index=None):
        # at: None (from the first pending entry) or (segment, offset, end
        # of the last entry returned) as returned by the previous call.
        segs = self._segs
        low = self._low()
        if at is None:
            i, pos = self._start()
            after = low
        else:
            after = at[2] if at[2] > low else low
            i = 0
            while i < len(segs) and segs[i] is not at[0]:
                i += 1
            pos = at[1]
            if i == len(segs):
                # That segment was dropped meanwhile: start over, past `after`.
                i, pos = self._start()
        out = [] if index is None else None
        got = 0
        total = 0
        while i < len(segs):
            seg = segs[i]
            f = open(self._path(seg[0]), "rb")
            try:
                self._prev = None
                while True:
                    p = self._find(f, pos, seg[2])
                    if p < 0:
                        break
                    first = self._e_first
                    count = self._e_count
                    n = self._e_len
                    pos = p + _OVERHEAD + n
                    if first + count <= after:
                        continue
                    if at is None and not got and self._cur is None:
                        self._cur = (seg, p)
                    if got and (got >= max_entries or total + n > max_bytes):
                        return (out if index is None else got), (seg, p, after)
                    if into is None:
                        payload = f.read(n)
                    elif n > max_bytes:
                        continue
                    else:
                        payload = into[total:total + n]
                        if f.readinto(payload) != n:
                            continue
                    if len(payload) != n or not self._tail_ok(f, crc32(payload, crc32(self._hdr))):
                        continue  # damaged since open(): never sent
                    if index is None:
                        out.append((first, count, payload))
                    else:
                        k = got * 5
                        index[k] = first >> 16
                        index[k + 1] = first & 0xFFFF
                        index[k + 2] = count
                        index[k + 3] = total
                        index[k + 4] = n
                    got += 1
                    total += n
                    after = first + count
            finally:
                f.close()
            i += 1
            pos = 0
        return (out if index is None else got), (segs[-1] if segs else None, pos, after)

    def ack(self, next_seq, refused=0, dropped=0):
        # Every record below next_seq is handled by the host, exactly: an
        # ack inside an entry leaves the rest of it pending. `refused` and
        # `dropped` are added to their totals in the same state write (a
        # REFUSE, records the device cannot send). Lower than the pointer:
        # ignored; beyond next_seq: ValueError, nothing changed.
        self._need()
        if next_seq > self.next_seq:
            raise ValueError("ack %d is beyond the journal's next_seq %d: the host acknowledges "
                             "records this device never sent" % (next_seq, self.next_seq))
        if next_seq <= self.acked:
            return
        low = self._low()
        new = next_seq
        cur = None
        if next_seq > low:
            segs = self._segs
            i, pos = self._start()
            while i < len(segs) and cur is None:
                seg = segs[i]
                f = open(self._path(seg[0]), "rb")
                try:
                    self._prev = None
                    while True:
                        p = self._find(f, pos, seg[2])
                        if p < 0:
                            break
                        end = self._e_first + self._e_count
                        if end > next_seq:
                            cur = (seg, p)
                            break
                        pos = p + _OVERHEAD + self._e_len
                finally:
                    f.close()
                i += 1
                pos = 0
        self._save(new, self._floor, self.dropped + dropped, self._gapmark,
                   self.refused + refused)
        self.acked = new
        self.dropped += dropped
        self.refused += refused
        if new >= low:
            self._cur = cur
        self._prune_lost()
        # Fully acknowledged segments go, except the newest (it carries
        # next_seq across a lost state file). State is persisted first: a
        # kill here leaves segments that open() deletes.
        segs = self._segs
        low = self._low()
        while len(segs) > 1 and segs[0][3] <= low:
            try:
                os.remove(self._path(segs[0][0]))
            except OSError:
                break  # retried at the next open()
            self.used_bytes -= segs[0][1]
            segs.pop(0)
            atomic.refill()
