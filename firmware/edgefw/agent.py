# The agent: samples the board's sensors into the journal and drives the
# uplink over the console. Three tasks share one Event: the sampler appends
# and wakes the sender; the reader hands frames to the uplink and wakes the
# sender; the sender writes what the uplink wants sent.
import asyncio

from edgefw import frame, sensors, senml

from micropython import const

_HEALTHY_MS = const(30000)

# MicroPython's asyncio has the *_ms forms; CPython's has seconds only.
if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms
    _wait_for_ms = asyncio.wait_for_ms
else:
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)

    def _wait_for_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)


class LineReader:
    # Bounded line reader over a stream with read(n): a line longer than
    # `limit` is dropped whole (counted), so no input can exhaust the heap.
    def __init__(self, stream, limit, chunk):
        self._s = stream
        self._chunk = chunk
        self._buf = bytearray(limit)
        self._n = 0
        self._skip = False
        self._rest = b""
        self.overflows = 0

    async def readline(self):
        buf = self._buf
        while True:
            data = self._rest
            self._rest = b""
            if not data:
                data = await self._s.read(self._chunk)
                if not data:
                    return None
            i = data.find(b"\n")
            part = data if i < 0 else data[:i + 1]
            if i >= 0:
                self._rest = data[i + 1:]
            if not self._skip:
                if self._n + len(part) > len(buf):
                    self._skip = True
                    self.overflows += 1
                else:
                    buf[self._n:self._n + len(part)] = part
                    self._n += len(part)
            if i >= 0:
                n = self._n
                skipped = self._skip
                self._n = 0
                self._skip = False
                if not skipped:
                    return bytes(buf[:n])


class Agent:
    def __init__(self, port, board, cfg, clock, journal, uplink, health=None):
        self.port = port
        self.board = board
        self.cfg = cfg
        self.clock = clock
        self.journal = journal
        self.uplink = uplink
        self.sensors = sensors.build(board, port, clock, cfg["device_id"])
        self.period = cfg["sample_period_ms"]
        self.wake = asyncio.Event()
        self.wdt = None
        self._health = health
        self.bad_frames = 0

    def selftest(self):
        # Reads every sensor once and the free heap and flash: the result a
        # bench reads back after flashing (STATUS key 4).
        ok = 0
        errors = []
        for s in self.sensors:
            try:
                s.read()
                ok += 1
            except Exception:
                errors.append(s.name)
        try:
            import os
            st = os.statvfs(self.port.root or "/")
            fs_free = st[0] * st[4]
        except (OSError, AttributeError):
            fs_free = None
        from edgefw import VERSION
        result = {"sensors": ok, "sensor_errors": errors, "heap_free": self.port.mem_free(),
                  "fs_free": fs_free, "version": VERSION}
        if errors:
            return "error", "self-test: sensors failed: " + ", ".join(errors), result
        return "ok", "self-test passed: %d sensors" % ok, result

    def _feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    async def sampler(self):
        while True:
            up = self.clock.uptime_ms()
            pairs = sensors.sample(self.sensors)
            if pairs:
                self.journal.append(senml.entry(self.clock.boot, up, pairs), len(pairs) // 2)
                self.wake.set()
            self._feed()
            if self._health is not None and up >= _HEALTHY_MS:
                self._health()
                self._health = None
            await _sleep_ms(self.period)

    async def reader(self):
        lines = LineReader(self.port.reader(), frame.MAX_LINE + 2, self.port.read_chunk)
        while True:
            line = await lines.readline()
            if line is None:
                # Console closed (CPython on a pipe): nothing more will come.
                return
            if not frame.is_frame(line):
                continue
            try:
                payload = frame.decode(line)
                self.uplink.receive(payload, self.clock.uptime_ms())
            except ValueError:
                self.bad_frames += 1
                continue
            self.wake.set()

    async def sender(self):
        while True:
            # Cleared before polling, so a wake-up during poll is not lost.
            self.wake.clear()
            payload, wait = self.uplink.poll(self.clock.uptime_ms())
            if payload is not None:
                self.port.write(frame.encode(payload))
                continue
            try:
                await _wait_for_ms(self.wake.wait(), max(wait, 10))
            except asyncio.TimeoutError:
                pass
            self._feed()

    async def run(self):
        state, reason, result = self.selftest()
        self.uplink.report(self.uplink.status(state, reason, result))
        wd = self.board.get("watchdog_ms", 0)
        self.wdt = self.port.watchdog(wd) if wd else None
        await asyncio.gather(self.sampler(), self.reader(), self.sender())
