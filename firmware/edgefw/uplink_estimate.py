# The estimated-epoch walk (docs/protocol.md section 2.5), for uplink.py:
# rare (when a boot without an epoch reaches the journal's head), imported
# then and dropped after. One pass from the head, in constant memory.
from edgefw import drop
from edgefw.uplink import _entry_head


def estimate(u, boot):
    # boot's epoch: the nearest later known epoch, less each boot in between
    # that holds records (its last uptime + 1 ms): the same value, whichever
    # of those boots' estimates were kept. Nothing later known: no estimate.
    later = [b for b in u.clock.known() if b > boot]
    if not later:
        return
    anchor = later[0]
    back = 0
    cur = boot
    up = -1  # no entry of cur read yet: it adds nothing
    r = u._r
    idx = u._got
    at = None
    done = False
    while not done:
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
            if r.boot < cur:
                continue  # boots only grow along the journal: not one of ours
            if r.boot >= anchor:
                done = True
                break
            if r.boot != cur:
                back += up + 1
                cur = r.boot
            up = r.up
    back += up + 1
    from edgefw import clock_start
    try:
        clock_start.estimate(u.clock, boot, u.clock.epoch(anchor)[0] - back)
    finally:
        drop("clock_start")
