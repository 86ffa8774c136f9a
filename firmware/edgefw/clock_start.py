# Clock.start (clock.py), and the clock's rare writes: at_least (at boot)
# and estimate (estimated epochs, section 2.5). Imported when needed and
# dropped after, so their code does not stay in the heap.
import struct

from edgefw import atomic
from edgefw.messages import TIME_MAX

from micropython import const

_BOOT_MAX = const(0xFFFFFFFE)


def _epoch_ok(e):
    return isinstance(e, int) and not isinstance(e, bool) and 0 <= e < TIME_MAX


def _boot_ok(b):
    return isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= _BOOT_MAX


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


def at_least(c, boot):
    # Raises the boot counter to boot (persisted) if it is below: the
    # records on the device prove boots up to boot - 1 happened, even
    # when both counter files were lost.
    if boot > c.boot and _boot_ok(boot):
        c.boot = boot
        c._save()


def estimate(c, boot, epoch):
    # The estimated epoch of boot, the journal's head (section 2.5):
    # persisted flagged, with the epochs of older boots (no record left)
    # forgotten, in one write; kept until its records are all sent.
    if boot in c._epochs or boot >= c.boot or not _epoch_ok(epoch):
        return
    was = c._epochs
    c._epochs = {b: e for b, e in was.items() if b > boot}
    c._epochs[boot] = (epoch, True)
    c._bound()
    try:
        c._save()
    except OSError:
        c._epochs = was
        raise
