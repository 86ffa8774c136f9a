# Sensors are data: the board file lists them ({"name", "kind", "unit", ...})
# and this module turns each entry into an object with read() -> number or
# None (None: no reading now, e.g. RSSI while not connected). Virtual boards
# add the board file's "virtual_sensors", simulated with realistic noise.
# The board file's entries are checked at boot by config.py and turned
# into sensors by sensors_build.py (both dropped after boot).
import math

# Values are rounded to a power-of-two step so that they are exact binary
# fractions: most then encode as 3-byte half-precision CBOR floats.
_STEPS = {"Cel": 1 / 16, "%RH": 1 / 8, "V": 1 / 256}


def _quantize(v, unit):
    step = _STEPS.get(unit)
    if step is None or v is None:
        return v
    return round(v / step) * step


class _Rand:
    # xorshift32: the same sequence on every port for a given seed, so a
    # virtual board's readings are reproducible.
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def uniform(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s / 4294967296.0

    def normal(self):
        # Irwin-Hall with 4 terms: mean 0, unit variance, cheap.
        return (self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0) * 1.7320508


class Sensor:
    def __init__(self, spec, read):
        self.name = spec["name"]
        self.unit = spec.get("unit", "")
        self._read = read

    def read(self):
        return _quantize(self._read(), self.unit)


def _seed(text):
    h = 2166136261
    for c in text:
        h = ((h ^ ord(c)) * 16777619) & 0xFFFFFFFF
    return h


def _sim(spec, clock, rnd):
    mean = spec.get("mean", 20.0)
    swing = spec.get("swing", 1.0)
    period = spec.get("period_s", 600) * 1000
    noise = spec.get("noise", 0.1)
    phase = rnd.uniform() * 6.2831853

    def read():
        x = 6.2831853 * (clock.uptime_ms() % period) / period + phase
        return mean + swing * math.sin(x) + noise * rnd.normal()
    return read


def _battery(spec, clock, rnd):
    full = spec.get("full", 4.15)
    empty = spec.get("empty", 3.3)
    drain = spec.get("drain_per_h", 0.02) / 3600000.0
    noise = spec.get("noise", 0.005)
    start = full - rnd.uniform() * (full - empty) * 0.3

    def read():
        v = start - drain * clock.uptime_ms()
        if v < empty:
            v = empty
        return v + noise * rnd.normal()
    return read


def _uptime(clock):
    # Closures are made here, not in sensors_build.py: a closure keeps its
    # module's code alive, and that one is dropped after boot.
    return lambda: clock.uptime_ms() // 1000


def sample(sensors):
    # [name, value, name, value, ...] of the sensors that have a reading now.
    out = []
    for s in sensors:
        v = s.read()
        if v is not None:
            out.append(s.name)
            out.append(v)
    return out
