# Simulated readings (kinds "sim" and "battery", and a virtual board's
# mcu_temp) with realistic noise. Imported at boot by sensors_build.py only
# when a board has such a sensor; its read closures keep it in the heap
# there, and a real board never loads it.
import math


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


def _seed(text):
    h = 2166136261
    for c in text:
        h = ((h ^ ord(c)) * 16777619) & 0xFFFFFFFF
    return h


def sim(spec, clock, rnd):
    mean = spec.get("mean", 20.0)
    swing = spec.get("swing", 1.0)
    period = spec.get("period_s", 600) * 1000
    noise = spec.get("noise", 0.1)
    phase = rnd.uniform() * 6.2831853

    def read():
        x = 6.2831853 * (clock.uptime_ms() % period) / period + phase
        return mean + swing * math.sin(x) + noise * rnd.normal()
    return read


def battery(spec, clock, rnd):
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
