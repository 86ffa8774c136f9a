"""Stand-ins for a board's ticks and sensors, for device code run in-process
(CPython) or under micropython (DEVICE_FAKES, the same classes as source)."""

from __future__ import annotations

DEVICE_FAKES = r'''
class Port:
    # Ticks that the test moves by hand.
    t = 0

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b


class Sensor:
    # Reads its values in turn (the last one again and again); an exception
    # among them is raised.
    def __init__(self, name, unit, *values):
        self.name = name
        self.unit = unit
        self.values = list(values)
        self.i = 0

    def read(self):
        v = self.values[self.i] if self.i < len(self.values) else self.values[-1]
        self.i += 1
        if isinstance(v, Exception):
            raise v
        return v
'''

_ns: dict = {}
exec(DEVICE_FAKES, _ns)
Port = _ns["Port"]
Sensor = _ns["Sensor"]
