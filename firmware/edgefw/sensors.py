# Sensors are data: the board file lists them ({"name", "kind", "unit", ...})
# and this module turns each entry into an object with read() -> number or
# None (None: no reading now, e.g. RSSI while not connected). Virtual boards
# add the board file's "virtual_sensors", simulated with realistic noise
# (sensors_sim.py: a real board never loads it). The board file's entries
# are checked at boot by config.py and turned into sensors by
# sensors_build.py (both dropped after boot).

# Values are rounded to a power-of-two step so that they are exact binary
# fractions: most then encode as 3-byte half-precision CBOR floats.
_STEPS = {"Cel": 1 / 16, "%RH": 1 / 8, "V": 1 / 256}


def _quantize(v, unit):
    step = _STEPS.get(unit)
    if step is None or v is None:
        return v
    return round(v / step) * step


class Sensor:
    def __init__(self, spec, read):
        self.name = spec["name"]
        self.unit = spec.get("unit", "")
        self._read = read

    def read(self):
        return _quantize(self._read(), self.unit)


def _uptime(clock):
    # Closures are made here, not in sensors_build.py: a closure keeps its
    # module's code alive, and that one is dropped after boot.
    return lambda: clock.uptime_ms() // 1000
