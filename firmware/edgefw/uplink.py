# The telemetry link, sans-I/O: messages in (receive), messages out (poll).
# It never touches a radio or a console, so serial and BLE drive the same
# core (one Uplink per link, sharing one journal and one clock), and tests
# drive it directly. docs/protocol.md section 2 is the contract.
#
# Rules it keeps:
# - at most one BATCH is in flight per link; it is sent again until an ACK
#   or REFUSE covers it, with a back-off (2 s doubling to 30 s);
# - batches come from the head of the journal, of one boot, and only once
#   that boot's epoch is known (a TIME this boot, or an estimate persisted
#   before the first record of that boot is sent);
# - sent_end is the end of what this link sent in this boot (at boot, the
#   journal's pointer): an ACK or REFUSE above it is rejected; the journal's
#   pointer is exact, so the next batch may start inside a tick;
# - HELLO is repeated (same back-off) until a TIME arrives; a TIME with key 2
#   gets a HELLO, the SENSORS tables and the in-flight batch again at once. A
#   TIME without key 2 is never answered, so the two never ping-pong.
from array import array

from edgefw import drop, messages
from edgefw.cbor_put import head_len, put, put_head
from edgefw.cbor_read import Reader
from edgefw.messages import T_ACK, T_OTA_CHUNK, T_OTA_OFFER, T_REFUSE, T_TIME

from micropython import const

_RETRY_MIN = const(2000)
_RETRY_MAX = const(30000)
_MAX_TICKS = const(128)
_MAX_RECORDS = const(256)
_HEAD = const(176)  # room for the BATCH header before the ticks (at most ~150 bytes)
_RAW = const(1536)  # journal entries read per batch (version-1 entries carry names)
# Refusal texts by number (why.py holds them, loaded at the first refusal).
_E_NOT_FOR_DEVICE = const(34)
_E_OTHER_DEVICE = const(35)
_E_ACK_ABOVE = const(36)
_E_REFUSE_OUTSIDE = const(37)

# Sensor tables by boot, in `<journal root>/tables` (atomic.py): CBOR
# [[first_boot, [[name, unit], ...]], ...], oldest first, at most 4. A
# journal entry holds indexes, not names, so the records of a boot are read
# with the newest table whose first_boot is at or below that boot. Records
# of a boot older than every kept table (4 re-flashes with changed board
# files while holding them, or a lost file) cannot be named: they are
# counted as dropped, never sent under a wrong name.


def _head(r, mt, what):
    # The argument of the item of major type mt at r.i (moved past its head).
    at = r.i
    ib = r.b[at]
    if ib >> 5 != mt:
        r.fail(what, at)
    r.i = at + 1
    return r.arg(ib & 31, at)


def _entry_head(r):
    # Reads the boot and uptime of a journal entry [boot, uptime_ms, k0, v0,
    # ...] into r.boot and r.up (kept on the reader, not returned: a tuple
    # per tick would be garbage); r is left at its first pair.
    if _head(r, 4, "journal entry is not an array") < 4:
        r.fail("journal entry holds no pair", r.i)
    r.boot = _head(r, 0, "boot is not an unsigned integer")
    r.up = _head(r, 0, "uptime is not an unsigned integer")


def _u(rb, i):
    # The unsigned integer at rb[i] in its shortest form up to 4 bytes (as
    # the firmware writes boot and uptime); -1 for anything else.
    ib = rb[i]
    if ib < 24:
        return ib
    if ib == 24:
        return rb[i + 1]
    if ib == 25:
        return rb[i + 1] << 8 | rb[i + 2]
    if ib == 26:
        return rb[i + 1] << 24 | rb[i + 2] << 16 | rb[i + 3] << 8 | rb[i + 4]
    return -1


class Uplink:
    # Built at boot after clock.start() and journal.open(), before the
    # first sample of this boot is appended.
    def __init__(self, device_id, board, version, clock, journal, table, share=None):
        # share: another Uplink whose scratch buffers this one uses too (the
        # BLE link's, over the serial link's): _raw, _got, _r and _hb hold
        # nothing between two calls of poll() (each batch reads the journal
        # afresh and is copied into _out, which stays per Uplink: a payload
        # is a view of it), and the agent runs its links on one thread, so
        # two polls never interleave.
        self.device_id = device_id
        self.board = board
        self.version = version
        self.clock = clock
        self.journal = journal
        self.table = list(table)
        self.bad_messages = 0
        self.time_known = False
        self._sent_end = journal.acked
        self._inflight_end = None
        self._deadline = 0
        self._retry = _RETRY_MIN
        self._hello_at = 0
        self._hello_retry = _RETRY_MIN
        self._hello_now = True
        self._sensors_left = 0  # SENSORS messages still to send after a HELLO
        self._status = None  # a STATUS to send once (the boot self-test follows the first HELLO)
        self._error = None  # the latest error STATUS not yet sent
        self._dropped_seen = journal.dropped
        self._stuck = None  # (boot, clock changes) for which no epoch could be estimated
        # The agent's OTA client (ota_client.OtaClient), shared by its links;
        # ota_seen: the number of the last of its states this link sent.
        self.ota = None
        self.ota_seen = 0
        # The buffers, largest first: at boot the heap is fragmented (the
        # board file's dict is still alive), and its largest holes are few.
        if share is None:
            self._raw = bytearray(_RAW)
            # journal.read_into's index: 5 u16 an entry, 1280 bytes in one
            # block; made from a range (sized, no 1280-byte temporary at
            # boot's peak): read_into writes an entry's slots before they are
            # read.
            self._got = array("H", range(5 * _MAX_TICKS))
        self._out = bytearray(_HEAD + messages.MAX_MESSAGE)
        self._omv = memoryview(self._out)
        if share is None:
            self._hb = bytearray(_HEAD)
            self._hmv = memoryview(self._hb)
            self._r = Reader(self._raw, 1, False)  # one reader, moved over the entries
        else:
            self._raw = share._raw
            self._got = share._got
            self._hb = share._hb
            self._hmv = share._hmv
            self._r = share._r
        # Run once, from a module dropped after: its code leaves the heap.
        from edgefw import uplink_start
        try:
            uplink_start.boot_above_journal(self)
            self._tables = uplink_start.load_tables(self)
        finally:
            drop("uplink_start")

    def _table_for(self, boot):
        found = None
        for e in self._tables:
            if e[0] <= boot:
                found = e
        return found

    # -- messages in -------------------------------------------------------
    def receive(self, payload, now_ms):
        # Raises ValueError on a message that is malformed, for another
        # device or out of range (counted in bad_messages; nothing else
        # changes).
        try:
            self._receive(payload, now_ms)
        except ValueError:
            self.bad_messages += 1
            raise

    def _receive(self, payload, now_ms):
        kind, f = messages.decode(payload)
        j = self.journal
        if kind == T_TIME:
            self.clock.set_time(f[1])
            self.time_known = True
            if f.get(2) is True:
                self._hello_now = True
                self._inflight_end = None
                self._retry = _RETRY_MIN
            return
        ota = kind == T_OTA_OFFER or kind == T_OTA_CHUNK
        if (kind != T_ACK and kind != T_REFUSE and not ota) or (ota and self.ota is None):
            raise messages.bad(_E_NOT_FOR_DEVICE, kind)
        if f[1] != self.device_id:
            raise messages.bad(_E_OTHER_DEVICE, f[1], self.device_id)
        if kind == T_OTA_CHUNK:
            self.ota.chunk(f[2], f[3], f[4], 0, self, now_ms)
            return
        if kind == T_OTA_OFFER:
            self.ota.offer(f, self, now_ms)
            return
        acked = j.acked
        sent = self._sent_end if self._sent_end > acked else acked
        if kind == T_ACK:
            n = f[2]
            if n > sent:
                raise messages.bad(_E_ACK_ABOVE, n, sent)
            if n > acked:
                j.ack(n)
        else:
            a = f[2]
            n = f[3]
            if not acked <= a or n > sent:
                raise messages.bad(_E_REFUSE_OUTSIDE, a, n, acked, sent)
            j.ack(n, refused=n - a)
            self._error = self.status("error", "host refused records %d..%d: %s" % (a, n - 1, f[4]))
        if self._inflight_end is not None and n > acked:
            # Covered, or covered in part: the next batch starts at the
            # journal's pointer, at once.
            self._inflight_end = None
            self._retry = _RETRY_MIN

    def reconnected(self):
        # A new session on a link that comes and goes (BLE): HELLO and the
        # tables first, and the batch in flight on the old connection is
        # forgotten; the next starts at the journal's pointer, so records not
        # acknowledged are sent again and the host stores each once.
        self._hello_now = True
        self._inflight_end = None
        self._retry = _RETRY_MIN
        if self.ota is not None:
            self.ota.closed(self)

    # -- messages out ------------------------------------------------------
    def hello(self, now_ms):
        j = self.journal
        return messages.hello(self.device_id, self.board, self.version, self.clock.boot, now_ms,
                              j.next_seq, j.acked, j.dropped, j.refused)

    def report(self, payload):
        # A STATUS to send once, after any HELLO and SENSORS due: the boot
        # self-test given before the first poll follows the first HELLO, so a
        # bench reading the console sees them together.
        self._status = payload

    def counters(self):
        j = self.journal
        return {"refused": j.refused, "dropped": j.dropped, "bad_messages": self.bad_messages,
                "fs_full": j.fs_full}

    def status(self, state, reason, selftest=None):
        return messages.status(self.device_id, state, reason, selftest, self.counters())

    def poll(self, now_ms):
        # Returns (payload or None, ms until poll wants to run again). A
        # payload is valid until the next call (a BATCH is a view of a buffer
        # reused for every batch).
        if self._hello_now or (not self.time_known and now_ms >= self._hello_at):
            if not self._hello_now:
                self._hello_retry = min(self._hello_retry * 2, _RETRY_MAX)
            self._hello_now = False
            self._hello_at = now_ms + self._hello_retry
            self._sensors_left = len(self._tables)
            return self.hello(now_ms), 0
        if self._sensors_left:
            e = self._tables[len(self._tables) - self._sensors_left]
            self._sensors_left -= 1
            return messages.sensors(self.device_id, e[1]), 0
        if self._status is not None:
            payload = self._status
            self._status = None
            return payload, 0
        j = self.journal
        if j.dropped != self._dropped_seen:
            n = j.dropped - self._dropped_seen
            self._dropped_seen = j.dropped
            if self._error is None:
                self._error = self.status("error", "journal full: %d records dropped (%d in all); "
                                          "the host is not taking them fast enough" % (n, j.dropped))
        if self._error is not None:
            payload = self._error
            self._error = None
            return payload, 0
        if not self.time_known:
            return None, max(0, self._hello_at - now_ms)
        ota_wait = 30000
        if self.ota is not None:
            payload, ota_wait = self.ota.poll(self, now_ms)
            if payload is not None:
                return payload, 0
        if self._inflight_end is not None:
            left = self._deadline - now_ms
            if left > 0 and self._inflight_end > j.acked:
                return None, min(left, ota_wait)
            if left <= 0:
                self._retry = min(self._retry * 2, _RETRY_MAX)
            self._inflight_end = None
        payload, end = self._next_batch()
        if payload is None:
            return None, min(1000, ota_wait)
        self._inflight_end = end
        if end > self._sent_end:
            self._sent_end = end
        self._deadline = now_ms + self._retry
        return payload, 0

    # -- batches -------------------------------------------------------
    def _epoch(self, boot):
        # (epoch, estimated) of a boot, estimating earlier boots' epochs
        # when a later one is known (section 2.5); None: wait.
        e = self.clock.epoch(boot)
        if e is not None or boot >= self.clock.boot:
            return e
        mark = (boot, self.clock.changes)
        if self._stuck == mark:
            return None
        # Rare (a new epoch to spread back): from a module dropped after.
        from edgefw import uplink_estimate
        try:
            uplink_estimate.estimate(self, boot)
        finally:
            drop("uplink_estimate")
        e = self.clock.epoch(boot)
        if e is None:
            self._stuck = mark
        return e

    def _next_batch(self):
        # BATCH from the head of the journal into the reused buffer:
        # (memoryview, end) or (None, None).
        j = self.journal
        while True:
            got, _ = j.read_into(self._raw, self._got)
            if not got:
                return None, None
            res = self._build(got, j.low)
            if res is not None:
                return res

    def _build(self, got, low):
        # One BATCH from the entries read: (view, end); (None, None): nothing
        # to send now; None: the journal's head moved (a record dropped, an
        # epoch estimated), read again.
        r = self._r
        j = self.journal
        seq = None
        boot = None
        base = 0
        o = _HEAD
        budget = 0
        ticks = 0
        records = 0
        idx = self._got
        rb = r.b
        out = self._out
        for e in range(0, 5 * got, 5):
            first = idx[e] << 16 | idx[e + 1]
            count = idx[e + 2]
            i = idx[e + 3]
            end = i + idx[e + 4]
            if ticks and count < 12 and records + count <= _MAX_RECORDS:
                # The usual tick, written inline (this loop is the hot path):
                # same boot, a whole tick of indexes that fits.
                ib = rb[i]
                i += 1 if ib < 0x98 else 2
                if (rb[i] == boot if boot < 24 else _u(rb, i) == boot):
                    i += bl
                    if rb[i] == 26:  # the uptime after the first 65 s: 4 bytes
                        up = rb[i + 1] << 24 | rb[i + 2] << 16 | rb[i + 3] << 8 | rb[i + 4]
                    else:
                        up = _u(rb, i)
                    if up >= base:
                        i += 5 if up >= 0x10000 else 1 if up < 24 else 2 if up < 0x100 else 3
                        dt = up - base
                        size = end - i
                        if (o - _HEAD + 1 + size + (1 if dt < 24 else 2 if dt < 0x100 else 3 if dt < 0x10000
                                                     else 5) <= budget and rb[i] >> 5 == 0):
                            out[o] = 0x81 + 2 * count
                            o = put_head(out, o + 1, 0, dt)
                            out[o:o + size] = rb[i:end]
                            o += size
                            ticks += 1
                            records += count
                            if ticks >= _MAX_TICKS or records >= _MAX_RECORDS:
                                break
                            continue
                i = idx[e + 3]
            r.i = i
            r.n = end
            if seq is None:
                seq = first if first > low else low
            skip = seq - first if ticks == 0 else 0
            try:
                _entry_head(r)
                b = r.boot
                up = r.up
                if ticks == 0:
                    ep = self.clock.epoch(b)
                    if ep is None:
                        # The estimate walk reuses the entry buffer: read again.
                        if b < self.clock.boot and self._epoch(b) is not None:
                            return None
                        return None, None
                    if self.clock.known()[0] < b:
                        self.clock.forget_before(b)  # no record of those boots is left
                    if skip:
                        for _ in range(2 * skip):
                            r.skip(1)
                    # Names (version 1, before the upgrade): the current
                    # table; indexes: the table of that boot.
                    tab = self._tables[-1] if r.b[r.i] >> 5 == 3 else self._table_for(b)
                    if tab is None:
                        j.ack(first + count, dropped=first + count - seq)
                        return None
                    boot = b
                    bl = head_len(b)
                    base = up
                    budget = messages.MAX_MESSAGE - self._header(seq, b, ep, tab[2], up) - 2
                elif b != boot:
                    break
                dt = up - base if up > base else 0
                c = self._fit(r, count - skip, records, o - _HEAD, dt, budget)
            except (ValueError, IndexError):
                if ticks:
                    break  # ends the batch; handled when it reaches the head
                # Unreadable entry at the head (its CRC matched, so it was
                # written so): counted, never sent.
                j.ack(first + count, dropped=first + count - seq)
                return None
            if c < 0:
                # A version-1 record whose name is not in the table.
                j.ack(seq + 1, dropped=1)
                return None
            if not c:
                break
            o = self._put_tick(r, o, dt, c)
            ticks += 1
            records += c
            if c < count - skip or ticks >= _MAX_TICKS or records >= _MAX_RECORDS:
                break
        if not records:
            return None, None
        # The header and the ticks array head go right before the ticks.
        th = head_len(ticks)
        start = _HEAD - th - self._hlen
        put_head(self._out, _HEAD - th, 0x80, ticks)
        self._omv[start:_HEAD - th] = self._hmv[:self._hlen]
        return self._omv[start:o], seq + records

    def _fit(self, r, limit, records, used, dt, budget):
        # How many pairs of this tick (from r.i) fit; -1: the first record
        # has a name not in the table. Leaves on self the bytes as sent
        # (_size), where the pairs start (_p0) and whether the entry has
        # names (_v1): no tuple per tick.
        whole = limit
        if limit > _MAX_RECORDS - records:
            limit = _MAX_RECORDS - records
        p0 = r.i
        v1 = r.b[p0] >> 5 == 3  # names as text: written by the version-1 firmware
        self._p0 = p0
        self._v1 = v1
        size = r.n - p0
        if (not v1 and limit == whole
                and used + head_len(1 + 2 * limit) + head_len(dt) + size <= budget):
            self._size = size  # the usual case: the whole rest of the tick
            return limit
        if v1:
            # Rare (entries written before the upgrade): from a module kept
            # once met.
            from edgefw import uplink_v1
            return uplink_v1.fit(self, r, limit, records, used, dt, budget)
        c = 0
        size = 0
        while c < limit:
            ks = r.i
            r.skip(1)
            kl = r.i - ks
            vs = r.i
            r.skip(1)
            pl = kl + r.i - vs
            if used + head_len(1 + 2 * (c + 1)) + head_len(dt) + size + pl > budget:
                break
            size += pl
            c += 1
        self._size = size
        return c

    def _put_tick(self, r, o, dt, c):
        # Writes [dt, pairs...] at out[o:]; returns the offset after it.
        out = self._out
        p0 = self._p0
        size = self._size
        i = put_head(out, o, 0x80, 1 + 2 * c)
        i = put_head(out, i, 0, dt)
        if not self._v1:
            # The pairs' bytes as the journal holds them: one copy.
            out[i:i + size] = r.b[p0:p0 + size]
            return i + size
        from edgefw import uplink_v1
        return uplink_v1.put(self, r, i, c)

    def _header(self, seq, boot, ep, tid, base):
        # BATCH keys 0-8 and the key 9 of the ticks, into the header buffer.
        hb = self._hb
        i = put_head(hb, 0, 0xA0, 10)
        i = put(hb, i, 0)
        i = put(hb, i, messages.T_BATCH)
        i = put(hb, i, 1)
        i = put(hb, i, self.device_id)
        vals = (seq, boot, 1 if ep[1] else 0, self.journal.dropped, tid, ep[0], base)
        k = 2
        for v in vals:
            i = put(hb, i, k)
            i = put(hb, i, v)
            k += 1
        i = put(hb, i, 9)
        self._hlen = i
        return i
