# Sampling ticks into the journal (docs/protocol.md 2.7). A journal entry is
# the CBOR array [boot, uptime_ms, k0, v0, k1, v1, ...] of one tick: k is the
# sensor's index in the table, so the uplink sends a tick by rewriting the
# head and the time and copying the pairs' bytes. Encoded in place into a
# buffer allocated once: appending a tick allocates nothing but the sensor
# readings themselves.
from edgefw import cbor

from micropython import const

_MAX_SENSORS = const(64)  # a tick holds 1 to 64 pairs
_MAX_TEXT = const(64)  # characters of a text value
_ROOM = const(24)  # the array head, boot and uptime: at most 5 + 9 + 9 bytes
_PAIR = const(11)  # an index (at most 2 bytes) and a number (at most 9)
_INT_MAX = const(0x7FFFFFFFFFFFFFFF)
_FMAX = 1.7976931348623157e308
_FMIN = -_FMAX


def _head_len(n):
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _plain(s):
    if len(s) > _MAX_TEXT:
        return False
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return False
    return True


class TickWriter:
    def __init__(self, journal, sensors):
        if not 0 < len(sensors) <= _MAX_SENSORS:
            raise ValueError("a board needs 1 to %d sensors, has %d" % (_MAX_SENSORS, len(sensors)))
        self.journal = journal
        self.sensors = sensors
        self.table = [(s.name, s.unit) for s in sensors]
        self.sensor_errors = 0
        # Room for every sensor's number plus one text value at its longest
        # (4 bytes a character in UTF-8); a second long text ends the tick.
        self._buf = bytearray(_ROOM + _PAIR * len(sensors) + 4 * _MAX_TEXT + 2)
        self._mv = memoryview(self._buf)

    def append(self, boot, uptime_ms):
        # Reads every sensor once; appends one entry of n records; returns n.
        buf = self._buf
        o = _ROOM
        n = 0
        k = 0
        for s in self.sensors:
            try:
                v = s.read()
            except Exception:
                self.sensor_errors += 1
                v = None
            if v is not None:
                if v is True or v is False:
                    pass
                elif isinstance(v, int):
                    if not -_INT_MAX - 1 <= v <= _INT_MAX:
                        v = None
                elif isinstance(v, float):
                    if v != v or v > _FMAX or v < _FMIN:  # NaN, infinities
                        v = None
                elif not isinstance(v, str) or not _plain(v):
                    v = None
                if v is None:
                    self.sensor_errors += 1  # a reading of the wrong kind
                else:
                    try:
                        o2 = cbor.put_head(buf, o, 0, k)
                        o = cbor.put(buf, o2, v)
                        n += 1
                    except (ValueError, IndexError):
                        self.sensor_errors += 1  # no room left: this tick is full
            k += 1
        if not n:
            return 0
        # The head goes right before the pairs: its length is known now.
        start = _ROOM - _head_len(2 + 2 * n) - _head_len(boot) - _head_len(uptime_ms)
        i = cbor.put_head(buf, start, 0x80, 2 + 2 * n)
        i = cbor.put_head(buf, i, 0, boot)
        cbor.put_head(buf, i, 0, uptime_ms)
        self.journal.append(self._mv[start:o], n)
        return n
