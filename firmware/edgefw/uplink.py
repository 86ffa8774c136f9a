# The telemetry link, sans-I/O: messages in (receive), messages out (poll).
# It never touches a radio or a console, so serial and BLE drive the same
# core, and tests drive it directly.
#
# Rules it keeps:
# - at most one BATCH is in flight; it is retransmitted until an ACK covers
#   it, with a back-off (2 s doubling to 30 s) while no host answers;
# - a record leaves the journal only on an ACK, and ACKs are cumulative;
# - a batch holds records of one boot only;
# - HELLO is repeated (same back-off) until a TIME arrives; a TIME that asks
#   for it (key 2, sent by a host that just opened the link) gets a HELLO
#   back and the in-flight batch again at once. A TIME in reply to a HELLO
#   does not ask, so the two never ping-pong.
from edgefw import cbor, senml

from micropython import const

T_HELLO = const(1)
T_TIME = const(2)
T_ACK = const(4)
T_STATUS = const(5)
_RETRY_MIN = const(2000)
_RETRY_MAX = const(30000)
_BATCH_JOURNAL_BYTES = const(480)
_BATCH_ENTRIES = const(8)
MAX_PAYLOAD = const(1024)


class Uplink:
    def __init__(self, device_id, board, version, clock, journal, units):
        self.device_id = device_id
        self.board = board
        self.version = version
        self.clock = clock
        self.journal = journal
        self.units = units
        self.time_known = False
        self.bad_messages = 0
        self._inflight_end = None
        self._deadline = 0
        self._retry = _RETRY_MIN
        self._hello_at = 0
        self._hello_retry = _RETRY_MIN
        self._hello_now = True
        self._boot_end = {}
        self._status = None

    # -- messages in -------------------------------------------------------
    def receive(self, payload, now_ms):
        # Raises ValueError on a malformed message; state is unchanged then.
        msg = cbor.loads(payload)
        if not isinstance(msg, dict):
            raise ValueError("message is not a map")
        kind = msg.get(0)
        if kind == T_TIME:
            unix_ms = msg.get(1)
            if not isinstance(unix_ms, int) or isinstance(unix_ms, bool) or unix_ms < 0:
                raise ValueError("TIME key 1 must be an unsigned integer")
            self.clock.set_time(unix_ms)
            self.time_known = True
            if msg.get(2) is True:
                self._hello_now = True
                self._inflight_end = None
                self._retry = _RETRY_MIN
        elif kind == T_ACK:
            dev = msg.get(1)
            n = msg.get(2)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError("ACK key 2 must be an unsigned integer")
            if dev != self.device_id:
                raise ValueError("ACK for another device")
            if n > self.journal.next_seq:
                raise ValueError("ACK beyond the last record")
            if n > self.journal.acked:
                self.journal.ack(n)
            if self._inflight_end is not None and n >= self._inflight_end:
                self._inflight_end = None
                self._retry = _RETRY_MIN
        else:
            raise ValueError("unexpected message type")

    # -- messages out ------------------------------------------------------
    def hello(self, now_ms):
        j = self.journal
        return cbor.dumps({0: T_HELLO, 1: self.device_id, 2: self.board, 3: self.version,
                           4: self.clock.boot, 5: now_ms, 6: j.next_seq, 7: j.acked,
                           8: j.dropped})

    def report(self, payload):
        # A STATUS to send once, right after the next HELLO (the boot
        # self-test): a bench reading the console sees them together.
        self._status = payload

    def poll(self, now_ms):
        # Returns (payload or None, ms until poll wants to run again).
        if self._hello_now or (not self.time_known and now_ms >= self._hello_at):
            if not self._hello_now:
                self._hello_retry = min(self._hello_retry * 2, _RETRY_MAX)
            self._hello_now = False
            self._hello_at = now_ms + self._hello_retry
            return self.hello(now_ms), 0
        if self._status is not None:
            payload = self._status
            self._status = None
            return payload, 0
        if self._inflight_end is not None:
            left = self._deadline - now_ms
            if left > 0:
                return None, left
            # No ACK in time: send again (from the journal's head) later.
            self._retry = min(self._retry * 2, _RETRY_MAX)
            self._inflight_end = None
        payload, end = self._next_batch(now_ms)
        if payload is None:
            return None, 1000
        self._inflight_end = end
        self._deadline = now_ms + self._retry
        return payload, 0

    def _next_batch(self, now_ms):
        j = self.journal
        pending = j.pending(_BATCH_JOURNAL_BYTES, _BATCH_ENTRIES)
        if not pending:
            return None, None
        first_seq = pending[0][0]
        entries = []
        end = first_seq
        boot = None
        for seq, count, raw in pending:
            try:
                e = cbor.loads(raw)
            except ValueError:
                e = None
            if not isinstance(e, list) or len(e) != 2 + 2 * count:
                if not entries:
                    # Unreadable entry at the head (its CRC matched, so it
                    # was written so): give it up, counted, never resent.
                    self.bad_messages += 1
                    j.ack(seq + count)
                break
            if boot is None:
                boot = e[0]
            elif e[0] != boot:
                break
            entries.append(e)
            end = seq + count
        if not entries:
            return None, None
        epoch = self.clock.epoch(boot)
        boot_end = None
        if epoch is None and boot != self.clock.boot:
            boot_end = self._last_ms(boot)
        while True:
            payload = senml.build(self.device_id, first_seq, entries, epoch, self.clock.boot,
                                  now_ms, j.dropped, self.units, boot_end)
            if len(payload) <= MAX_PAYLOAD or len(entries) == 1:
                break
            entries = entries[:len(entries) // 2]
            end = first_seq
            for e in entries:
                end += (len(e) - 2) // 2
        return payload, end

    def _last_ms(self, boot):
        # Uptime of the last record of an earlier boot still in the journal;
        # scanned once per boot and cached.
        last = self._boot_end.get(boot)
        if last is None:
            for seq, count, raw in self.journal.iter_pending():
                try:
                    e = cbor.loads(raw)
                except ValueError:
                    continue
                if e[0] == boot:
                    last = e[1]
                elif e[0] > boot:
                    break
            self._boot_end[boot] = last
        return last

    def status(self, state, reason, selftest=None):
        msg = {0: T_STATUS, 1: self.device_id, 2: state, 3: reason}
        if selftest is not None:
            msg[4] = selftest
        return cbor.dumps(msg)
