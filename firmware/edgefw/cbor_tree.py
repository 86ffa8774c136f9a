# The items of cbor_read.Reader.item() a running board never reads:
# arrays, maps, tags, floats and unassigned simple values (cbor.loads at
# boot, a host's checks of the messages it sends). Imported the first time
# one is met; boot.py drops it with cbor.py.
import struct
from math import ldexp

from micropython import const

_E_RESERVED_AI = const(1)
_E_UNHASHABLE_KEY = const(5)
_E_DUPLICATE_KEY = const(6)
_E_TAG = const(9)
_E_DEPTH = const(10)
_E_ARRAY_LONG = const(11)
_E_MAP_LONG = const(12)
_E_BIGNUM = const(13)
_E_SIMPLE_VALUE_FORM = const(17)
_E_STRAY_BREAK = const(18)


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
_NAN = float("nan")


def _half(h):
    # IEEE 754 binary16 -> float, written out because not every port's struct has "e".
    e = (h >> 10) & 31
    m = h & 1023
    if e == 31:
        v = float("nan") if m else float("inf")
    elif e:
        v = ldexp(m | 1024, e - 25)
    else:
        v = ldexp(m, -24)
    return -v if h & 0x8000 else v


def _simple(r, ai, at):
    # Major type 7 other than false, true and null.
    if ai < 20:
        return Simple(ai)
    if ai == 23:
        return UNDEFINED
    if ai == 24:
        v = r.b[r.take(1, at)]
        if v < 32:
            r.fail(_E_SIMPLE_VALUE_FORM, at, v)
        return Simple(v)
    if ai == 25:
        return _half(r.arg(25, at))
    if ai == 26:
        return struct.unpack_from(">f", r.b, r.take(4, at))[0]
    if ai == 27:
        i = r.take(8, at)
        b = r.b
        # A NaN is made here: on a port whose float is single (rp2), the
        # double-to-single conversion turns a double NaN into an infinity.
        if (b[i] & 0x7F == 0x7F and b[i + 1] & 0xF0 == 0xF0
                and b[i + 1] & 0xF | b[i + 2] | b[i + 3] | b[i + 4] | b[i + 5] | b[i + 6] | b[i + 7]):
            return _NAN
        return struct.unpack_from(">d", b, i)[0]
    if ai == 31:
        r.fail(_E_STRAY_BREAK, at)
    r.fail(_E_RESERVED_AI, at, ai)


def _put(r, d, depth):
    at = r.i
    n = len(d)
    k = r.item(depth)
    v = r.item(depth)
    try:
        d[k] = v
    except TypeError:
        r.fail(_E_UNHASHABLE_KEY, at)
    if len(d) == n:
        r.fail(_E_DUPLICATE_KEY, at)


def item(r, mt, n, at, depth):
    # The item whose head Reader.item read (major type mt, argument n; -1:
    # indefinite length), at offset at, inside depth containers.
    if mt == 7:
        return _simple(r, n, at)
    if mt == 6 and not r.tags:
        r.fail(_E_TAG, at, n)
    if depth >= r.max_depth:
        r.fail(_E_DEPTH, at, r.max_depth)
    depth += 1
    if mt == 4:
        if n < 0:
            a = []
            while not r.brk():
                a.append(r.item(depth))
            return a
        # Each item takes at least one byte: check before allocating n slots.
        if n > r.n - r.i:
            r.fail(_E_ARRAY_LONG, at, n, r.n - r.i)
        a = [None] * n
        for j in range(n):
            a[j] = r.item(depth)
        return a
    if mt == 5:
        if n > (r.n - r.i) >> 1:
            r.fail(_E_MAP_LONG, at, n, r.n - r.i)
        d = {}
        while not r.brk() if n < 0 else len(d) < n:  # _put() grows d by one or fails
            _put(r, d, depth)
        return d
    v = r.item(depth)
    if n == 2 or n == 3:
        if not isinstance(v, bytes):
            r.fail(_E_BIGNUM, at, n)
        v = int.from_bytes(v, "big")
        return v if n == 2 else -1 - v
    from edgefw.cbor import Tag  # tags are read by cbor.loads only
    return Tag(n, v)
