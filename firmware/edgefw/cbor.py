# CBOR (RFC 8949) for the device: dumps(obj) -> bytes, loads(data) -> obj.
# Runs unchanged on MicroPython and CPython. loads rejects every malformed
# input with ValueError("CBOR: <what> at offset <n>") and never another
# exception type: a peer or a corrupt file must not crash the agent.
#
# Decoded types: int (bignum tags 2/3 included), float, bytes, str, list,
# dict, bool, None, Tag (other tags), Simple (unassigned simple values),
# UNDEFINED. A map whose keys a dict cannot hold (arrays, maps, duplicates,
# true next to 1) is refused. On boards with single-precision floats a double
# is rounded to single. Encoding writes the shortest head, the shortest of
# half / single / double that holds a float exactly (NaN and infinities as
# half) and maps in the dict's iteration order (insertion order on CPython; a
# MicroPython dict has none, so pass a collections.OrderedDict to fix it).
import struct
from math import ldexp

from micropython import const

# Nested arrays, maps and tags past this depth are refused both ways: every
# level is a Python call, and a board's stack is small.
MAX_DEPTH = const(32)
_U64 = 0x10000000000000000
_INF = float("inf")
_NAN = float("nan")


class Tag:
    # A tagged data item (major type 6); bignums (tags 2, 3) decode to int.
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    # A simple value (major type 7) with no Python counterpart: 0..19, 23, 32..255.
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return "undefined" if self.value == 23 else "Simple(%d)" % self.value


UNDEFINED = Simple(23)
_SIMPLE = (False, True, None, UNDEFINED)  # simple values 20..23
# Type tuples built once: a tuple display in _enc would allocate per call.
_BYTES = (bytes, bytearray, memoryview)
_ARRAY = (list, tuple)
_NESTED = (list, tuple, dict, Tag)


def _half(h):
    # IEEE 754 binary16 -> float, written out because not every port's struct has "e".
    e = (h >> 10) & 31
    m = h & 1023
    if e == 31:
        v = _NAN if m else _INF
    elif e:
        v = ldexp(m | 1024, e - 25)
    else:
        v = ldexp(m, -24)
    return -v if h & 0x8000 else v


def _utf8_ok(b):
    # Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
    # MicroPython's own str() only checks the byte pattern.
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        i += 1
        if c < 0x80:
            continue
        k = 1 if 0xC2 <= c <= 0xDF else 2 if 0xE0 <= c <= 0xEF else 3 if 0xF0 <= c <= 0xF4 else 0
        lo = 0xA0 if c == 0xE0 else 0x90 if c == 0xF0 else 0x80  # the second byte's range
        hi = 0x9F if c == 0xED else 0x8F if c == 0xF4 else 0xBF
        if not k or i + k > n or not lo <= b[i] <= hi:
            return False
        for j in range(i + 1, i + k):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k
    return True


class Reader:
    # Invariant: self.i is the offset of the next unread byte; every read is
    # bounds-checked against self.n before any allocation sized by the input.
    # max_depth bounds nesting (containers and tags); tags=False refuses every
    # tag, bignums included (protocol messages, docs/protocol.md 2.1).
    # item(depth) decodes one item, skip(depth) checks one and moves past it
    # without building it (a map with array keys, a value copied as bytes);
    # depth is the number of containers already open around it.
    def __init__(self, data, max_depth=MAX_DEPTH, tags=True):
        self.b = memoryview(data)
        self.n = len(self.b)
        self.i = 0
        self.max_depth = max_depth
        self.tags = tags

    def fail(self, what, at):
        raise ValueError("CBOR: %s at offset %d" % (what, at))

    def take(self, k, at):
        # Reserve k bytes; a length longer than what is left fails here, so a
        # lying length never reaches an allocation.
        i = self.i
        if k > self.n - i:
            self.fail("truncated: %d bytes needed, %d left" % (k, self.n - i), at)
        self.i = i + k
        return i

    def arg(self, ai, at):
        if ai < 24:
            return ai
        if ai > 27:
            self.fail("reserved additional information %d" % ai, at)
        k = 1 << (ai - 24)
        i = self.take(k, at)
        b = self.b
        if k < 4:  # no slice for the common short forms
            return b[i] if k == 1 else b[i] << 8 | b[i + 1]
        return int.from_bytes(b[i:i + k], "big")

    def brk(self):
        # True (and consumed) if the next byte ends an indefinite-length item.
        if self.i >= self.n:
            self.fail("truncated: indefinite-length item has no break", self.i)
        if self.b[self.i] == 0xFF:
            self.i += 1
            return True
        return False

    def string(self, mt, n, at):
        i = self.take(n, at)
        s = self.b[i:i + n]
        if mt == 2:
            return bytes(s)
        try:
            t = str(s, "utf-8")
        except UnicodeError:
            t = None
        if t is None or (len(t) != n and not _utf8_ok(s)):  # same length: ASCII, valid
            self.fail("text string is not valid UTF-8", at)
        return t

    def chunks(self, mt, at):
        # Indefinite-length string: definite chunks of the same major type.
        parts = []
        while not self.brk():
            c = self.i
            ib = self.b[c]
            self.i = c + 1
            if ib >> 5 != mt or ib & 31 == 31:
                self.fail("chunk of an indefinite-length string must be a definite string of major type %d" % mt, c)
            parts.append(self.string(mt, self.arg(ib & 31, c), c))
        return (b"" if mt == 2 else "").join(parts)

    def put(self, d, depth):
        at = self.i
        n = len(d)
        k = self.item(depth)
        v = self.item(depth)
        try:
            d[k] = v
        except TypeError:
            self.fail("map key is not hashable (an array or map)", at)
        if len(d) == n:
            self.fail("duplicate map key", at)

    def head(self):
        # Reads the initial byte at self.i and its argument; sets self.mt and
        # returns the argument (-1: indefinite length; for major type 7 the
        # additional information, its argument left unread).
        at = self.i
        if at >= self.n:
            self.fail("truncated: data item expected", at)
        ib = self.b[at]
        self.i = at + 1
        mt = ib >> 5
        ai = ib & 31
        self.mt = mt
        if mt == 7 or ai < 24:  # inline: most heads carry their argument
            return ai
        if ai == 31:
            if mt < 2 or mt == 6:
                self.fail("indefinite length is not allowed for major type %d" % mt, at)
            return -1
        return self.arg(ai, at)

    def item(self, depth):
        at = self.i
        n = self.head()
        mt = self.mt
        if mt == 7:
            return self.simple(n, at)
        if mt < 2:
            return n if mt == 0 else -1 - n
        if mt < 4:
            return self.chunks(mt, at) if n < 0 else self.string(mt, n, at)
        if mt == 6 and not self.tags:
            self.fail("tag %d not allowed here" % n, at)
        if depth >= self.max_depth:
            self.fail("nesting deeper than %d levels" % self.max_depth, at)
        depth += 1
        if mt == 4:
            if n < 0:
                a = []
                while not self.brk():
                    a.append(self.item(depth))
                return a
            # Each item takes at least one byte: check before allocating n slots.
            if n > self.n - self.i:
                self.fail("array of %d items is longer than the %d bytes left" % (n, self.n - self.i), at)
            a = [None] * n
            for j in range(n):
                a[j] = self.item(depth)
            return a
        if mt == 5:
            if n > (self.n - self.i) >> 1:
                self.fail("map of %d pairs is longer than the %d bytes left" % (n, self.n - self.i), at)
            d = {}
            while not self.brk() if n < 0 else len(d) < n:  # put() grows d by one or fails
                self.put(d, depth)
            return d
        v = self.item(depth)
        if n == 2 or n == 3:
            if not isinstance(v, bytes):
                self.fail("bignum tag %d must hold a byte string" % n, at)
            v = int.from_bytes(v, "big")
            return v if n == 2 else -1 - v
        return Tag(n, v)

    def skip(self, depth):
        at = self.i
        n = self.head()
        mt = self.mt
        if mt == 7:
            ai = n
            if ai == 24:
                if self.b[self.take(1, at)] < 32:
                    self.fail("simple value must use the one-byte form", at)
            elif 24 < ai < 28:
                self.take(1 << (ai - 24), at)
            elif ai > 27:
                self.fail("break or reserved additional information %d" % ai, at)
            return
        if mt < 2:
            return
        if mt < 4:
            if n >= 0:
                i = self.take(n, at)
                if mt == 3 and not _utf8_ok(self.b[i:i + n]):
                    self.fail("text string is not valid UTF-8", at)
                return
            while not self.brk():
                c = self.i
                ib = self.b[c]
                if ib >> 5 != mt or ib & 31 == 31:
                    self.fail("chunk of an indefinite-length string must be a definite string of major type %d" % mt, c)
                self.skip(depth)
            return
        if mt == 6 and not self.tags:
            self.fail("tag %d not allowed here" % n, at)
        if depth >= self.max_depth:
            self.fail("nesting deeper than %d levels" % self.max_depth, at)
        depth += 1
        if mt == 6:
            if (n == 2 or n == 3) and (self.i >= self.n or self.b[self.i] >> 5 != 2):
                self.fail("bignum tag %d must hold a byte string" % n, at)
            self.skip(depth)
            return
        k = 1 if mt == 4 else 2
        if n < 0:
            while not self.brk():
                self.skip(depth)
                if k == 2:
                    self.skip(depth)  # a map's value: a break here is malformed
            return
        if n * k > self.n - self.i:
            self.fail("container of %d items is longer than the %d bytes left" % (n, self.n - self.i), at)
        for _ in range(n * k):
            self.skip(depth)

    def simple(self, ai, at):
        if ai < 20:
            return Simple(ai)
        if ai < 24:
            return _SIMPLE[ai - 20]
        if ai == 24:
            v = self.b[self.take(1, at)]
            if v < 32:
                self.fail("simple value %d must use the one-byte form" % v, at)
            return Simple(v)
        if ai == 25:
            return _half(self.arg(25, at))
        if ai == 26:
            return struct.unpack_from(">f", self.b, self.take(4, at))[0]
        if ai == 27:
            return struct.unpack_from(">d", self.b, self.take(8, at))[0]
        if ai == 31:
            self.fail("break (0xff) outside an indefinite-length item", at)
        self.fail("reserved additional information %d" % ai, at)


def loads(data):
    # data: bytes, bytearray or memoryview holding exactly one data item.
    d = Reader(data)
    try:
        v = d.item(0)
    except MemoryError:
        # A well-formed item can still expand past a board's heap.
        d.fail("item of %d bytes does not fit in free memory" % d.n, d.i)
    if d.i != d.n:
        d.fail("%d trailing bytes after the data item" % (d.n - d.i), d.i)
    return v


def _head(out, mt, n):
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.extend(b"\0\0\0\0\0")  # room, then written in place: no temporary bytes
        struct.pack_into(">BI", out, len(out) - 5, mt | 26, n)
    else:
        out.extend(b"\0\0\0\0\0\0\0\0\0")
        struct.pack_into(">BQ", out, len(out) - 9, mt | 27, n)


def _int(out, x):
    mt = 0
    if x < 0:
        mt = 0x20
        x = -1 - x
    if x < _U64:
        _head(out, mt, x)
        return
    b = x.to_bytes((len("%x" % x) + 1) >> 1, "big")  # ints have no bit_length on MicroPython
    out.append(0xC2 | (mt >> 5))
    _head(out, 0x40, len(b))
    out.extend(b)


def head_len(n):
    # Bytes of the shortest head whose argument is n.
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def put_head(buf, i, mt, n):
    # Writes the shortest head of major type mt (0x00, 0x20, ... 0xE0) with
    # argument n at buf[i:]; returns the offset after it. No allocation.
    if n < 24:
        buf[i] = mt | n
        return i + 1
    if n < 0x100:
        buf[i] = mt | 24
        buf[i + 1] = n
        return i + 2
    if n < 0x10000:
        buf[i] = mt | 25
        buf[i + 1] = n >> 8
        buf[i + 2] = n & 0xFF
        return i + 3
    if n < 0x100000000:
        struct.pack_into(">BI", buf, i, mt | 26, n)
        return i + 5
    struct.pack_into(">BQ", buf, i, mt | 27, n)
    return i + 9


def put_float(buf, i, x):
    # The shortest of half / single / double that holds x exactly, at buf[i:]
    # (9 bytes of room needed); returns the offset after it. The binary64
    # image is judged from its bytes as small ints: float arithmetic would
    # allocate a boxed float per step.
    struct.pack_into(">d", buf, i + 1, x)
    b0 = buf[i + 1]
    e = ((b0 & 0x7F) << 4 | buf[i + 2] >> 4) - 1023  # unbiased exponent
    if e == 1024:  # NaN or an infinity: always half precision
        buf[i] = 0xF9
        buf[i + 1] = 0x7E if x != x else 0xFC if b0 & 0x80 else 0x7C
        buf[i + 2] = 0
        return i + 3
    buf[i] = 0xFB
    if buf[i + 8] | buf[i + 7] | buf[i + 6] | buf[i + 5] & 0x1F:  # over 23 significand bits
        return i + 9
    m = (buf[i + 2] & 0xF) << 19 | buf[i + 3] << 11 | buf[i + 4] << 3 | buf[i + 5] >> 5
    if e == -1023 and not m:  # +-0.0
        buf[i] = 0xF9
        buf[i + 1] = b0 & 0x80
        buf[i + 2] = 0
        return i + 3
    if -25 < e < 16 and not m & ((1 << (13 + max(0, -14 - e))) - 1):  # exact in half (subnormal below -14)
        h = (e + 15) << 10 | m >> 13 if e >= -14 else (m | 1 << 23) >> (-1 - e)
        buf[i] = 0xF9
        buf[i + 1] = (b0 & 0x80) | h >> 8
        buf[i + 2] = h & 0xFF
        return i + 3
    if -150 < e < 128 and not m & ((1 << max(0, -126 - e)) - 1):  # exact in single
        buf[i] = 0xFA
        struct.pack_into(">f", buf, i + 1, x)
        return i + 5
    return i + 9


def put(buf, i, x):
    # One scalar (int below 2**64 in magnitude, float, bool, None, str,
    # bytes) at buf[i:]; returns the offset after it. ValueError when buf has
    # no room left (nothing meaningful is written then).
    if x is None or x is False or x is True:
        if i >= len(buf):
            raise ValueError("CBOR: buffer full")
        buf[i] = 0xF6 if x is None else 0xF5 if x else 0xF4
        return i + 1
    if len(buf) - i < 9:
        raise ValueError("CBOR: buffer full")
    if isinstance(x, int):
        if x < 0:
            if x < -_U64:
                raise ValueError("CBOR: integer %d needs a bignum" % x)
            return put_head(buf, i, 0x20, -1 - x)
        if x >= _U64:
            raise ValueError("CBOR: integer %d needs a bignum" % x)
        return put_head(buf, i, 0, x)
    if isinstance(x, float):
        return put_float(buf, i, x)
    mt = 0x40
    if isinstance(x, str):
        x = x.encode()
        mt = 0x60
    n = len(x)
    if len(buf) - i < 9 + n:
        raise ValueError("CBOR: buffer full")
    i = put_head(buf, i, mt, n)
    buf[i:i + n] = x
    return i + n


_SCRATCH = bytearray(9)
# Views made once: extending from a fresh slice would allocate per float.
_SIZED = {3: memoryview(_SCRATCH)[:3], 5: memoryview(_SCRATCH)[:5], 9: memoryview(_SCRATCH)}


def _float(out, x):
    out.extend(_SIZED[put_float(_SCRATCH, 0, x)])


def _enc(out, x, depth):
    if x is None:
        out.append(0xF6)
    elif x is False:
        out.append(0xF4)
    elif x is True:
        out.append(0xF5)
    elif isinstance(x, int):
        _int(out, x)
    elif isinstance(x, float):
        _float(out, x)
    elif isinstance(x, str):
        b = x.encode()
        _head(out, 0x60, len(b))
        out.extend(b)
    elif isinstance(x, _BYTES):
        _head(out, 0x40, len(x))
        out.extend(x)
    elif depth >= MAX_DEPTH and isinstance(x, _NESTED):
        raise ValueError("CBOR: cannot encode nesting deeper than %d levels (a cycle?)" % MAX_DEPTH)
    elif isinstance(x, _ARRAY):
        _head(out, 0x80, len(x))
        for v in x:
            _enc(out, v, depth + 1)
    elif isinstance(x, dict):
        _head(out, 0xA0, len(x))
        for k in x:  # not items(): a tuple per pair on MicroPython
            _enc(out, k, depth + 1)
            _enc(out, x[k], depth + 1)
    elif isinstance(x, Tag):
        if not 0 <= x.tag < _U64:
            raise ValueError("CBOR: tag number %r is not 0..2**64-1" % x.tag)
        _head(out, 0xC0, x.tag)
        _enc(out, x.value, depth + 1)
    elif isinstance(x, Simple):
        if not 0 <= x.value < 256 or 24 <= x.value < 32:
            raise ValueError("CBOR: simple value %r is not 0..23 or 32..255" % x.value)
        _head(out, 0xE0, x.value)
    else:
        raise TypeError("CBOR: cannot encode a %s; use a dict, list, str, bytes, int, float, bool, None or Tag"
                        % type(x).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


class Writer:
    # Streaming encoder: containers are written as a head (major type and
    # count) followed by their items, so a large message is built without
    # first building its dicts and lists.
    def __init__(self):
        self.out = bytearray()

    def map(self, n):
        _head(self.out, 0xA0, n)

    def array(self, n):
        _head(self.out, 0x80, n)

    def item(self, x):
        _enc(self.out, x, 0)

    def bytes(self):
        return bytes(self.out)
