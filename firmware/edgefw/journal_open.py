# Journal recovery (journal.py's open()) and read_last_into (read by
# uplink_start.py): run once per boot, imported then and dropped after, so
# their code does not stay in the heap.
import os
import struct
from binascii import crc32

from edgefw import atomic
from edgefw.journal import _STATE

from micropython import const

_HDR = const(12)  # as in journal.py
_OVERHEAD = const(16)
_CHUNK = const(64)

_STATE1 = b"EJS1"


def _seg_seq(name):
    # First sequence number from a segment's file name, -1 if not a segment.
    if len(name) != 13 or name[0] != "s" or not name.endswith(".log"):
        return -1
    try:
        seq = int(name[1:9], 16)
    except ValueError:
        return -1
    return seq if name == "s%08x.log" % seq else -1


def _crc_ok(j, f, pos):
    # CRC check of the entry _find() just returned, payload read in
    # chunks into a preallocated buffer.
    c = crc32(j._hdr)
    f.seek(pos + _HDR)
    left = j._e_len
    mv = j._bufmv
    while left > 0:
        k = left if left < _CHUNK else _CHUNK
        m = mv if k == _CHUNK else mv[:k]
        if f.readinto(m) != k:
            return False
        c = crc32(m, c)
        left -= k
    return j._tail_ok(f, c)


def run(j):
    cur = "/" if j.root.startswith("/") else ""
    for part in j.root.split("/"):
        if part:
            cur += part
            try:
                os.mkdir(cur)
            except OSError:
                pass  # exists; a real problem shows in listdir below
            cur += "/"
    raw = atomic.read(j._pre + "state")
    good = raw is not None and ((len(raw) == 24 and raw[:4] == _STATE)
                                or (len(raw) == 20 and raw[:4] == _STATE1))
    refused = 0
    if good:
        _, acked, floor, dropped, gapmark = struct.unpack_from(">4sIIII", raw)
        if len(raw) == 24:
            refused = struct.unpack_from(">I", raw, 20)[0]
    else:
        # No trustworthy state: records before the oldest on flash are
        # taken as handled (unknowable), the rest is pending.
        acked = floor = dropped = gapmark = 0
    names = [n for n in os.listdir(j.root) if _seg_seq(n) >= 0]
    names.sort()
    segs = []
    lost = []
    low = max(acked, floor) if good else None
    add = 0
    prev = None
    for name in names:
        seq = _seg_seq(name)
        path = j._pre + name
        # A segment named X was started when next_seq was X: numbers
        # below X that are in no entry were lost with damaged data.
        if low is None:
            low = seq
        a = low if prev is None else prev
        if seq > a:
            lost.append([max(a, low), seq])
        if prev is None or seq > prev:
            prev = seq
        size = os.stat(path)[6]
        limit = 0
        end = -1
        f = open(path, "rb")
        try:
            j._prev = prev
            pos = 0
            while True:
                pos = j._find(f, pos, size)
                if pos < 0:
                    break
                first = j._e_first
                if first > prev:
                    lost.append([max(prev, low), first])
                prev = first + j._e_count
                if not _crc_ok(j, f, pos):
                    lost.append([max(first, low), prev])
                pos += _OVERHEAD + j._e_len
                limit = pos
                end = prev
        finally:
            f.close()
        segs.append([seq, size, limit, end])
    # Losses are counted from gapmark on only, so a damage seen at every
    # open is counted once; ranges are found in ascending order.
    keep = []
    for r in lost:
        a, b = r
        if a >= b:
            continue
        keep.append(r)
        c = max(a, gapmark)
        if c < b:
            add += b - c
            gapmark = b
    if low is None:
        low = prev if prev is not None else 0
    if not good:
        acked = floor = low
    nxt = max(acked, floor, gapmark)
    if prev is not None and prev > nxt:
        nxt = prev
    j.refused = refused
    if add or not good:
        dropped += add
        j._save(acked, floor, dropped, gapmark)
    j.acked = acked
    j._floor = floor
    j.dropped = dropped
    j._gapmark = gapmark
    j.next_seq = nxt
    j._lost = keep
    j._segs = segs
    j.used_bytes = 0
    for s in segs:
        j.used_bytes += s[1]
    j._cur = None
    # Segments with nothing pending go (their records are all below low,
    # persisted above); the newest stays if it holds any entry.
    i = 0
    while i < len(segs):
        s = segs[i]
        newest = i == len(segs) - 1
        if s[3] < 0 or (s[3] <= low and not newest):
            try:
                os.remove(j._path(s[0]))
            except OSError:
                i += 1
                continue
            j.used_bytes -= s[1]
            segs.pop(i)
            continue
        i += 1
    # Appending after a torn tail would bury garbage mid-segment: a
    # newest segment with bytes past its last entry takes no more.
    j._sealed = bool(segs) and segs[-1][1] != segs[-1][2]
    j._apath = j._path(segs[-1][0]) if segs else None
    j._prune_lost()


def read_last_into(j, buf):
    # Journal.read_last_into: only the newest segment holding an entry is
    # walked.
    i = len(j._segs) - 1
    while i >= 0:
        seg = j._segs[i]
        f = open(j._path(seg[0]), "rb")
        try:
            j._prev = None
            pos = 0
            last = -1
            while True:
                p = j._find(f, pos, seg[2])
                if p < 0:
                    break
                last = p
                n = j._e_len
                pos = p + _OVERHEAD + n
            if last >= 0 and n <= len(buf):
                f.seek(last + _HDR)
                mv = memoryview(buf)[:n]
                if f.readinto(mv) == n:
                    return n
        finally:
            f.close()
        i -= 1
    return -1
