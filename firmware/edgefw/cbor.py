# CBOR (RFC 8949) for the device: dumps(obj) -> bytes, loads(data) -> obj.
# Runs unchanged on MicroPython and CPython. loads rejects every malformed
# input with ValueError("CBOR: <what> at offset <n>") and never another
# exception type: a peer or a corrupt file must not crash the agent.
#
# Decoded types: int (bignum tags 2/3 included), float, bytes, str, list,
# dict, bool, None, Tag (other tags), Simple (unassigned simple values),
# UNDEFINED. A map whose keys a dict cannot hold (arrays, maps, duplicates,
# true next to 1) is refused. On boards with single-precision floats a double
# is rounded to single (a NaN stays NaN). Encoding writes the shortest head, the shortest of
# half / single / double that holds a float exactly (NaN and infinities as
# half) and maps in the dict's iteration order (insertion order on CPython; a
# MicroPython dict has none, so pass a collections.OrderedDict to fix it).
# The reader and the in-place writers live in cbor_read.py and cbor_put.py,
# which a running board uses (the items it never reads, containers, tags,
# floats, in cbor_tree.py); this module (files, tests, a host) is read at
# boot and dropped by boot.py.
import struct

from edgefw.cbor_put import head_len, put, put_float, put_head  # noqa: F401 (re-exported)
from edgefw.cbor_read import MAX_DEPTH, Reader  # noqa: F401 (re-exported)
from edgefw.cbor_tree import UNDEFINED, Simple  # noqa: F401 (re-exported)

_U64 = 0x10000000000000000


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


# Type tuples built once: a tuple display in _enc would allocate per call.
_BYTES = (bytes, bytearray, memoryview)
_ARRAY = (list, tuple)
_NESTED = (list, tuple, dict, Tag)


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
