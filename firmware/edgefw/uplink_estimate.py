# The estimated-epoch walk (docs/protocol.md section 2.5), for uplink.py:
# rare (once per clock change at most), imported then and dropped after.
from edgefw import drop
from edgefw.uplink import _entry_head


def estimate(u):
    # One walk over the pending entries: the last uptime of each boot.
    last = {}
    at = None
    r = u._r
    idx = u._got
    while True:
        got, at = u.journal.read_into(u._raw, idx, at)
        if not got:
            break
        for e in range(0, 5 * got, 5):
            r.i = idx[e + 3]
            r.n = r.i + idx[e + 4]
            try:
                _entry_head(r)
            except (ValueError, IndexError):
                continue
            last[r.boot] = r.up
    clock = u.clock
    boots = list(last)
    for b in clock.known():
        if b not in last:
            boots.append(b)
    boots.sort(reverse=True)
    nxt = None
    out = []
    for b in boots:
        e = clock.epoch(b)
        if e is not None:
            nxt = e[0]
        elif nxt is not None and b in last:
            nxt = nxt - last[b] - 1
            out.append((b, nxt))
    if out:
        from edgefw import clock_start
        try:
            clock_start.estimate(clock, out)
        finally:
            drop("clock_start")
