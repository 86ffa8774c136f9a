# A Linux computer (Raspberry Pi) running the agent under CPython.
import sys
import time

from edgefw.port import Port


class CPython(Port):
    # A Linux computer (Raspberry Pi) running the agent under CPython; its
    # data folder is $EDGE_DEVICE_ROOT or the current directory.
    name = "cpython"
    # No REPL to hand the console to: a 0x03 is always a stray byte here.
    repl = False

    def __init__(self):
        import os
        self.root = os.environ.get("EDGE_DEVICE_ROOT", ".")
        self._t0 = time.monotonic()

    def ticks_ms(self):
        return int((time.monotonic() - self._t0) * 1000)

    def ticks_diff(self, a, b):
        return a - b

    def mem_free(self):
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None

    def mcu_temp(self):
        try:
            with open("/sys/class/thermal/thermal_zone0/temp") as f:
                return int(f.read().strip()) / 1000
        except (OSError, ValueError):
            return None

    def write(self, data):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def reader(self):
        return _PipeReader()

    def print_exception(self, e):
        import traceback  # type: ignore[import-not-found]  # CPython only; absent from the stubs
        traceback.print_exception(e)

    def kbd_intr(self, c):
        pass

    def watchdog_reset(self):
        return False

    def reset_after_crash(self):
        pass


class _PipeReader:
    # asyncio stdin reader for CPython with the readinto(buf) of
    # MicroPython's StreamReader (0 at end of input).
    def __init__(self):
        self._r = None

    async def readinto(self, buf):
        import asyncio
        if self._r is None:
            self._r = asyncio.StreamReader()
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._r), sys.stdin)
        data = await self._r.read(len(buf))
        buf[:len(data)] = data
        return len(data)
