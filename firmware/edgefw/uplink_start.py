# Uplink's start (uplink.py, Uplink.__init__): run once per boot, imported
# then and dropped after, so its code does not stay in the heap.
from edgefw import atomic, drop, messages
from edgefw.uplink import _entry_head

from micropython import const

_KEEP_TABLES = const(4)


def boot_above_journal(u):
    # Lost counter files must not reuse a boot number the journal holds
    # (its records would get this boot's epoch): the boot is raised above
    # the newest entry's before any sample is taken.
    n = u.journal.read_last_into(u._raw)
    if n > 0:
        r = u._r
        r.i = 0
        r.n = n
        try:
            _entry_head(r)
        except (ValueError, IndexError):
            return
        from edgefw import clock_start
        try:
            clock_start.at_least(u.clock, r.boot + 1)
        finally:
            drop("clock_start")


def load_tables(u):
    path = u.journal.root + "/tables"
    try:
        from edgefw import cbor  # boot only: boot.py drops it after
        kept = cbor.loads(atomic.read(path) or b"\x80")
    except Exception:
        kept = []
    good = []
    if isinstance(kept, list):
        for e in kept:
            if (isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)
                    and isinstance(e[1], list) and 0 < len(e[1]) <= 64):
                ok = True
                for t in e[1]:
                    if (not isinstance(t, list) or len(t) != 2 or not messages.valid_name(t[0])
                            or not messages.valid_unit(t[1])):
                        ok = False
                if ok and e[0] <= u.clock.boot:
                    good.append([e[0], [(t[0], t[1]) for t in e[1]]])
    if not good or good[-1][1] != u.table:
        good.append([u.clock.boot, u.table])
        good = good[-_KEEP_TABLES:]
        atomic.write(path, messages.dump([[b, [[n, un] for n, un in t]] for b, t in good]))
    for e in good:
        e.append(messages.table_id(e[1]))
    return good
