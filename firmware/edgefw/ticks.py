# Sampling ticks into the journal (docs/protocol.md 2.7). A journal entry is
# the CBOR array [boot, uptime_ms, k0, v0, k1, v1, ...] of one tick: k is the
# sensor's index in the table, so the uplink sends a tick by rewriting the
# head and the time and copying the pairs' bytes. Encoded in place into a
# buffer allocated once: appending a tick allocates nothing but the sensor
# readings themselves.
from edgefw.cbor_put import head_len, put, put_float, put_head
from edgefw.messages import plain_text

from micropython import const

_MAX_SENSORS = const(64)  # a tick holds 1 to 64 pairs
_MAX_TEXT = const(64)  # characters of a text value
_ROOM = const(24)  # the array head, boot and uptime: at most 5 + 9 + 9 bytes
_PAIR = const(11)  # an index (at most 2 bytes) and a number (at most 9)
# A const, not messages.UINT_MAX: a global big int compared with a small
# one allocates on MicroPython, a constant folded into the code does not.
_INT_MAX = const(0x7FFFFFFFFFFFFFFF)
_VIEWS = const(32)  # views of the buffer kept (about 1 KB at most)


class TickWriter:
    def __init__(self, journal, sensors):
        if not 0 < len(sensors) <= _MAX_SENSORS:
            raise ValueError("a board needs 1 to %d sensors, has %d" % (_MAX_SENSORS, len(sensors)))
        self.journal = journal
        self.sensors = sensors
        self.table = [(s.name, s.unit) for s in sensors]
        self.sensor_errors = 0
        # Room for every sensor's number plus one text value at its longest
        # (4 bytes a character in UTF-8); a text that finds no room left is
        # counted in sensor_errors, never cut.
        self._buf = bytearray(_ROOM + _PAIR * len(sensors) + 4 * _MAX_TEXT + 2)
        self._mv = memoryview(self._buf)
        self._views = {}

    def append(self, boot, uptime_ms):
        # Reads every sensor once; appends one entry of n records; returns n.
        buf = self._buf
        room = len(buf) - _PAIR  # a number always fits below this offset
        o = _ROOM
        n = 0
        k = -1
        for s in self.sensors:
            k += 1
            try:
                v = s.read()
            except Exception:
                self.sensor_errors += 1
                continue
            if v is None:
                continue
            t = type(v)
            # The index (k < 64: one or two bytes), then the value.
            if t is float:
                if o > room:
                    self.sensor_errors += 1
                    continue
                if k < 24:  # the index, inline for the usual table
                    buf[o] = k
                    i = o + 1
                else:
                    i = put_head(buf, o, 0, k)
                j = put_float(buf, i, v)
                if j - i == 3 and buf[i + 1] & 0x7C == 0x7C:
                    self.sensor_errors += 1  # NaN or an infinity (the only halves with that exponent)
                    continue
                o = j
            elif t is int:
                if v > _INT_MAX or v < -_INT_MAX or o > room:  # magnitude below 2**63
                    self.sensor_errors += 1
                    continue
                o = put_head(buf, o, 0, k)
                o = put_head(buf, o, 0, v) if v >= 0 else put_head(buf, o, 0x20, -1 - v)
            elif t is bool:
                if o > room:
                    self.sensor_errors += 1
                    continue
                o = put_head(buf, o, 0, k)
                buf[o] = 0xF5 if v else 0xF4
                o += 1
            elif t is str and len(v) <= _MAX_TEXT and plain_text(v) and len(buf) - o > 6 + 4 * len(v):
                o = put(buf, put_head(buf, o, 0, k), v)
            else:
                self.sensor_errors += 1  # a reading of the wrong kind, or no room
                continue
            n += 1
        if not n:
            return 0
        # The head goes right before the pairs: its length is known now.
        start = (_ROOM - (1 if n < 11 else 2) - (1 if boot < 24 else head_len(boot))
                 - (5 if 0x10000 <= uptime_ms < 0x100000000 else head_len(uptime_ms)))
        i = put_head(buf, start, 0x80, 2 + 2 * n)
        i = put_head(buf, i, 0, boot)
        put_head(buf, i, 0, uptime_ms)
        # buf[start:o] as a view, from the few a board's ticks use (kept): a
        # new view each tick would allocate in the hot path, and allocating
        # on a fragmented heap scans it.
        views = self._views
        key = start << 10 | o
        v = views.get(key)
        if v is None:
            v = self._mv[start:o]
            if len(views) < _VIEWS:
                views[key] = v
        self.journal.append(v, n)
        return n
