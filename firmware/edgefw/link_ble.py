# The BLE link (docs/protocol.md section 5): the board is a GATT server with
# one service of three characteristics, each carrying segments (5.3) of
# messages. Control carries pairing and bond messages in clear, to Pairing;
# telemetry carries section 2 messages sealed in the Session that pairing or
# a bond opened, to and from this link's Uplink; bulk carries OTA image bytes
# to the OTA client (docs/protocol.md 7.4).
#
# Rules it keeps:
# - the radio module is passed in (MicroPython's `bluetooth`, or the virtual
#   board's stand-in): boot imports it only when the board has a radio;
# - the IRQ handler runs in scheduler context and does the minimum: it reads
#   a written value at once (the ports run it synchronously, so the value is
#   the one that write left) into that characteristic's reassembler, copies a
#   completed message into a small bounded inbox and wakes the agent; the
#   decoding, pairing and sealing run in the agent's tasks;
# - one central at a time; advertising stops while it is connected and starts
#   again, with the current state byte, after each disconnect and whenever
#   the pairing state changes;
# - telemetry is notified only while the session is proven; a disconnect
#   drops the session and unfinished segments. The Uplink stays (one per
#   link for the whole boot, over the shared journal): its in-flight batch is
#   sent again on the next session from the journal, which keeps every record
#   until an ACK, so the host still stores each record exactly once.
from micropython import const

from edgefw.segments import Reassembler, split

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)

_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)

_MTU_MAX = const(247)  # the most the device accepts (5.2)
_MTU_DEFAULT = const(23)
# The value buffers hold a whole ATT value of the largest MTU and more, so a
# write longer than MTU - 3 (a long write) is seen as too long, not cut.
_RXBUF = const(_MTU_MAX + 8)
_ADV_INTERVAL_US = const(100000)  # 100 ms (5.1); both ports take microseconds
_INBOX = const(4)  # completed messages waiting for the agent, per characteristic
_ENOMEM = const(12)
_RETRY_MS = const(20)
_IDLE_MS = const(30000)
_SEALED = const(4 + 1024 + 8)  # a sealed message at most: counter, MAX_MESSAGE, tag (5.6)

_T_UNPAIR = const(22)

_CONTROL = const(0)
_TELEMETRY = const(1)

_SERVICE = "9ba40001-ec51-4948-832f-fdedb1cbf4a1"
_UUID_CONTROL = "9ba40002-ec51-4948-832f-fdedb1cbf4a1"
_UUID_TELEMETRY = "9ba40003-ec51-4948-832f-fdedb1cbf4a1"
_UUID_BULK = "9ba40004-ec51-4948-832f-fdedb1cbf4a1"

# ERROR {0: 31, 1: "not_supported"}: the answer to control messages when the
# firmware has no pairing.
_NOT_SUPPORTED = b"\xa2\x00\x18\x1f\x01\x6dnot_supported"

STATE_VERSION = const(0x10)  # bits 7-4: advertising format version 1
_MAX_NAME = const(22)


def adv_payload(device_id, state):
    # The advertising data of 5.1: flags, manufacturer data (company 0xFFFF,
    # magic 0xEA, state byte), the device id as the local name (shortened to
    # 22 bytes beyond that).
    name = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
    kind = 0x09
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME]
        kind = 0x08
    return (b"\x02\x01\x06\x05\xff\xff\xff\xea" + bytes((state & 0xFF, len(name) + 1, kind))
            + name)


class BleLink:
    def __init__(self, bt, uplink, pairing, device_id, clock):
        self.uplink = uplink
        self.pairing = pairing
        self.device_id = device_id
        self.clock = clock
        self._bt = bt
        self._ble = None
        self._rx = (Reassembler(), Reassembler())
        self._inbox = ([], [])
        self._seg = bytearray(_MTU_MAX - 3)
        self._tx = None  # the segments being notified: (generator, handle, view)
        # Every telemetry message is sealed into this one buffer: a message
        # is sealed only once the previous is out (_tx is None), so the
        # segments never read a buffer being rewritten.
        self._sealed = bytearray(_SEALED)
        self._counters = [0, 0]  # messages sent per characteristic (mod 128)
        self._conn = None
        self._mtu = _MTU_DEFAULT
        self._session = None
        self._reply = None  # a control message to notify
        self._done = None  # a sealed message to notify (UNPAIR_DONE), then close
        self._close = False  # disconnect once the last notification is out
        self._adv_state = None
        self._wake = None
        self.connects = 0
        self.bad_writes = 0  # too long, from no central, or to bulk with no transfer open
        self.bad_sealed = 0
        self.interrupts_ignored = 0
        self.h_control = self.h_telemetry = self.h_bulk = None

    @property
    def bad_segments(self):
        return self._rx[0].bad_segments + self._rx[1].bad_segments

    @property
    def bad_frames(self):
        # The agent's STATUS counter for "what this link threw away".
        return self.bad_segments + self.bad_sealed + self.bad_writes

    @property
    def connected(self):
        return self._conn is not None

    @property
    def session(self):
        return self._session

    # -- radio setup -----------------------------------------------------------
    def start(self):
        # Activates the radio, registers the service of 5.2 and advertises.
        bt = self._bt
        ble = self._ble = bt.BLE()
        ble.active(True)
        # ESP32 (NimBLE) and Pico W (BTstack) both take config(mtu=): the
        # largest MTU offered when the central starts the exchange.
        ble.config(mtu=_MTU_MAX)
        ble.irq(self._irq)
        w = _FLAG_WRITE_NO_RESPONSE | _FLAG_NOTIFY
        ((c, t, b),) = ble.gatts_register_services(((bt.UUID(_SERVICE), (
            (bt.UUID(_UUID_CONTROL), _FLAG_WRITE | _FLAG_NOTIFY),
            (bt.UUID(_UUID_TELEMETRY), w),
            (bt.UUID(_UUID_BULK), w))),))
        self.h_control, self.h_telemetry, self.h_bulk = c, t, b
        # append=False: a write replaces the value, so each write is one
        # segment read whole in its IRQ.
        for h in (c, t, b):
            ble.gatts_set_buffer(h, _RXBUF, False)
        self.advertise()

    def close(self):
        # The agent stopped: the stack lets go of the handler (and so of
        # this link) and the radio goes off.
        ble, self._ble = self._ble, None
        self._conn = None
        self._wake = None
        if ble is not None:
            try:
                ble.irq(None)
                ble.active(False)
            except OSError:
                pass

    def state_byte(self, now_ms):
        p = self.pairing
        return STATE_VERSION | (p.state_byte(now_ms) if p is not None else 0)

    def advertise(self, now_ms=0):
        st = self.state_byte(now_ms)
        self._adv_state = st
        self._ble.gap_advertise(_ADV_INTERVAL_US, adv_payload(self.device_id, st))

    # -- IRQ: scheduler context, the minimum --------------------------------
    def _irq(self, event, data):
        if event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            value = self._ble.gatts_read(handle)
            if conn != self._conn or len(value) > self._mtu - 3:
                self.bad_writes += 1
                return
            if handle == self.h_bulk:
                # Image bytes (7.4): to the OTA client as they are, no copy;
                # with no transfer open on this link, ignored and counted.
                ota = self.uplink.ota
                if ota is None or ota.xfer is None or ota.xfer.link is not self.uplink:
                    self.bad_writes += 1
                    return
                ota.bulk(value, self.uplink, self.clock.uptime_ms())
                self._kick()
                return
            i = _CONTROL if handle == self.h_control else _TELEMETRY
            msg = self._rx[i].feed(value)
            if msg is not None:
                box = self._inbox[i]
                if len(box) >= _INBOX:
                    self._rx[i].bad_segments += 1
                else:
                    box.append(bytes(msg))
                    self._kick()
        elif event == _IRQ_CENTRAL_CONNECT:
            if self._conn is None:
                self._conn = data[0]
                self._mtu = _MTU_DEFAULT
                self.connects += 1
            self._kick()
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self._conn:
                self._conn = None
                self._dropped()
            self._kick()
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self._conn:
                self._mtu = min(data[1], _MTU_MAX)

    def _kick(self):
        if self._wake is not None:
            self._wake.set()

    def _dropped(self):
        # The connection is gone: its session, unfinished segments, queued
        # messages and notifications with it (5.3, 5.6); a transfer on it
        # pauses, what it holds kept (7.5).
        if self.uplink.ota is not None:
            self.uplink.ota.closed(self.uplink)
        self._session = None
        self._tx = None
        self._reply = None
        self._done = None
        self._close = False
        for i in (0, 1):
            self._rx[i].reset()
            del self._inbox[i][:]
        self._adv_state = None  # advertise again, from the task

    # -- the agent's side -------------------------------------------------------
    def handle(self, now_ms):
        # The work the IRQ left: messages in, advertising. True when the
        # sender has something new to send.
        if self._conn is None:
            if self._adv_state is None and self._ble is not None:
                if self.pairing is not None:
                    self.pairing.disconnected()
                try:
                    self.advertise(now_ms)
                except OSError:
                    pass  # the radio is gone: nothing to advertise on
            return False
        woke = False
        box = self._inbox[_CONTROL]
        while box:
            msg = box.pop(0)
            if self.pairing is None:
                self._reply = _NOT_SUPPORTED
            else:
                reply, session = self.pairing.control(msg, now_ms)
                if reply is not None:
                    self._reply = reply
                if session is not None:
                    self._session = session
                    self.uplink.reconnected()
            woke = True
        box = self._inbox[_TELEMETRY]
        while box:
            self._telemetry(box.pop(0), now_ms)
            woke = True
        return woke

    def _telemetry(self, msg, now_ms):
        s = self._session
        plain = s.open(msg) if s is not None else None
        if plain is None:
            # A plain message, one that fails its tag, a replay: dropped (5.6).
            self.bad_sealed += 1
            return
        # UNPAIR ({0: 22}: a map whose first key is 0, type 22) to pairing;
        # everything else to the Uplink, which checks it (section 2.1).
        done = None
        if len(plain) >= 3 and plain[1] == 0 and plain[2] == _T_UNPAIR and self.pairing is not None:
            done = self.pairing.sealed(plain)
        if done is not None:
            # UNPAIR: UNPAIR_DONE sealed, then the link closes.
            self._done = done
            return
        try:
            self.uplink.receive(plain, now_ms)
        except ValueError:
            pass  # counted by the Uplink (bad_messages)

    def _send_sealed(self, payload):
        # Only with no message in progress (send() flushes _tx first): the
        # segments of the previous one are views of the same buffer.
        buf = self._sealed
        if len(payload) + 12 > len(buf):
            raise ValueError("ble: message over 1024 bytes")
        try:
            n = self._session.seal_into(payload, buf)
        except ValueError:
            # The session's counter is spent (5.6): close; the next RESUME
            # makes new keys.
            self._close = True
            return
        self._start_tx(self.h_telemetry, _TELEMETRY, memoryview(buf)[:n])

    def _start_tx(self, handle, which, msg):
        n = self._counters[which]
        self._counters[which] = n + 1
        self._tx = (split(msg, self._mtu - 3, n, self._seg), handle, None)

    def _flush(self):
        # Notifies the segments of the message in progress; False when the
        # stack is out of buffers (NimBLE raises ENOMEM; BTstack queues), to
        # be tried again.
        gen, handle, seg = self._tx
        ble = self._ble
        while True:
            if seg is None:
                try:
                    seg = next(gen)
                except StopIteration:
                    self._tx = None
                    return True
            try:
                ble.gatts_notify(self._conn, handle, seg)
            except OSError as e:
                if e.args and e.args[0] == _ENOMEM:
                    self._tx = (gen, handle, seg)
                    return False
                # Not connected any more: the disconnect IRQ follows.
                self._tx = None
                return True
            seg = None

    def send(self, now_ms):
        # Writes at most one message; returns ms until it wants to run again.
        if self._conn is None:
            # Re-advertised when the pairing state changes (a back-off ends).
            if self._adv_state is not None and self._adv_state != self.state_byte(now_ms):
                try:
                    self.advertise(now_ms)
                except OSError:
                    pass
            return _IDLE_MS
        if self._tx is not None and not self._flush():
            return _RETRY_MS
        if self._close:
            self._close = False
            try:
                self._ble.gap_disconnect(self._conn)
            except OSError:
                pass
            return _IDLE_MS
        if self._reply is not None:
            reply, self._reply = self._reply, None
            self._start_tx(self.h_control, _CONTROL, reply)
            return 0 if self._flush() else _RETRY_MS
        s = self._session
        if s is not None and self._done is not None:
            done, self._done = self._done, None
            self._close = True
            self._send_sealed(done)
            if self._tx is None:
                return 0
            return 0 if self._flush() else _RETRY_MS
        if s is None or not s.proven:
            return _IDLE_MS
        payload, wait = self.uplink.poll(now_ms)
        if payload is None:
            return wait
        self._send_sealed(payload)
        if self._tx is None:
            return 0
        return 0 if self._flush() else _RETRY_MS

    async def run(self, agent, sleep_ms):
        # The link's task: the radio's events, handled as they come. The IRQ
        # sets a ThreadSafeFlag (safe from scheduler context, as aioble does;
        # CPython has no scheduler: an Event serves there); this task does the
        # work and wakes the agent's sender, which calls send().
        import asyncio
        flag = getattr(asyncio, "ThreadSafeFlag", None)
        self._wake = ev = flag() if flag is not None else asyncio.Event()
        try:
            self.start()
        except OSError as e:
            # No radio after all (the virtual board's bridge is not up): the
            # agent goes on with its other links.
            self._ble = None
            agent.port.write(("edge: BLE off (%r)\r\n" % e).encode())
            return
        while True:
            await ev.wait()
            if flag is None:
                ev.clear()
            try:
                self.handle(agent.clock.uptime_ms())
            except OSError as e:
                agent.fs_error(e)
            except MemoryError:
                # As on the serial link: the message is lost, the host
                # repeats it; the agent goes on.
                agent.no_memory += 1
                import gc
                gc.collect()
            agent.wake.set()
