# Clock.start (clock.py): run once per boot, imported then and dropped
# after, so its code does not stay in the heap.
import struct

from edgefw import atomic
from edgefw.clock import _boot_ok, _epoch_ok

from micropython import const

_BOOT_MAX = const(0xFFFFFFFE)  # as in clock.py


def start(c):
    # Counts this boot and persists the counter before any sample is
    # taken, so two boots never share a number.
    last = -1
    try:
        from edgefw import cbor  # boot only: boot.py drops it after
        state = cbor.loads(atomic.read(c._path) or b"\xf6")
    except Exception:  # garbage of any kind: ignored, never a crash
        state = None
    if isinstance(state, list) and len(state) == 2 and _boot_ok(state[0]):
        last = state[0]
        eps = state[1]
        if isinstance(eps, dict):  # version 1: {boot: epoch}
            eps = [[b, eps[b], False] for b in eps]
        if isinstance(eps, list):
            for e in eps:
                if (isinstance(e, list) and len(e) == 3 and _boot_ok(e[0])
                        and e[0] <= last and _epoch_ok(e[1])):
                    c._epochs[e[0]] = (e[1], e[2] is True)
    raw = atomic.read(c._path + ".boot")
    if raw is not None and len(raw) == 4:
        b = struct.unpack(">I", raw)[0]
        if _boot_ok(b) and b > last:
            last = b
    if last >= _BOOT_MAX:
        raise OSError("boot counter exhausted in %s" % c._path)
    c.boot = last + 1
    c._bound()
    c._save()
