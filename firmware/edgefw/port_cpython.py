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
        self._reader = _PipeReader()
        return self._reader

    def ready_byte(self):
        return self._reader.ready_byte()

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
    # MicroPython's StreamReader (0 at end of input). It reads what the pipe
    # holds, up to _READ bytes at a time, and hands it out from readinto and
    # ready_byte: a port with no REPL leaves nothing on the console for one.
    _READ = 1024

    def __init__(self):
        self._r = None
        self._data = b""
        self._at = 0

    async def readinto(self, buf):
        if self._at >= len(self._data):
            import asyncio
            if self._r is None:
                self._r = asyncio.StreamReader()
                loop = asyncio.get_running_loop()
                await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._r), sys.stdin)
            self._data = await self._r.read(self._READ)
            self._at = 0
        n = min(len(buf), len(self._data) - self._at)
        buf[:n] = self._data[self._at:self._at + n]
        self._at += n
        return n

    def ready_byte(self):
        # The next byte already read from the pipe, else -1.
        if self._at < len(self._data):
            self._at += 1
            return self._data[self._at - 1]
        return -1
