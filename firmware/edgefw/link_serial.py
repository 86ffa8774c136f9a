# The serial link: one console carries a person's REPL, the agent's frames
# and line noise. The link reads the console a byte at a time into one line
# buffer allocated at boot, hands the payload of each frame line to its
# Uplink, and writes what the Uplink's poll gives as frames.
#
# Reading: the event loop is awaited only for the first byte of a burst;
# the rest is taken from the port while bytes are waiting (port.ready_byte),
# one at a time, so nothing past an interrupt request is ever read. The link
# gives the loop a turn every _BURST bytes, so the sender (an OTA_WINDOW),
# the sampler and the watchdog keep running during a transfer; not after
# each line, as a pass of the loop costs as much as a line (1 ms on the Unix
# port while a task waits on a ThreadSafeFlag and another sleeps).
#
# Rules it keeps (docs/protocol.md sections 1 and 2.11):
# - a line longer than a frame can be is dropped as it arrives (counted when
#   it is a frame): no input can make the link allocate;
# - lines that are not frames are console text, ignored;
# - a 0x03 at the start of a line (only '\r' since the last '\n') followed
#   within 500 ms by a control byte is an interrupt request: the agent stops
#   and the REPL reads the rest; any other 0x03 is ignored and counted. The
#   byte after the 0x03 is read to tell a request (mpremote's '\r', a
#   person's second Ctrl-C) from a host's next frame ('#') that happens to
#   follow line noise.
from edgefw import frame

from micropython import const

_CTRL_C = const(3)
_INTR_WAIT_MS = const(500)
_INTR_POLL_MS = const(20)
_BURST = const(2048)

# What feed() returns.
NOTHING = const(0)
LINE = const(1)
INTERRUPT = const(2)


class SerialLink:
    def __init__(self, port, uplink):
        self.port = port
        self.uplink = uplink
        self._buf = bytearray(frame.MAX_LINE + 2)
        self._mv = memoryview(self._buf)
        self._byte = memoryview(bytearray(1))
        self._n = 0
        self._line_n = 0
        self._skip = False
        self._bol = True
        self.bad_frames = 0
        self.interrupts_ignored = 0

    # -- sans-I/O core: bytes in, what happened out -----------------------
    def feed(self, c):
        # Takes one console byte; LINE when a frame line is complete in
        # line(), INTERRUPT for a 0x03 at the start of a line.
        if c == _CTRL_C:
            if self._bol:
                return INTERRUPT
            self.interrupts_ignored += 1
            return NOTHING
        if c == 10:
            n = self._n
            skipped = self._skip
            self._n = 0
            self._skip = False
            self._bol = True
            if skipped or n == 0:
                return NOTHING
            self._line_n = n
            return LINE
        if c != 13:
            self._bol = False
        if self._skip:
            return NOTHING
        n = self._n
        # Only frame lines are kept: any other line is skipped at its first
        # byte that differs from the prefix.
        if (n < 4 and c != frame.PREFIX[n]) or n >= len(self._buf):
            self._skip = True
            if n >= 4:
                self.bad_frames += 1
            return NOTHING
        self._buf[n] = c
        self._n = n + 1
        return NOTHING

    def line(self):
        # The frame line just completed, a view of the buffer (valid until
        # the next feed).
        return self._mv[:self._line_n]

    def receive_line(self, line, now_ms):
        # A frame line to the Uplink; a bad frame or message is counted and
        # changes nothing. OSError (flash full while persisting an ACK or a
        # TIME) goes to the caller, which counts it.
        try:
            payload = frame.decode(line)
        except ValueError:
            self.bad_frames += 1
            return False
        try:
            self.uplink.receive(payload, now_ms)
        except ValueError:
            self.bad_frames += 1
            return False
        return True

    def ignore_interrupt(self):
        self.interrupts_ignored += 1

    def send(self, now_ms):
        # Writes at most one message; returns ms until poll wants to run.
        payload, wait = self.uplink.poll(now_ms)
        if payload is not None:
            frame.send(self.port.write, payload)
            return 0
        return wait

    # -- driver ------------------------------------------------------------
    async def run(self, agent, sleep_ms):
        # Reads the console until it closes (CPython on a pipe). agent gives
        # the clock, the wake-up and the flash-full accounting.
        port = self.port
        stream = port.reader()
        one = self._byte
        while True:
            c = port.ready_byte()
            if c < 0:
                # Nothing waiting: the event loop wakes the link at the next
                # byte.
                if not await stream.readinto(one):
                    return
                c = one[0]
            if await self._burst(c, agent, sleep_ms):
                # The other tasks' turn: a pass of the loop that waits for
                # nothing, cheaper than waiting for input that is there.
                await sleep_ms(0)

    async def _burst(self, c, agent, sleep_ms):
        # Feeds c and the bytes waiting after it. True when it stopped with
        # more perhaps waiting (_BURST bytes fed), False when none was.
        port = self.port
        left = _BURST
        while True:
            got = self.feed(c)
            if got == LINE:
                self._deliver(agent)
            elif got == INTERRUPT:
                c = await self._next_byte(sleep_ms)
                if 0 <= c < 32:
                    port.kbd_intr(3)
                    port.watchdog_stop()
                    port.write(b"\r\nedge: agent stopped by Ctrl-C; the REPL has the console\r\n")
                    # Not an Exception: boot does not count it as a crash,
                    # and out of main.py it leaves the board at its REPL.
                    raise KeyboardInterrupt
                # Silence, or text such as a host's next frame ('#'): a
                # stray byte; what follows is read as usual.
                self.ignore_interrupt()
                if c < 0:
                    return False
                continue
            left -= 1
            if not left:
                return True
            c = port.ready_byte()
            if c < 0:
                return False

    def _deliver(self, agent):
        try:
            if self.receive_line(self.line(), agent.clock.uptime_ms()):
                agent.wake.set()
        except OSError as e:
            agent.fs_error(e)
        except MemoryError:
            # A heap too cut up for this message just now: the line is lost
            # (the host sends again: TIME, ACK and the OTA transfer all
            # repeat), never the agent.
            agent.no_memory += 1
            import gc
            gc.collect()

    async def _next_byte(self, sleep_ms):
        # The byte after a 0x03 at a line start if one comes within 500 ms,
        # else -1. A port with no REPL (CPython) has no one to hand the
        # console to, so there the 0x03 is always stray.
        port = self.port
        if not port.repl:
            return -1
        t0 = port.ticks_ms()
        # Measured on the clock, not by counting sleeps: a busy loop
        # stretches sleeps, and the window is 500 ms of real time.
        while port.ticks_diff(port.ticks_ms(), t0) <= _INTR_WAIT_MS:
            c = port.ready_byte()
            if c >= 0:
                return c
            await sleep_ms(_INTR_POLL_MS)
        return -1
