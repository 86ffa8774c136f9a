# The agent: samples the board's sensors into the journal (one append per
# tick, through TickWriter) and drives one or more links, each with its own
# Uplink over the one journal and clock. Tasks share one Event: the sampler
# and the links' readers set it; each link's sender then polls its Uplink.
#
# Flash full is not a crash: a journal or state write that raises OSError is
# counted (fs_full) and reported once per episode with a STATUS error; the
# agent keeps sampling and sending, and the journal drops by its own rule.
import asyncio

from edgefw import drop, messages

from micropython import const

_HEALTHY_MS = const(30000)
_STATUS_GAP_MS = const(10000)
_OTA_START_MS = const(2000)
_OTA_RETRY_MS = const(60000)

# MicroPython's asyncio has the *_ms forms; CPython's has seconds only.
if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms
    _wait_for_ms = asyncio.wait_for_ms
else:
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)

    def _wait_for_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)


class Agent:
    def __init__(self, port, watchdog_ms, device_id, period_ms, clock, ticks, links, sensors,
                 health=None, trial_s=0):
        self.port = port
        self.watchdog_ms = watchdog_ms
        self.device_id = device_id
        self.period = period_ms
        self.clock = clock
        self.ticks = ticks
        self.links = links
        self.sensors = sensors
        self.wake = asyncio.Event()
        self.wdt = None
        self._health = health
        self.ota = None  # the OTA client, told when the agent is healthy
        self.ota_setup = None  # (board name, board's `ota` object): the client to build
        self._ota_at = _OTA_START_MS
        self.selftest_ok = False
        # On trial (docs/protocol.md 7.7): the uptime (ms) by which the new
        # agent must have confirmed, else it rolls back; 0: not on trial.
        self.trial_ms = trial_s * 1000
        self.fs_errors = 0  # flash writes that raised OSError to the agent
        self.no_memory = 0  # sends that ran out of heap (the message waits)
        self._fs_seen = ticks.journal.fs_full
        self._fs_episode = False
        self._ignored = 0
        self._ignored_at = None

    # -- STATUS ------------------------------------------------------------
    def counters(self, link):
        c = link.uplink.counters()
        c["bad_frames"] = link.bad_frames
        # The journal counts the full flash it handled itself (dropping by
        # its rule); the agent adds the writes that still failed.
        c["fs_full"] = c.get("fs_full", 0) + self.fs_errors
        c["interrupts_ignored"] = link.interrupts_ignored
        if self.no_memory:
            c["no_memory"] = self.no_memory
        return c

    def report(self, state, reason, selftest=None):
        # One STATUS per link, with that link's counters.
        for link in self.links:
            link.uplink.report(messages.status(self.device_id, state, reason, selftest,
                                               self.counters(link)))
        self.wake.set()

    def fs_error(self, e):
        # A write to flash failed (ENOSPC: full): counted every time,
        # reported once until a journal append succeeds again.
        self.fs_errors += 1
        self._fs_report(e)

    def _fs_report(self, e):
        if not self._fs_episode:
            self._fs_episode = True
            self.port.write(("edge: flash full or failing (%r): records are dropped and "
                             "counted; free flash or re-flash\r\n" % e).encode())
            self.report("error", "flash full or failing (%s): records are dropped and counted; "
                        "free flash or re-flash the board" % repr(e))

    def _report_ignored(self, now):
        # Stray 0x03 bytes are reported at most once per 10 s.
        n = 0
        for link in self.links:
            n += link.interrupts_ignored
        if n != self._ignored and (self._ignored_at is None
                                   or now - self._ignored_at >= _STATUS_GAP_MS):
            self._ignored = n
            self._ignored_at = now
            self.report("ok", "console: %d stray Ctrl-C bytes ignored (not an interrupt "
                        "request; see docs/protocol.md 2.11)" % n)

    def selftest(self):
        # Runs once, at start: its code is in agent_selftest.py, dropped after.
        from edgefw import agent_selftest
        try:
            return agent_selftest.run(self)
        finally:
            drop("agent_selftest")

    # -- tasks -------------------------------------------------------------
    def _feed(self):
        # Every loop that feeds the watchdog checks the trial deadline too:
        # one still running while another is stuck cannot keep a trial alive.
        if self.wdt is not None:
            self.wdt.feed()
        if self.trial_ms and self.clock.uptime_ms() >= self.trial_ms:
            self.trial_over(None)

    def trial_over(self, failed):
        # Not confirmed by the deadline, or (failed: its reason) a self-test
        # that failed on trial: rolled back and reset by code loaded for it
        # (ota_apply.trial_ended); confirmed meanwhile: the deadline dropped.
        from edgefw import ota_apply
        try:
            ota_apply.trial_ended(self, failed)
        finally:
            drop("ota_apply")

    def tick(self):
        # One journal append for every link; a failing flash is counted.
        up = self.clock.uptime_ms()
        try:
            n = self.ticks.append(self.clock.boot, up)
        except OSError as e:
            self.fs_error(e)
            return up
        full = self.ticks.journal.fs_full
        if full != self._fs_seen:
            # The journal met a full flash and made room by its rule.
            self._fs_seen = full
            self._fs_report(OSError(28))
        else:
            self._fs_episode = False
        if n:
            self.wake.set()
        return up

    async def sampler(self):
        while True:
            up = self.tick()
            self._report_ignored(up)
            self._feed()
            if self._health is not None and up >= _HEALTHY_MS:
                self._health()
                self._health = None
            if self.ota_setup is not None and up >= self._ota_at:
                # The OTA client once the links run (boot's heap peak over);
                # a heap too cut up just now: counted, tried again later.
                self._ota_at = up + _OTA_RETRY_MS
                try:
                    from edgefw.ota_client import start
                    start(self)
                except ImportError:
                    self.ota_setup = None  # a firmware without it: `edge flash` only
                except MemoryError:
                    self.no_memory += 1
            if self.ota is not None and self.selftest_ok and up >= _HEALTHY_MS:
                # A new image on trial confirms (section 7.7), once.
                self.ota.healthy()
                self.selftest_ok = False
            await _sleep_ms(self.period)

    async def sender(self):
        while True:
            # Cleared before polling, so a wake-up during poll is not lost.
            self.wake.clear()
            now = self.clock.uptime_ms()
            wait = 30000
            for link in self.links:
                try:
                    w = link.send(now)
                except OSError as e:
                    self.fs_error(e)
                    w = 1000
                except MemoryError:
                    # A heap too fragmented for this message just now: it
                    # waits (its Uplink sends it again) and the agent goes on.
                    self.no_memory += 1
                    import gc
                    gc.collect()
                    w = 100
                if w < wait:
                    wait = w
            if wait == 0:
                # Another message is ready: let the readers and sampler run
                # between two messages of a catch-up.
                await _sleep_ms(0)
                continue
            try:
                await _wait_for_ms(self.wake.wait(), max(wait, 10))
            except asyncio.TimeoutError:
                pass
            self._feed()

    async def run(self):
        # The watchdog first: a self-test stuck on a sensor resets the board,
        # and on trial stage 0 counts that boot (three roll back, 7.7).
        wd = self.watchdog_ms
        self.wdt = self.port.watchdog(wd) if wd else None
        state, reason, result = self.selftest()
        self.selftest_ok = state == "ok"
        self.report(state, reason, result)
        if self.trial_ms and not self.selftest_ok:
            self.trial_over(reason)  # final on trial: no wait (7.7)
        tasks = [self.sampler(), self.sender()]
        for link in self.links:
            tasks.append(link.run(self, _sleep_ms))
        await asyncio.gather(*tasks)
