# Segments of the BLE link (docs/protocol.md section 5.3): a message cut into
# ATT values, each with one header byte.
#   1ccccccc LL LL data...   first: message length (1..1036, big-endian),
#                            c = message counter mod 128 (informative)
#   0iiiiiii data...         continuation: index in the message mod 128
# Rules the reassembler keeps:
# - memory is one preallocated buffer of MAX_MESSAGE bytes, whatever arrives;
# - a bad segment drops the message in progress, counts one bad_segments and
#   waits for the next first segment; a first segment arriving while a message
#   is unfinished counts the unfinished one, then is judged on its own;
# - the message handed out is a memoryview of the buffer, valid until the
#   next feed() or reset(): the caller decodes or copies it first.
from micropython import const

MAX_MESSAGE = const(1036)  # a sealed message: 4 counter + 1024 + 8 tag
_FIRST = const(0x80)
_INDEX = const(0x7F)


class Reassembler:
    def __init__(self):
        self._buf = bytearray(MAX_MESSAGE)
        self._mv = memoryview(self._buf)
        self._len = 0  # 0: no message in progress
        self._got = 0
        self._next = 0
        self.bad_segments = 0

    def reset(self):
        # A disconnect: the unfinished message goes, uncounted (5.3).
        self._len = 0

    def _bad(self):
        self._len = 0
        self.bad_segments += 1

    def feed(self, seg):
        n = len(seg)
        if not n:
            self._bad()
            return None
        h = seg[0]
        if h & _FIRST:
            if self._len:
                self._bad()
            if n < 3:
                self._bad()
                return None
            size = (seg[1] << 8) | seg[2]
            if size == 0 or size > MAX_MESSAGE or n - 3 > size:
                self._bad()
                return None
            # A memoryview slice, not seg[3:]: no copy of the data.
            self._mv[0:n - 3] = memoryview(seg)[3:n]
            self._len = size
            self._got = n - 3
            self._next = 1
        else:
            if not self._len or h != self._next:
                self._bad()
                return None
            got = self._got
            if got + n - 1 > self._len:
                self._bad()
                return None
            self._mv[got:got + n - 1] = memoryview(seg)[1:n]
            self._got = got + n - 1
            self._next = (self._next + 1) & _INDEX
        if self._got < self._len:
            return None
        size = self._len
        self._len = 0
        return self._mv[0:size]


def split(msg, size, counter, buf):
    # Yields the segments of msg for ATT values of `size` bytes (MTU - 3, at
    # least 4) as memoryviews of buf (bytearray of at least `size` bytes): each
    # is valid until the next one is asked for, so one buffer serves every
    # segment and no copy of the message is made. counter: this message's
    # number on its characteristic.
    n = len(msg)
    if n == 0 or n > MAX_MESSAGE or size < 4:
        raise ValueError("segment sizes")
    mv = memoryview(buf)
    src = memoryview(msg)
    take = min(size - 3, n)
    buf[0] = _FIRST | (counter & _INDEX)
    buf[1] = n >> 8
    buf[2] = n & 0xFF
    mv[3:3 + take] = src[0:take]
    yield mv[0:3 + take]
    pos = take
    index = 1
    while pos < n:
        take = min(size - 1, n - pos)
        buf[0] = index & _INDEX
        mv[1:1 + take] = src[pos:pos + take]
        yield mv[0:1 + take]
        pos += take
        index += 1
