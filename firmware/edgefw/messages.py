# Protocol messages (docs/protocol.md section 2): the one place that spells
# message types and keys. decode() keeps the receiver's rules of section 2.1
# in their order; builders write the deterministic encoding (definite
# lengths, shortest heads, keys ascending) so both sides produce equal bytes.
from binascii import crc32

from edgefw import cbor

from micropython import const

T_HELLO = const(1)
T_TIME = const(2)
T_ACK = const(4)
T_STATUS = const(5)
T_SENSORS = const(6)
T_BATCH = const(7)
T_REFUSE = const(8)
MAX_MESSAGE = const(1024)
VERSION = const(2)
TIME_MIN = const(1577836800000)  # 2020-01-01 (section 2.5)
TIME_MAX = const(4102444800000)  # 2100-01-01, excluded
_DEPTH = const(8)
_UINT_MAX = const(0x7FFFFFFFFFFFFFFF)

# Declared value kinds of section 2 tables.
_UINT = const(0)
_BOOL = const(1)
_TSTR = const(2)
_ID = const(3)
_ID_OR_EMPTY = const(4)
_MAP = const(5)
_ARRAY = const(6)

# type -> ((key, kind, required, lo, hi), ...); lo..hi is a uint's range or
# a text's length in characters.
_KEYS = {
    T_HELLO: ((1, _ID, 1, 0, 0), (2, _TSTR, 1, 1, 64), (3, _TSTR, 1, 1, 64),
              (4, _UINT, 1, 0, _UINT_MAX), (5, _UINT, 1, 0, _UINT_MAX), (6, _UINT, 1, 0, _UINT_MAX),
              (7, _UINT, 1, 0, _UINT_MAX), (8, _UINT, 1, 0, _UINT_MAX), (9, _UINT, 1, VERSION, _UINT_MAX),
              (10, _UINT, 0, 0, _UINT_MAX)),
    T_TIME: ((1, _UINT, 1, TIME_MIN, TIME_MAX - 1), (2, _BOOL, 0, 0, 0)),
    T_ACK: ((1, _ID, 1, 0, 0), (2, _UINT, 1, 0, _UINT_MAX)),
    T_STATUS: ((1, _ID_OR_EMPTY, 1, 0, 0), (2, _TSTR, 1, 1, 64), (3, _TSTR, 1, 0, 512),
               (4, _MAP, 0, 0, 0), (5, _MAP, 0, 0, 0)),
    T_SENSORS: ((1, _ID, 1, 0, 0), (2, _UINT, 1, 0, 0xFFFFFFFF), (3, _ARRAY, 1, 1, 64)),
    T_BATCH: ((1, _ID, 1, 0, 0), (2, _UINT, 1, 0, _UINT_MAX), (3, _UINT, 1, 0, _UINT_MAX),
              (4, _UINT, 1, 0, 1), (5, _UINT, 1, 0, _UINT_MAX), (6, _UINT, 1, 0, 0xFFFFFFFF),
              (7, _UINT, 1, 0, _UINT_MAX), (8, _UINT, 1, 0, _UINT_MAX), (9, _ARRAY, 1, 1, 128)),
    T_REFUSE: ((1, _ID, 1, 0, 0), (2, _UINT, 1, 0, _UINT_MAX), (3, _UINT, 1, 0, _UINT_MAX),
               (4, _TSTR, 1, 1, 64)),
}

_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_FIRST + "-."
_NAME_FIRST = _ID_FIRST + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME_CHARS = _NAME_FIRST + "_-."


def _made_of(s, first, rest, lo, hi):
    if not isinstance(s, str) or not lo <= len(s) <= hi:
        return False
    if s and s[0] not in first:
        return False
    for c in s:
        if c not in rest:
            return False
    return True


def valid_id(s):
    # Section 2.2: 1-64 of a-z 0-9 - . , the first a letter or a digit.
    return _made_of(s, _ID_FIRST, _ID_CHARS, 1, 64)


def valid_name(s):
    # Section 2.2: 1-32 of A-Z a-z 0-9 _ - . , the first a letter or a digit.
    return _made_of(s, _NAME_FIRST, _NAME_CHARS, 1, 32)


def valid_unit(s):
    # Section 2.2: 0-16 printable ASCII characters other than space.
    if not isinstance(s, str) or len(s) > 16:
        return False
    for c in s:
        if not "!" <= c <= "~":
            return False
    return True


def _plain_text(s):
    # No control characters (U+0000-U+001F, U+007F-U+009F).
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return False
    return True


def _value(r, key, kind, lo, hi):
    # The value of a known key at r.i, checked against its declared kind.
    at = r.i
    mt = r.b[at] >> 5
    if kind == _BOOL:
        if r.b[at] not in (0xF4, 0xF5):
            raise ValueError("key %d must be true or false" % key)
        return r.item(1)
    want = 0 if kind == _UINT else 5 if kind == _MAP else 4 if kind == _ARRAY else 3
    if mt != want:
        raise ValueError("key %d has the wrong type" % key)
    v = r.item(1)
    if kind == _UINT:
        if not lo <= v <= hi:
            raise ValueError("key %d is out of range (%d..%d)" % (key, lo, hi))
    elif kind == _TSTR:
        if not lo <= len(v) <= hi or not _plain_text(v):
            raise ValueError("key %d must be text of %d to %d characters without control characters"
                             % (key, lo, hi))
    elif kind == _ID or kind == _ID_OR_EMPTY:
        if not (valid_id(v) or (kind == _ID_OR_EMPTY and v == "")):
            raise ValueError("key %d is not a valid device id" % key)
    elif kind == _ARRAY:
        if not lo <= len(v) <= hi:
            raise ValueError("key %d must hold %d to %d items" % (key, lo, hi))
    return v


def decode(payload):
    # -> (type, {key: value}) of the known keys; ValueError naming the first
    # rule broken (section 2.1, in its order). Nothing else is raised.
    n = len(payload)
    if n > MAX_MESSAGE:
        raise ValueError("message of %d bytes is over %d" % (n, MAX_MESSAGE))
    r = cbor.Reader(payload, _DEPTH, False)
    # Rule 1 first, whole: well-formed, no tag, depth at most 8, one item.
    r.skip(0)
    if r.i != n:
        raise ValueError("message has %d bytes after its data item" % (n - r.i))
    r.i = 0
    ib = r.b[0]
    if ib >> 5 != 5:
        raise ValueError("message is not a map")
    r.i = 1
    count = -1 if ib & 31 == 31 else r.arg(ib & 31, 0)
    keys = []  # (key, offset of its value) of the unsigned-integer keys
    done = 0
    while True:
        if count < 0:
            if r.brk():
                break
        elif done == count:
            break
        done += 1
        kb = r.b[r.i]
        if kb >> 5 == 0:
            k = r.item(1)
            for kk, _ in keys:
                if kk == k:
                    raise ValueError("key %d appears twice" % k)
            keys.append((k, r.i))
        else:
            r.skip(1)  # a key that is not an unsigned integer: skipped, value too
        r.skip(1)
    kind = None
    for k, at in keys:
        if k == 0:
            if r.b[at] >> 5 != 0:
                raise ValueError("key 0 (message type) must be an unsigned integer")
            r.i = at
            kind = r.item(1)
    if kind is None:
        raise ValueError("key 0 (message type) is missing")
    spec = _KEYS.get(kind)
    if spec is None:
        raise ValueError("key 0: unknown message type %d" % kind)
    fields = {}
    for key, vk, required, lo, hi in spec:
        at = -1
        for k, a in keys:
            if k == key:
                at = a
        if at < 0:
            if required:
                raise ValueError("key %d is missing" % key)
            continue
        r.i = at
        fields[key] = _value(r, key, vk, lo, hi)
        if kind == T_SENSORS and key == 3:
            _table_ok(fields[3], crc32(r.b[at:r.i]), fields[2])
    if kind == T_REFUSE and fields[2] >= fields[3]:
        raise ValueError("key 3 (end) must be above key 2 (first)")
    if kind == T_STATUS:
        _status_ok(fields)
    if kind == T_BATCH:
        _ticks_ok(fields[2], fields[9])
    return kind, fields


def _uint_ok(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _UINT_MAX


def _value_ok(v):
    # A record's value (section 2.7): integer of magnitude below 2**63,
    # finite float, bool, or text of at most 64 characters.
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -_UINT_MAX <= v <= _UINT_MAX
    if isinstance(v, float):
        return v == v and -1.8e308 < v < 1.8e308
    return isinstance(v, str) and len(v) <= 64 and _plain_text(v)


def _ticks_ok(first, ticks):
    records = 0
    last = 0
    for t in ticks:
        if not isinstance(t, list) or len(t) < 3 or len(t) > 129 or not len(t) & 1:
            raise ValueError("key 9: a tick is [dt_ms, k, v, ...] with 1 to 64 pairs")
        if not _uint_ok(t[0]) or t[0] < last:
            raise ValueError("key 9: dt_ms must be a uint that never decreases")
        last = t[0]
        for i in range(1, len(t), 2):
            if not _uint_ok(t[i]) or not _value_ok(t[i + 1]):
                raise ValueError("key 9: a pair is a sensor index (uint) and a value of section 2.7")
        records += len(t) >> 1
    if records > 256:
        raise ValueError("key 9: %d records, at most 256" % records)
    if first + records > _UINT_MAX:
        raise ValueError("key 2: the batch's end is above 2**63-1")


def _status_ok(f):
    for k in (4, 5):
        d = f.get(k)
        if d is None:
            continue
        for name in d:
            if not isinstance(name, str) or (k == 5 and not _uint_ok(d[name])):
                raise ValueError("key %d: keys are text%s" % (k, " and values uints" if k == 5 else ""))


def _table_ok(table, crc, table_id):
    seen = []
    for e in table:
        if (not isinstance(e, list) or len(e) != 2 or not valid_name(e[0])
                or not valid_unit(e[1]) or e[0] in seen):
            raise ValueError("key 3: each entry must be [name, unit] (section 2.2), names unique")
        seen.append(e[0])
    if crc != table_id:
        raise ValueError("key 2 is not the CRC-32 of key 3")


# -- building --------------------------------------------------------------
# Messages are small (a HELLO, a STATUS): built with cbor.dumps-style
# streaming into a Writer, keys in ascending order (insertion order is not
# kept by a MicroPython dict, so no dict is encoded whole).

def _sorted_map(w, d):
    # Text keys of a small map in deterministic order (shorter first, then
    # bytewise).
    keys = sorted(d, key=lambda k: (len(k.encode()), k.encode()))
    w.map(len(keys))
    for k in keys:
        w.item(k)
        v = d[k]
        if isinstance(v, dict):
            _sorted_map(w, v)
        else:
            w.item(v)


def encode(kind, fields):
    # {key: value} -> message bytes, keys ascending; a dict value is written
    # as a sorted map. Raises ValueError if the result is over MAX_MESSAGE.
    w = cbor.Writer()
    keys = sorted(fields)
    w.map(len(keys) + 1)
    w.item(0)
    w.item(kind)
    for k in keys:
        w.item(k)
        v = fields[k]
        if isinstance(v, dict):
            _sorted_map(w, v)
        else:
            w.item(v)
    out = w.bytes()
    if len(out) > MAX_MESSAGE:
        raise ValueError("message type %d of %d bytes is over %d" % (kind, len(out), MAX_MESSAGE))
    return out


def hello(device_id, board, version, boot, uptime_ms, next_seq, acked, dropped, refused):
    return encode(T_HELLO, {1: device_id, 2: board, 3: version, 4: boot, 5: uptime_ms,
                            6: next_seq, 7: acked, 8: dropped, 9: VERSION, 10: refused})


def status(device_id, state, reason, selftest=None, counters=None):
    # reason is cut to the 512 characters section 2.10 allows.
    f = {1: device_id or "", 2: state, 3: reason[:512]}
    if selftest is not None:
        f[4] = selftest
    if counters is not None:
        f[5] = counters
    return encode(T_STATUS, f)


def table_bytes(table):
    # CBOR of the SENSORS key 3 array for [(name, unit), ...].
    w = cbor.Writer()
    w.array(len(table))
    for name, unit in table:
        w.array(2)
        w.item(name)
        w.item(unit)
    return w.bytes()


def table_id(table):
    return crc32(table_bytes(table))


def sensors(device_id, table):
    return encode(T_SENSORS, {1: device_id, 2: table_id(table),
                              3: [[name, unit] for name, unit in table]})
