# mypy: disable-error-code="no-redef"
# MicroPython (Unix port) module, not host code: the `time` module of a
# virtual board, whose clock the bench can move ahead (a clock jump: the
# board stalled for a while, its counters running on). The runner installs
# it as sys.modules["time"] when the supervisor gives the board a clock file
# (EDGE_CLOCK, in the board's home, outside its filesystem folder), opened
# before that folder is mounted at "/".
#
# The file holds the offset in ms as ASCII digits, rewritten in place by the
# supervisor (its `clock_jump` request); it is read again at most every
# 100 ms of the real clock, into a buffer of its own, so a reading costs the
# board nearly nothing. Every clock of the board moves by the offset: the
# tick counters (what the agent stamps records with) and the calendar
# (time(), localtime()). The offset only grows: a board's counters never run
# back, so neither do these.
from time import *  # noqa: F401,F403
import time as _t

_f = None
_off = 0
_at = 0
_buf = bytearray(24)


def start(path):
    global _f, _at
    _f = open(path, "rb")
    _at = _t.ticks_add(_t.ticks_ms(), -1000)


def _offset():
    global _off, _at
    now = _t.ticks_ms()
    if _f is not None and _t.ticks_diff(now, _at) >= 100:
        _at = now
        _f.seek(0)
        n = _f.readinto(_buf)
        try:
            off = int(bytes(_buf[:n]))
        except ValueError:
            off = _off  # a write caught half-way: the next reading has it
        if off > _off:
            _off = off
    return _off


def ticks_ms():
    return _t.ticks_add(_t.ticks_ms(), _offset())


def ticks_us():
    return _t.ticks_add(_t.ticks_us(), _offset() * 1000)


def ticks_cpu():
    return _t.ticks_add(_t.ticks_cpu(), _offset() * 1000)


def time():
    return _t.time() + _offset() // 1000


def time_ns():
    return _t.time_ns() + _offset() * 1000000


def localtime(secs=None):
    return _t.localtime(time() if secs is None else secs)


def gmtime(secs=None):
    return _t.gmtime(time() if secs is None else secs)
