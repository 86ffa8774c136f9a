# Device time. A board has no trustworthy clock at boot, so every sample is
# stamped with (boot counter, uptime in ms); the host's TIME message gives the
# epoch of the current boot (docs/protocol.md, "Times"). Records are ordered by
# sequence number, never by time, so a jump in the host's clock cannot reorder
# or drop anything.
from edgefw import atomic, cbor

from micropython import const

_KEEP_EPOCHS = const(8)


class Clock:
    def __init__(self, port, path):
        self._port = port
        self._path = path
        self._last = port.ticks_ms()
        self._up = 0
        self.boot = 0
        self._epochs = {}

    def start(self):
        # Counts this boot and persists the counter before any sample is
        # taken, so two boots never share a number.
        state = None
        raw = atomic.read(self._path)
        if raw is not None:
            try:
                state = cbor.loads(raw)
            except ValueError:
                state = None
        if isinstance(state, list) and len(state) == 2 and isinstance(state[0], int):
            self.boot = state[0] + 1
            if isinstance(state[1], dict):
                for b, e in state[1].items():
                    if isinstance(b, int) and isinstance(e, int):
                        self._epochs[b] = e
        self._save()

    def uptime_ms(self):
        # Accumulates tick differences so the count survives the wrap of
        # ticks_ms (2**30 ms on boards); called at least every few minutes.
        now = self._port.ticks_ms()
        self._up += self._port.ticks_diff(now, self._last)
        self._last = now
        return self._up

    def set_time(self, unix_ms):
        self._epochs[self.boot] = unix_ms - self.uptime_ms()
        while len(self._epochs) > _KEEP_EPOCHS:
            del self._epochs[min(self._epochs)]
        self._save()

    def epoch(self, boot):
        return self._epochs.get(boot)

    def _save(self):
        atomic.write(self._path, cbor.dumps([self.boot, self._epochs]))
