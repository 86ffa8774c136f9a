# Journal entries written by the version-1 firmware (before an upgrade)
# name their sensors as text: Uplink._fit and _put_tick (uplink.py) send
# them with the indexes of the current table. Imported the first time such
# an entry is met, and kept: only a board upgraded with v1 entries pending
# loads it.
from edgefw.cbor_put import head_len, put_head


def _index(u):
    # The current table's name -> index, made at the first use.
    d = getattr(u, "_index", None)
    if d is None:
        d = u._index = {}
        i = 0
        for name, _ in u.table:
            d[name] = i
            i += 1
    return d


def fit(u, r, limit, records, used, dt, budget):
    # Uplink._fit for an entry with names (r at its first pair, limit
    # already cut to the batch's record room).
    index = _index(u)
    c = 0
    size = 0
    while c < limit:
        k = index.get(r.item(1))
        if k is None:
            u._size = size
            return -1 if records == 0 and c == 0 else c
        kl = head_len(k)
        vs = r.i
        r.skip(1)
        pl = kl + r.i - vs
        if used + head_len(1 + 2 * (c + 1)) + head_len(dt) + size + pl > budget:
            break
        size += pl
        c += 1
    u._size = size
    return c


def put(u, r, i, c):
    # Uplink._put_tick's pairs from i: names become indexes; values are
    # copied. Returns the offset after them.
    out = u._out
    index = _index(u)
    r.i = u._p0
    for _ in range(c):
        i = put_head(out, i, 0, index[r.item(1)])
        vs = r.i
        r.skip(1)
        out[i:i + r.i - vs] = r.b[vs:r.i]
        i += r.i - vs
    return i
