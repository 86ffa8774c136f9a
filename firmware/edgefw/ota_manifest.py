# OTA manifest checks on the device (docs/protocol.md section 6): a
# COSE_Sign1 manifest checked against a key list the root signed, in the
# order of section 6.5, each refusal ValueError(<check name>). Nothing here
# writes anything: the caller persists a key list or a counter only after
# every check has passed.
#
# Decoding checks deterministic encoding while it reads (shortest heads,
# definite lengths, map keys strictly ascending by their encoded bytes): no
# second copy is encoded to compare. As the host library does, a malformed
# item wins over a non-canonical one met earlier, and trailing bytes over
# both; so the flag is kept and raised only once the item has been read.
from hashlib import sha256

from micropython import const

from edgefw.cbor_read import Reader

_TAG18 = const(0xD2)
_DEPTH = const(4)
_KID_LEN = const(8)
_MAX_TEXT = const(32)
_U64 = 0xFFFFFFFFFFFFFFFF


class _Indefinite(Exception):
    # An indefinite length: not-canonical at once, the item left unread.
    pass


class _Strict(Reader):
    # Reader plus the deterministic-encoding checks; self.nc: a rule broken.
    def value(self, depth):
        at = self.i
        n = self.head()
        mt = self.mt
        if n < 0:
            raise _Indefinite()
        if mt == 7:
            if 19 < n < 23:
                return n == 21 if n < 22 else None
            self.fail("float or simple value", at)
        used = self.i - at
        if used != (1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9):
            self.nc = True
        if mt < 2:
            return n if mt == 0 else -1 - n
        if mt < 4:
            return self.string(mt, n, at)
        if mt == 6 or depth >= _DEPTH:
            self.fail("tag or nesting", at)
        if mt == 4:
            if n > self.n - self.i:
                self.fail("array too long", at)
            return [self.value(depth + 1) for _ in range(n)]
        if n > (self.n - self.i) >> 1:
            self.fail("map too long", at)
        d = {}
        prev = None
        b = self.b
        for _ in range(n):
            k0 = self.i
            k = self.value(depth + 1)
            key = bytes(b[k0:self.i])
            if prev is not None and prev >= key:  # RFC 8949 4.2.1: bytewise order
                self.nc = True
            prev = key
            try:
                d[k] = self.value(depth + 1)
            except TypeError:
                self.fail("unhashable key", k0)
        return d


def _loads(data, tagged=False):
    # One item filling data, strictly: ValueError("malformed" |
    # "trailing-bytes" | "not-canonical"). tagged: a tag 18 before it.
    r = _Strict(data)
    r.nc = False
    try:
        if tagged:
            if r.n < 1 or r.b[0] != _TAG18:
                raise ValueError
            r.i = 1
        v = r.value(0)
    except _Indefinite:
        raise ValueError("not-canonical")
    except (ValueError, TypeError, IndexError):
        raise ValueError("malformed")
    if r.i != r.n:
        raise ValueError("trailing-bytes")
    if r.nc:
        raise ValueError("not-canonical")
    return v


def _bytes(v, n=0):
    return isinstance(v, bytes) and (not n or len(v) == n)


def _uint(v):
    if type(v) is not int or not 0 <= v <= _U64:
        raise ValueError("malformed")
    return v


def _sign1(data):
    # (kid, protected, payload, signature) of a COSE_Sign1, shape checked.
    parts = _loads(data, True)
    if not isinstance(parts, list) or len(parts) != 4:
        raise ValueError("malformed")
    prot, unprot, payload, sig = parts
    if not (_bytes(prot) and _bytes(payload) and _bytes(sig, 64)) or unprot != {}:
        raise ValueError("malformed")
    hdr = _loads(prot)
    if not isinstance(hdr, dict) or len(hdr) != 2 or hdr.get(1) != -8 or not _bytes(hdr.get(4), _KID_LEN):
        raise ValueError("malformed")
    return hdr[4], prot, payload, sig


def _head(mt, n):
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25, n >> 8, n & 0xFF))
    return bytes((mt | 26,)) + n.to_bytes(4, "big")


def _verify(pub, prot, payload, sig):
    # Ed25519 over ["Signature1", protected, h'', payload], hashed in pieces.
    # Imported here: reading a key list this device holds needs none of it.
    from edgefw import ed25519
    import gc
    gc.collect()  # the verify's numbers want what the decoding left
    h = ed25519.start(pub, sig)
    h.update(b"\x84\x6aSignature1")
    h.update(_head(0x40, len(prot)))
    h.update(prot)
    h.update(b"\x40")
    h.update(_head(0x40, len(payload)))
    h.update(payload)
    if not ed25519.finish(pub, sig, h):
        raise ValueError("bad-signature")


def kid_of(pub):
    return sha256(pub).digest()[:_KID_LEN]


def _body(payload, kind, keys):
    # The payload map of a kind, holding only the keys in keys (an int bit
    # set; bit 16 + k: key k is optional).
    b = _loads(payload)
    if not isinstance(b, dict) or b.get(0) != kind:
        raise ValueError("malformed")
    for k in b:
        if type(k) is not int or not 0 <= k < 16 or not keys >> k & 1:
            raise ValueError("malformed")
    for k in range(16):
        if keys >> k & 1 and not keys >> (16 + k) & 1 and k not in b:
            raise ValueError("malformed")
    return b


def _keys(payload):
    # ({kid: (pub, expires)}, sequence) of a key list's payload.
    b = _body(payload, 2, 0b111)
    seq = _uint(b[1])
    keys = b[2]
    if not isinstance(keys, dict):
        raise ValueError("malformed")
    out = {}
    for k in keys:
        e = keys[k]
        if not _bytes(k, _KID_LEN) or not isinstance(e, list) or len(e) != 2 \
                or not _bytes(e[0]) or kid_of(e[0]) != k:
            raise ValueError("malformed")
        out[k] = (e[0], _uint(e[1]))
    return out, seq


def key_list(data, root_pub, current_seq=None):
    # The key list in data ({kid: (pub, expires)}, sequence) if the root
    # signed it; with current_seq, only if newer (else "stale-key-list").
    kid, prot, payload, sig = _sign1(data)
    if kid != kid_of(root_pub):
        raise ValueError("not-root")
    _verify(root_pub, prot, payload, sig)
    out, seq = _keys(payload)
    if current_seq is not None and seq <= current_seq:
        raise ValueError("stale-key-list")
    return out, seq


def held_key_list(data):
    # The key list this device checked before it wrote it (ota/keys.cose):
    # read, not verified again; it stays in force after a root rotation
    # until the new root signs a newer one (section 6.4).
    return _keys(_sign1(data)[2])


def rotation(data, root_pub, epoch):
    # (next root's public key, its epoch) if the current root (root_pub, at
    # epoch) signed this rotation to epoch + 1 (else "stale-rotation").
    kid, prot, payload, sig = _sign1(data)
    if kid != kid_of(root_pub):
        raise ValueError("not-root")
    _verify(root_pub, prot, payload, sig)
    b = _body(payload, 3, 0b111)
    if not _bytes(b[2], 32):
        raise ValueError("malformed")
    if _uint(b[1]) != epoch + 1:
        raise ValueError("stale-rotation")
    return b[2], b[1]


def _version(v):
    # "MAJOR.MINOR.PATCH" as a tuple: digits, no leading zeros, up to 9 each.
    if not isinstance(v, str):
        raise ValueError("malformed")
    parts = v.split(".")
    if len(parts) != 3:
        raise ValueError("malformed")
    for p in parts:
        if not 1 <= len(p) <= 9 or (p[0] == "0" and len(p) > 1):
            raise ValueError("malformed")
        for c in p:
            if not "0" <= c <= "9":
                raise ValueError("malformed")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _target(component):
    return "agent-slot" if component == "agent" else "ota-partition" if component == "firmware" else None


def _manifest(payload):
    # The manifest's fields, every range of section 6.2 checked.
    b = _body(payload, 1, 0x3FF | 0x100 << 16)
    board = b[1]
    if not isinstance(board, str) or not 1 <= len(board.encode()) <= _MAX_TEXT:
        raise ValueError("malformed")
    target = _target(b[2])
    _version(b[3])
    _uint(b[4])
    if not _bytes(b[5], 32) or _uint(b[6]) == 0 or target is None or b[7] != target:
        raise ValueError("malformed")
    _uint(b[9])
    if 8 in b:
        _version(b[8])
    return {"board": board, "component": b[2], "version": b[3], "sequence": b[4],
            "digest": b[5], "size": b[6], "target": target, "min_version": b.get(8),
            "expires": b[9]}


def check(data, root_pub, key_list_data, board, counters, now_s, capacity=None, held=False):
    # The manifest in data (a dict) if this device may install it:
    # key_list_data the signed key list it holds (None: none yet; held:
    # the device's own copy, checked when written: see held_key_list),
    # counters {component: (running version, sequence)}, now_s Unix
    # seconds, capacity {target: bytes} (None: not checked yet).
    kid, prot, payload, sig = _sign1(data)
    if key_list_data is None:
        keys = {}
    else:
        keys = (held_key_list(key_list_data) if held else key_list(key_list_data, root_pub))[0]
    entry = keys.get(kid)
    if entry is None:
        raise ValueError("unknown-key")
    if now_s >= entry[1]:
        raise ValueError("key-expired")
    _verify(entry[0], prot, payload, sig)
    m = _manifest(payload)
    if m["board"] != board:
        raise ValueError("wrong-board")
    cur = counters.get(m["component"])
    if cur is None:
        raise ValueError("wrong-component")
    if m["sequence"] <= cur[1]:
        raise ValueError("rollback")
    if m["min_version"] is not None and _version(cur[0]) < _version(m["min_version"]):
        raise ValueError("version-too-old")
    if now_s >= m["expires"]:
        raise ValueError("expired")
    if capacity is not None and m["size"] > capacity.get(m["target"], 0):
        raise ValueError("too-large")
    return m


class ImageCheck:
    # The streamed image: update(chunk) as it arrives, finish() before
    # switching to it; ValueError("size-mismatch" | "digest-mismatch").
    def __init__(self, manifest):
        self.size = manifest["size"]
        self.digest = manifest["digest"]
        self.h = sha256()
        self.n = 0

    def update(self, chunk):
        self.n += len(chunk)
        if self.n > self.size:
            raise ValueError("size-mismatch")
        self.h.update(chunk)

    def finish(self):
        if self.n != self.size:
            raise ValueError("size-mismatch")
        if self.h.digest() != self.digest:
            raise ValueError("digest-mismatch")
