# Protocol messages (docs/protocol.md section 2): the one place that spells
# message types and keys. decode() keeps the receiver's rules of section 2.1
# in their order; builders write the deterministic encoding (definite
# lengths, shortest heads, keys ascending) so both sides produce equal bytes.
from binascii import crc32

from edgefw.cbor_read import Reader

from micropython import const

T_HELLO = const(1)
T_TIME = const(2)
T_ACK = const(4)
T_STATUS = const(5)
T_SENSORS = const(6)
T_BATCH = const(7)
T_REFUSE = const(8)
T_OTA_QUERY = const(9)
T_OTA_OFFER = const(10)
T_OTA_WINDOW = const(11)
T_OTA_CHUNK = const(12)
T_OTA_STATE = const(13)
MAX_MESSAGE = const(1024)
VERSION = const(2)
TIME_MIN = const(1577836800000)  # 2020-01-01 (section 2.5)
TIME_MAX = const(4102444800000)  # 2100-01-01, excluded
_DEPTH = const(8)
UINT_MAX = const(0x7FFFFFFFFFFFFFFF)

# Refusal texts by number (why.py holds them, loaded at the first refusal).
_E_BOOL = const(19)
_E_KIND = const(20)
_E_RANGE = const(21)
_E_TEXT = const(22)
_E_ID = const(23)
_E_ITEMS = const(24)
_E_SIZE = const(25)
_E_TRAILING = const(26)
_E_NOT_MAP = const(27)
_E_TWICE = const(28)
_E_NO_TYPE = const(29)
_E_TYPE_KIND = const(30)
_E_UNKNOWN = const(31)
_E_MISSING = const(32)
_E_REFUSE_RANGE = const(33)

# Declared value kinds of section 2 tables.
K_UINT = const(0)
K_BOOL = const(1)
K_TSTR = const(2)
K_ID = const(3)
K_ID_OR_EMPTY = const(4)
K_MAP = const(5)
K_ARRAY = const(6)
K_BSTR = const(7)  # a byte string of lo..hi bytes

# type -> ((key, kind, required, lo, hi), ...); lo..hi is a uint's range or
# a text's length in characters. Only what a device receives: the types it
# sends are checked by edgefw.outgoing, imported when one is decoded (tests,
# a host running this code), so a board never loads it.
_KEYS = {
    T_TIME: ((1, K_UINT, 1, TIME_MIN, TIME_MAX - 1), (2, K_BOOL, 0, 0, 0)),
    T_ACK: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, UINT_MAX)),
    T_REFUSE: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, UINT_MAX), (3, K_UINT, 1, 0, UINT_MAX),
               (4, K_TSTR, 1, 1, 64)),
    T_OTA_OFFER: ((1, K_ID, 1, 0, 0), (2, K_TSTR, 1, 1, 16), (3, K_BSTR, 0, 1, 512),
                  (4, K_BSTR, 0, 1, 640), (5, K_BSTR, 0, 1, 200), (6, K_UINT, 0, 60, 604800)),
    T_OTA_CHUNK: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, UINT_MAX), (3, K_UINT, 1, 0, UINT_MAX),
                  (4, K_BSTR, 1, 1, 960)),
}

def _made_of(s, upper, extra, hi):
    # 1 to hi characters of a-z 0-9 (and A-Z if upper) or extra, the first
    # not one of extra. Ranges, not strings of the allowed characters: no
    # constant kept in the heap.
    if not isinstance(s, str) or not 1 <= len(s) <= hi:
        return False
    first = True
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or (upper and "A" <= c <= "Z")):
            if first or c not in extra:
                return False
        first = False
    return True


def valid_id(s):
    # Section 2.2: 1-64 of a-z 0-9 - . , the first a letter or a digit.
    return _made_of(s, False, "-.", 64)


def valid_name(s):
    # Section 2.2: 1-32 of A-Z a-z 0-9 _ - . , the first a letter or a digit.
    return _made_of(s, True, "_-.", 32)


def valid_unit(s):
    # Section 2.2: 0-16 printable ASCII characters other than space.
    if not isinstance(s, str) or len(s) > 16:
        return False
    for c in s:
        if not "!" <= c <= "~":
            return False
    return True


def plain_text(s):
    # No control characters (U+0000-U+001F, U+007F-U+009F).
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return False
    return True


def bad(code, a=0, b=0, c=0, d=0):
    # The ValueError of refusal number code (why.py), its %s filled with a..d.
    from edgefw import why
    return ValueError(why.text(code, a, b, c, d))


def _value(r, key, kind, lo, hi):
    # The value of a known key at r.i, checked against its declared kind.
    at = r.i
    mt = r.b[at] >> 5
    if kind == K_BOOL:
        if r.b[at] not in (0xF4, 0xF5):
            raise bad(_E_BOOL, key)
        return r.item(1)
    want = 0 if kind == K_UINT else 5 if kind == K_MAP else 4 if kind == K_ARRAY else 2 if kind == K_BSTR else 3
    if mt != want:
        raise bad(_E_KIND, key)
    v = r.item(1)
    if kind == K_UINT:
        if not lo <= v <= hi:
            raise bad(_E_RANGE, key, lo, hi)
    elif kind == K_TSTR:
        if not lo <= len(v) <= hi or not plain_text(v):
            raise bad(_E_TEXT, key, lo, hi)
    elif kind == K_ID or kind == K_ID_OR_EMPTY:
        if not (valid_id(v) or (kind == K_ID_OR_EMPTY and v == "")):
            raise bad(_E_ID, key)
    elif kind == K_ARRAY or kind == K_BSTR:
        if not lo <= len(v) <= hi:
            raise bad(_E_ITEMS, key, lo, hi)
    return v


def decode(payload):
    # -> (type, {key: value}) of the known keys; ValueError naming the first
    # rule broken (section 2.1, in its order). Nothing else is raised.
    try:
        return _decode(payload)
    except MemoryError:
        raise ValueError("message does not fit in free memory")


def typed(payload):
    # Rules 1-3 of section 2.1, in order: -> (reader, type, {key: offset of
    # its value}) for every unsigned-integer key. The BLE link's own messages
    # (messages_pair.py) read their keys from here too.
    n = len(payload)
    if n > MAX_MESSAGE:
        raise bad(_E_SIZE, n, MAX_MESSAGE)
    r = Reader(payload, _DEPTH, False)
    # Rule 1 first, whole: well-formed, no tag, depth at most 8, one item.
    r.skip(0)
    if r.i != n:
        raise bad(_E_TRAILING, n - r.i)
    r.i = 0
    ib = r.b[0]
    if ib >> 5 != 5:
        raise bad(_E_NOT_MAP)
    r.i = 1
    count = -1 if ib & 31 == 31 else r.arg(ib & 31, 0)
    keys = {}  # unsigned-integer key -> offset of its value (a dict: no quadratic check)
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
            if k in keys:
                raise bad(_E_TWICE, k)
            keys[k] = r.i
        else:
            r.skip(1)  # a key that is not an unsigned integer: skipped, value too
        r.skip(1)
    at = keys.get(0)
    if at is None:
        raise bad(_E_NO_TYPE)
    if r.b[at] >> 5 != 0:
        raise bad(_E_TYPE_KIND)
    r.i = at
    return r, r.item(1), keys


def _decode(payload):
    r, kind, keys = typed(payload)
    spec = _KEYS.get(kind)
    out = None
    if spec is None and T_HELLO <= kind <= T_OTA_STATE:
        from edgefw import outgoing as out
        spec = out.KEYS.get(kind)
    if spec is None:
        raise bad(_E_UNKNOWN, kind)
    fields = {}
    for key, vk, required, lo, hi in spec:
        at = keys.get(key, -1)
        if at < 0:
            if required:
                raise bad(_E_MISSING, key)
            continue
        r.i = at
        fields[key] = _value(r, key, vk, lo, hi)
        if kind == T_SENSORS and key == 3:
            fields[-1] = crc32(r.b[at:r.i])  # the table as sent, for its id
    if kind == T_REFUSE and fields[2] >= fields[3]:
        raise bad(_E_REFUSE_RANGE)
    if kind == T_OTA_OFFER and fields[2] != "agent" and fields[2] != "firmware":
        raise bad(_E_RANGE, 2)  # a component of section 7.2
    if out is not None:
        out.check(kind, fields)
    return kind, fields


# -- building --------------------------------------------------------------
# The builders (hello, status, sensors, encode, dump, table_id, ...) live in
# messages_write.py: a board sends a HELLO, a STATUS or a state file now
# and then, so their code is loaded for each use and dropped after, not kept.


def __getattr__(name):
    # messages.<builder>: the function of messages_write.py, its module
    # dropped at once (the function keeps what it needs until it returns).
    # Dunder names are CPython's import machinery asking (__path__, ...).
    if name[:2] == "__":
        raise AttributeError(name)
    from edgefw import drop
    module = "messages_ota" if name[:4] == "ota_" else "messages_write"
    try:
        return getattr(__import__("edgefw." + module, None, None, (name,)), name)
    finally:
        drop("messages_ota")
        drop("messages_write")
