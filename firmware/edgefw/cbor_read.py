# CBOR reading for the device: the strict Reader behind cbor.loads and the
# protocol's message reader (messages.py). Kept apart from the encoders and
# file helpers (cbor.py), so a board at run time holds only the code it uses.
# Errors: ValueError("CBOR: <what> at offset <n>"), never another type.
from micropython import const

# Nested arrays, maps and tags past this depth are refused both ways: every
# level is a Python call, and a board's stack is small.
MAX_DEPTH = const(32)
# Error texts by number: the texts live in why.py, loaded only to
# refuse an input (their strings would take ~1.8 KB of heap for good);
# the numbers of the items read in cbor_tree.py are there.
_E_TRUNCATED = const(0)
_E_RESERVED_AI = const(1)
_E_NO_BREAK = const(2)
_E_UTF8 = const(3)
_E_CHUNK = const(4)
_E_NO_ITEM = const(7)
_E_INDEFINITE = const(8)
_E_TAG = const(9)
_E_DEPTH = const(10)
_E_BIGNUM = const(13)
_E_SIMPLE_FORM = const(14)
_E_BREAK_OR_RESERVED = const(15)
_E_CONTAINER_LONG = const(16)


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

    def fail(self, what, at, a=0, b=0):
        # what: a text, or the number of one of why.py's texts, whose %d
        # are filled with a and b.
        if isinstance(what, int):
            from edgefw import why
            what = why.text(what, a, b)
        raise ValueError("CBOR: %s at offset %d" % (what, at))

    def take(self, k, at):
        # Reserve k bytes; a length longer than what is left fails here, so a
        # lying length never reaches an allocation.
        i = self.i
        if k > self.n - i:
            self.fail(_E_TRUNCATED, at, k, self.n - i)
        self.i = i + k
        return i

    def arg(self, ai, at):
        if ai < 24:
            return ai
        if ai > 27:
            self.fail(_E_RESERVED_AI, at, ai)
        k = 1 << (ai - 24)
        i = self.take(k, at)
        b = self.b
        if k < 4:  # no slice for the common short forms
            return b[i] if k == 1 else b[i] << 8 | b[i + 1]
        return int.from_bytes(b[i:i + k], "big")

    def brk(self):
        # True (and consumed) if the next byte ends an indefinite-length item.
        if self.i >= self.n:
            self.fail(_E_NO_BREAK, self.i)
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
            self.fail(_E_UTF8, at)
        return t

    def chunks(self, mt, at):
        # Indefinite-length string: definite chunks of the same major type.
        parts = []
        while not self.brk():
            c = self.i
            ib = self.b[c]
            self.i = c + 1
            if ib >> 5 != mt or ib & 31 == 31:
                self.fail(_E_CHUNK, c, mt)
            parts.append(self.string(mt, self.arg(ib & 31, c), c))
        return (b"" if mt == 2 else "").join(parts)

    def head(self):
        # Reads the initial byte at self.i and its argument; sets self.mt and
        # returns the argument (-1: indefinite length; for major type 7 the
        # additional information, its argument left unread).
        at = self.i
        if at >= self.n:
            self.fail(_E_NO_ITEM, at)
        ib = self.b[at]
        self.i = at + 1
        mt = ib >> 5
        ai = ib & 31
        self.mt = mt
        if mt == 7 or ai < 24:  # inline: most heads carry their argument
            return ai
        if ai == 31:
            if mt < 2 or mt == 6:
                self.fail(_E_INDEFINITE, at, mt)
            return -1
        return self.arg(ai, at)

    def item(self, depth):
        # Scalars here; containers, tags and other simple values in
        # cbor_tree.py (cbor.loads, a host's checks), imported when met.
        at = self.i
        n = self.head()
        mt = self.mt
        if mt < 2:
            return n if mt == 0 else -1 - n
        if mt < 4:
            return self.chunks(mt, at) if n < 0 else self.string(mt, n, at)
        if mt == 7 and 19 < n < 23:
            return n == 21 if n < 22 else None  # false, true, null
        from edgefw import cbor_tree
        return cbor_tree.item(self, mt, n, at, depth)

    def skip(self, depth):
        at = self.i
        n = self.head()
        mt = self.mt
        if mt == 7:
            ai = n
            if ai == 24:
                if self.b[self.take(1, at)] < 32:
                    self.fail(_E_SIMPLE_FORM, at)
            elif 24 < ai < 28:
                self.take(1 << (ai - 24), at)
            elif ai > 27:
                self.fail(_E_BREAK_OR_RESERVED, at, ai)
            return
        if mt < 2:
            return
        if mt < 4:
            if n >= 0:
                i = self.take(n, at)
                if mt == 3 and not _utf8_ok(self.b[i:i + n]):
                    self.fail(_E_UTF8, at)
                return
            while not self.brk():
                c = self.i
                ib = self.b[c]
                if ib >> 5 != mt or ib & 31 == 31:
                    self.fail(_E_CHUNK, c, mt)
                self.skip(depth)
            return
        if mt == 6 and not self.tags:
            self.fail(_E_TAG, at, n)
        if depth >= self.max_depth:
            self.fail(_E_DEPTH, at, self.max_depth)
        depth += 1
        if mt == 6:
            if (n == 2 or n == 3) and (self.i >= self.n or self.b[self.i] >> 5 != 2):
                self.fail(_E_BIGNUM, at, n)
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
            self.fail(_E_CONTAINER_LONG, at, n, self.n - self.i)
        for _ in range(n * k):
            self.skip(depth)
