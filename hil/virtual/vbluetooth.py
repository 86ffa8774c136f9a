# MicroPython (Unix port) module, not host code: the `bluetooth` module of a
# virtual board. The Unix port has no radio; this module keeps MicroPython's
# documented `bluetooth` API (peripheral and GATT server side) and carries
# each call to a bridge process (hil/virtual/ble_bridge.py, CPython) that owns
# a real Bumble host on the board's emulated controller. The runner installs
# it as sys.modules["bluetooth"] when EDGE_BLE_SOCKET names the bridge's
# socket, so a board without a radio pays no heap for it.
#
# Rules it keeps:
# - The bridge owns the attribute values (a central reads them without a
#   round trip to the board); gatts_read/gatts_write ask it.
# - Every call waits for the bridge's answer: an error there is an OSError
#   here, as from NimBLE or BTstack.
# - Events reach the handler from the scheduler (micropython.schedule), as on
#   the ESP32 and Pico W ports: a reader thread receives them, queues at most
#   _QUEUE of them (a board's rxbuf ring drops the same way) and schedules one
#   drain; handlers run on the main thread between bytecodes or during sleep.
# - One call at a time: the scheduler may run between any two bytecodes of a
#   call the main program is making; a drain that finds a call in progress is
#   put off until it ends, so a handler's own calls never take its answer.
# - A write event carries the value that write left; gatts_read in its
#   handler returns it, as on the ports, whose events are synchronous (the
#   stack waits for the handler), so no later write can overwrite it first.
# - The bridge gone (the radio died): events stop, open connections are
#   reported disconnected, and every call raises OSError(ENODEV).
# Wire: one JSON array per line each way; bytes travel as hex.
#   board -> bridge: [op, args...]; bridge -> board: ["ok", result] |
#   ["err", errno] | ["ev", code, [data...]].
import micropython
from micropython import const

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_QUEUE = const(32)
_ENODEV = const(19)

_schedule = micropython.schedule  # a module global: tests put the worst interleaving in its place


class UUID:
    # A 16-bit int or a 128-bit string, as the ports accept; compares by value.
    def __init__(self, value):
        if isinstance(value, UUID):
            self._s = value._s
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            self._s = "%04x" % value
        else:
            s = str(value, "ascii") if not isinstance(value, str) else value
            h = s.replace("-", "").lower()
            if len(h) != 32:
                raise ValueError("invalid UUID")
            int(h, 16)
            self._s = "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))

    def __eq__(self, other):
        return isinstance(other, UUID) and other._s == self._s

    def __hash__(self):
        return hash(self._s)

    def __repr__(self):
        if len(self._s) == 4:
            return "UUID(0x%s)" % self._s
        return "UUID('%s')" % self._s


def _hex(data):
    import binascii
    if isinstance(data, str):
        data = data.encode()
    return binascii.hexlify(data).decode()


def _unhex(text):
    import binascii
    return binascii.unhexlify(text)


class _BLE:
    def __init__(self):
        self._sock = None
        self._handler = None
        self._events = []
        self._scheduled = False
        self._busy = False
        self._deferred = False
        self._dropped = 0
        self._snap = None
        self._reply = None
        self._lock = None
        self._dead = False
        self._conns = {}
        self._mac = None
        self._cfg = {"rxbuf": 1024, "mtu": 256, "addr_mode": 1, "io": 3,
                     "bond": True, "mitm": False, "le_secure": False}

    # --- link to the bridge -------------------------------------------------

    def _open(self):
        import os
        import socket
        import struct
        import time
        import _thread
        path = os.getenv("EDGE_BLE_SOCKET")
        if not path:
            raise OSError(_ENODEV)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0"
        # The bridge may still be starting with the bench: wait a little.
        for _ in range(40):
            try:
                s.connect(addr)
                break
            except OSError:
                time.sleep_ms(50)
        else:
            s.close()
            raise OSError(_ENODEV)
        self._sock = s
        self._dead = False
        self._events = []
        self._conns = {}
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        _thread.start_new_thread(self._read_loop, (s,))

    def _read_loop(self, s):
        # A controller out of buffers drops a packet, it does not die: a line
        # the heap has no room for just now is tried again after a
        # collection, then dropped (its tail, read next, is skipped too).
        import gc
        import json
        torn = False
        while True:
            try:
                line = s.readline()
            except OSError:
                line = b""
            except MemoryError:
                gc.collect()
                torn = True
                continue
            msg = None
            for _ in range(3):
                try:
                    msg = json.loads(line) if line else None
                    break
                except ValueError:
                    msg = None  # a garbled line: the bridge is not to be trusted any more
                    break
                except MemoryError:
                    gc.collect()
                    msg = False
            if torn and line:
                torn = False
                if not msg:
                    continue  # the tail of the line dropped
            if msg is False:
                continue  # no room for this one: dropped, as a packet
            if not msg:
                break
            if msg[0] == "ev":
                try:
                    self._queue(msg[1], msg[2])
                except MemoryError:
                    gc.collect()
            else:
                self._reply = msg
                self._lock.release()
        if s is not self._sock:
            return
        self._dead = True
        for conn, peer in list(self._conns.items()):
            self._queue(_IRQ_CENTRAL_DISCONNECT, [conn, peer[0], peer[1]])
        self._reply = None
        try:
            self._lock.release()
        except RuntimeError:
            pass

    def _queue(self, code, data):
        if self._events is None:
            return  # the radio is off
        if code in (_IRQ_CENTRAL_CONNECT, _IRQ_CENTRAL_DISCONNECT):
            # Open connections are kept (address still in hex) so that a
            # bridge that vanishes can be reported as their disconnection.
            if code == _IRQ_CENTRAL_CONNECT:
                self._conns[data[0]] = (data[1], data[2])
            else:
                self._conns.pop(data[0], None)
            data[2] = memoryview(_unhex(data[2]))
        snap = None
        if code == _IRQ_GATTS_WRITE and len(data) > 2:
            snap = data.pop()
        if len(self._events) >= _QUEUE:
            self._dropped += 1
            return
        if snap is not None:
            # Queued as bytes, not hex: a queue of OTA chunk writes takes half the heap.
            snap = _unhex(snap)
        self._events.append((code, tuple(data), snap))
        self._kick()

    def _kick(self):
        # The flag goes up before the drain is asked for: the scheduler may
        # run the drain (which lowers it) before _schedule even returns, and a
        # flag raised after that would stand with no drain pending, so no
        # later event would ever be handled. A drain asked for twice is harmless.
        if not self._scheduled:
            self._scheduled = True
            try:
                _schedule(self._drain, None)
            except RuntimeError:
                self._scheduled = False  # the scheduler's queue is full: the next event retries

    def _drain(self, _):
        self._scheduled = False
        if self._busy:
            self._deferred = True
            return
        while self._events:
            code, data, snap = self._events.pop(0)
            if self._handler:
                self._snap = None if snap is None else (data[1], snap)
                try:
                    self._handler(code, data)
                finally:
                    self._snap = None

    def _call(self, *msg):
        import json
        if self._dead or self._sock is None:
            raise OSError(_ENODEV)
        self._busy = True
        try:
            try:
                self._sock.write(json.dumps(msg) + "\n")
            except OSError:
                # The bridge is gone: dead now, not only once the reader
                # thread sees the end of its socket (active() says so at once).
                self._dead = True
                raise OSError(_ENODEV)
            self._lock.acquire()
            r = self._reply
        finally:
            self._busy = False
            if self._deferred:
                self._deferred = False
                self._kick()
        if r is None:
            raise OSError(_ENODEV)
        if r[0] == "err":
            raise OSError(r[1])
        return r[1]

    def _check(self):
        if not self._sock:
            raise OSError(_ENODEV)

    # --- configuration ------------------------------------------------------

    def active(self, *args):
        if args:
            if args[0] and (not self._sock or self._dead):
                if self._sock:
                    self._sock.close()
                self._open()
                self._mac = self._call("hello")
            elif not args[0] and self._sock:
                try:
                    self._call("off")
                except OSError:
                    pass
                s, self._sock = self._sock, None
                s.close()
                # Everything made since active(True) is let go, not replaced:
                # a new object now would sit in the middle of the heap the
                # stopped agent is about to free (the radio's own memory is
                # not the heap's on a board).
                self._events = self._conns = self._mac = self._reply = self._lock = None
        return self._sock is not None and not self._dead

    def config(self, *args, **kw):
        if args:
            if len(args) != 1 or kw:
                raise TypeError
            name = args[0]
            if name == "mac":
                self._check()
                return (self._mac[0], _unhex(self._mac[1]))
            if name == "gap_name":
                self._check()
                return _unhex(self._call("name"))
            if name in self._cfg:
                return self._cfg[name]
            raise ValueError("unknown config param")
        for name, value in kw.items():
            if name == "gap_name":
                self._check()
                self._call("name", _hex(value))
            elif name == "mtu":
                if not 23 <= value <= 517:
                    raise ValueError("invalid mtu")
                if self._sock:
                    self._call("mtu", value)
                self._cfg["mtu"] = value
            elif name in self._cfg:
                self._cfg[name] = value
            else:
                raise ValueError("unknown config param")

    def irq(self, handler):
        self._handler = handler

    # --- GAP ----------------------------------------------------------------

    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        self._check()
        self._call("adv", interval_us,
                   None if adv_data is None else _hex(adv_data),
                   None if resp_data is None else _hex(resp_data), bool(connectable))

    def gap_disconnect(self, conn_handle):
        self._check()
        return self._call("disc", conn_handle)

    # --- GATT server --------------------------------------------------------

    def gatts_register_services(self, services):
        self._check()
        spec = []
        for uuid, chars in services:
            cs = []
            for c in chars:
                ds = [[UUID(d[0])._s, d[1]] for d in (c[2] if len(c) > 2 else ())]
                cs.append([UUID(c[0])._s, c[1], ds])
            spec.append([UUID(uuid)._s, cs])
        return tuple(tuple(h) for h in self._call("reg", spec))

    def gatts_read(self, value_handle):
        self._check()
        snap = self._snap
        if snap is not None and snap[0] == value_handle:
            # In the handler of a write: that write's value (the ports'
            # synchronous events), not one the central wrote since.
            return snap[1]
        return _unhex(self._call("r", value_handle))

    def gatts_write(self, value_handle, data, send_update=False):
        self._check()
        self._call("w", value_handle, _hex(data), bool(send_update))

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._check()
        self._call("ntf", conn_handle, value_handle, None if data is None else _hex(data))

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        self._check()
        self._call("ind", conn_handle, value_handle, None if data is None else _hex(data))

    def gatts_set_buffer(self, value_handle, len, append=False):
        self._check()
        self._call("buf", value_handle, len, bool(append))


_ble = None


def BLE():
    # The singleton, as on the ports.
    global _ble
    if _ble is None:
        _ble = _BLE()
    return _ble
