# Device time (docs/protocol.md section 2.5). A board has no trustworthy
# clock at boot, so every sample is stamped with (boot counter, uptime in ms).
# The first valid TIME of a boot fixes that boot's epoch for good; later
# TIMEs change nothing, so a record's time never moves. Earlier boots that
# never learned the time get an estimated epoch, persisted with its flag.
#
# Files (atomic.py): `path` holds CBOR [boot, [[b, epoch, estimated], ...]];
# `path`.boot holds the boot counter alone (u32), a second copy: whatever
# one file holds (garbage, a bignum written by the version-1 firmware), the
# counter starts above the larger valid copy, so it never goes backwards
# unless both are lost. Everything read back is range-checked and dropped if
# out of range, never trusted.
import struct

from edgefw import atomic, drop, messages
from edgefw.messages import TIME_MAX, TIME_MIN

from micropython import const

_KEEP_EPOCHS = const(16)  # bounded: a bignum and a tuple each, in the heap


class Clock:
    def __init__(self, port, path):
        self._port = port
        self._path = path
        self._last = port.ticks_ms()
        self._up = 0
        self.boot = 0
        self._epochs = {}  # boot -> (epoch_ms, estimated)
        self.changes = 0  # counts writes of the state: a cache key for users

    # start() (once per boot) runs from clock_start.py, dropped after; so do
    # the rare at_least (boot, uplink_start.py) and estimate (uplink_estimate.py).
    def start(self):
        from edgefw import clock_start
        try:
            clock_start.start(self)
        finally:
            drop("clock_start")

    def uptime_ms(self):
        # Accumulates tick differences so the count survives the wrap of
        # ticks_ms (2**30 ms on boards); called at least every few minutes.
        now = self._port.ticks_ms()
        self._up += self._port.ticks_diff(now, self._last)
        self._last = now
        return self._up

    def set_time(self, unix_ms):
        # True if this TIME fixed this boot's epoch (persisted on return);
        # False if it was already fixed. ValueError outside 2020..2100:
        # nothing used, nothing persisted.
        if (not isinstance(unix_ms, int) or isinstance(unix_ms, bool)
                or not TIME_MIN <= unix_ms < TIME_MAX):
            raise ValueError("TIME %r is outside 2020-01-01..2100-01-01" % (unix_ms,))
        if self.boot in self._epochs:
            return False
        self._epochs[self.boot] = (unix_ms - self.uptime_ms(), False)
        self._bound()
        try:
            self._save()
        except OSError:
            # Not persisted, so not used: the next TIME tries again.
            del self._epochs[self.boot]
            raise
        return True

    def epoch(self, boot):
        return self._epochs.get(boot)

    def known(self):
        # The boots whose epoch is known, ascending.
        return sorted(self._epochs)

    def forget_before(self, boot):
        # Epochs of boots with no record left on the device are not needed.
        old = [b for b in self._epochs if b < boot]
        if old:
            for b in old:
                del self._epochs[b]
            try:
                self._save()
            except OSError:
                pass  # a stale epoch on flash is harmless: dropped at the next write

    def _bound(self):
        # Keeps the oldest epoch (the journal's head boot: older ones are
        # forgotten as the head moves on) and this boot's; forgets the next
        # oldest. A forgotten epoch of a boot that still holds records is
        # estimated when that boot reaches the head (uplink_estimate.py).
        eps = self._epochs
        while len(eps) > _KEEP_EPOCHS:
            old = sorted(eps)
            del eps[old[1] if old[1] != self.boot else old[2]]

    def _save(self):
        self.changes += 1
        eps = self._epochs
        atomic.write(self._path, messages.dump([self.boot, [[b, eps[b][0], eps[b][1]] for b in sorted(eps)]]))
        atomic.write(self._path + ".boot", struct.pack(">I", self.boot))
