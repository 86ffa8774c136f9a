# Port adapters: everything that differs between ESP32, RP2040, the Unix port
# (virtual boards) and CPython (a Raspberry Pi running Linux) sits behind one
# small object passed into the agent; logic never imports machine-specific
# modules itself. Port is the base (what MicroPython ports share); each chip
# has a module of its own (port_esp32, port_rp2, port_cpython), imported by
# detect() only on that chip, so an unused port costs nothing.
import sys
import time

_MP = sys.implementation.name == "micropython"


class Port:
    name = "generic"
    virtual = False
    root = ""
    # The console has a REPL to hand over to on an interrupt request
    # (docs/protocol.md section 2.11).
    repl = True
    _poll = None

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def mem_free(self):
        # Collected first: without it the figure counts garbage not yet
        # reclaimed and swings with the allocation pattern.
        import gc
        gc.collect()
        return gc.mem_free()

    def mcu_temp(self):
        return None

    def rssi(self):
        # Link quality of the current connection; None while not connected.
        return None

    def watchdog(self, timeout_ms):
        return None

    def watchdog_stop(self):
        # The agent hands the console to the REPL (an interrupt request,
        # protocol 2.11): nobody feeds the watchdog there. Ports whose chip
        # lets it stop do so; elsewhere it resets the board once it expires.
        pass

    def write(self, data):
        out = getattr(sys.stdout, "buffer", sys.stdout)
        out.write(data)

    def reader(self):
        # The wait for console input, used only when no byte is waiting
        # (ready_byte): readinto(buf) fills all of buf before it returns
        # (MicroPython's stdin blocks until len(buf) bytes arrive), so the
        # link awaits one byte into a buffer of its own.
        import asyncio
        return asyncio.StreamReader(getattr(sys.stdin, "buffer", sys.stdin))

    def ready_byte(self):
        # The next console byte if one is already waiting, else -1 (also at
        # the end of input). Never blocks; allocates nothing after its first
        # call (ipoll yields the poll object's own tuple). The link reads a
        # burst this way rather than through the event loop, a pass of which
        # costs far more than a byte (1 ms on the Unix port while a task
        # waits on a ThreadSafeFlag); and as only the bytes asked for are
        # read, what follows an interrupt request stays for the REPL.
        poll = self._poll
        if poll is None:
            import select
            poll = self._poll = select.poll()
            poll.register(sys.stdin, select.POLLIN)
            self._in = getattr(sys.stdin, "buffer", sys.stdin)
            self._one = bytearray(1)
        for _ in poll.ipoll(0):
            if self._in.readinto(self._one):
                return self._one[0]
            break
        return -1

    def kbd_intr(self, c):
        # -1: a 0x03 on the console is data, never a KeyboardInterrupt
        # raised wherever the agent happens to be; 3 gives it back.
        import micropython
        if hasattr(micropython, "kbd_intr"):
            micropython.kbd_intr(c)

    def print_exception(self, e):
        sys.print_exception(e)

    def watchdog_reset(self):
        # Did the watchdog reset the board (a hang counts as a crash)?
        try:
            import machine
            return machine.reset_cause() == machine.WDT_RESET
        except (ImportError, AttributeError):
            return False

    def reset_after_crash(self):
        # A field unit must not sit in the REPL after a crash: reset it.
        # Ports without a machine reset (virtual boards, CPython) return to
        # their REPL or exit, and their supervisor decides.
        try:
            import machine
            time.sleep_ms(1000)
            machine.reset()
        except (ImportError, AttributeError):
            pass


class Unix(Port):
    # A virtual board: the Unix port with the board's folder mounted at '/'.
    name = "unix"
    virtual = True

    def watchdog_reset(self):
        return False

    def reset_after_crash(self):
        pass


def detect():
    if not _MP:
        from edgefw.port_cpython import CPython
        return CPython()
    p = sys.platform
    if p == "esp32":
        from edgefw.port_esp32 import Esp32
        return Esp32()
    if p == "rp2":
        from edgefw.port_rp2 import Rp2
        return Rp2()
    if p in ("linux", "darwin"):
        return Unix()
    return Port()
