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
from edgefw import atomic, cbor, messages
from edgefw.messages import T_ACK, T_REFUSE, T_TIME

from micropython import const

_RETRY_MIN = const(2000)
_RETRY_MAX = const(30000)
_MAX_TICKS = const(128)
_MAX_RECORDS = const(256)
_HEAD = const(176)  # room for the BATCH header before the ticks (at most ~150 bytes)
_RAW = const(1536)  # journal entries read per batch (version-1 entries carry names)
_KEEP_TABLES = const(4)

# Sensor tables by boot, in `<journal root>/tables` (atomic.py): CBOR
# [[first_boot, [[name, unit], ...]], ...], oldest first, at most 4. A
# journal entry holds indexes, not names, so the records of a boot are read
# with the newest table whose first_boot is at or below that boot. Records
# of a boot older than every kept table (4 re-flashes with changed board
# files while holding them, or a lost file) cannot be named: they are
# counted as dropped, never sent under a wrong name.


def _uint(r):
    # The unsigned integer at r.i (a journal entry's boot, uptime or index).
    at = r.i
    ib = r.b[at]
    if ib >> 5 != 0:
        r.fail("unsigned integer expected", at)
    r.i = at + 1
    return r.arg(ib & 31, at)


def _entry_head(r):
    # (boot, uptime_ms) of a journal entry [boot, uptime_ms, k0, v0, ...];
    # r is left at its first pair.
    at = r.i
    ib = r.b[at]
    if ib >> 5 != 4:
        r.fail("journal entry is not an array", at)
    r.i = at + 1
    if r.arg(ib & 31, at) < 4:
        r.fail("journal entry holds no pair", at)
    return _uint(r), _uint(r)


def _hlen(n):
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


class Uplink:
    def __init__(self, device_id, board, version, clock, journal, table):
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
        self._status = None  # the boot STATUS, sent once after the next HELLO
        self._error = None  # the latest error STATUS not yet sent
        self._dropped_seen = journal.dropped
        self._stuck = None  # (boot, clock changes) for which no epoch could be estimated
        self._out = bytearray(_HEAD + messages.MAX_MESSAGE)
        self._omv = memoryview(self._out)
        self._hb = bytearray(_HEAD)
        self._hmv = memoryview(self._hb)
        self._raw = bytearray(_RAW)
        self._r = cbor.Reader(self._raw, 1, False)  # one reader, moved over the entries
        self._tables = self._load_tables()
        self._index = {}
        i = 0
        for name, _ in self.table:
            self._index[name] = i
            i += 1

    # -- the sensor tables ---------------------------------------------
    def _load_tables(self):
        path = self.journal.root + "/tables"
        try:
            kept = cbor.loads(atomic.read(path) or b"\x80")
        except Exception:
            kept = []
        good = []
        if isinstance(kept, list):
            for e in kept:
                if (isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)
                        and isinstance(e[1], list) and 0 < len(e[1]) <= 64):
                    ok = True
                    for t in e[1]:
                        if (not isinstance(t, list) or len(t) != 2 or not messages.valid_name(t[0])
                                or not messages.valid_unit(t[1])):
                            ok = False
                    if ok and e[0] <= self.clock.boot:
                        good.append([e[0], [(t[0], t[1]) for t in e[1]]])
        if not good or good[-1][1] != self.table:
            good.append([self.clock.boot, self.table])
            good = good[-_KEEP_TABLES:]
            atomic.write(path, cbor.dumps([[b, [[n, u] for n, u in t]] for b, t in good]))
        for e in good:
            e.append(messages.table_id(e[1]))
        return good

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
            self._receive(payload)
        except ValueError:
            self.bad_messages += 1
            raise

    def _receive(self, payload):
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
        if kind != T_ACK and kind != T_REFUSE:
            raise ValueError("message type %d is not for a device" % kind)
        if f[1] != self.device_id:
            raise ValueError("message for device %s, this is %s" % (f[1], self.device_id))
        acked = j.acked
        sent = self._sent_end if self._sent_end > acked else acked
        if kind == T_ACK:
            n = f[2]
            if n > sent:
                raise ValueError("ACK %d is above the %d records sent: it would free records "
                                 "the host never saw" % (n, sent))
            if n > acked:
                j.ack(n)
        else:
            a = f[2]
            n = f[3]
            if not acked <= a or n > sent:
                raise ValueError("REFUSE %d..%d is outside the records in flight (%d..%d)"
                                 % (a, n, acked, sent))
            j.ack(n, refused=n - a)
            self._error = self.status("error", "host refused records %d..%d: %s" % (a, n - 1, f[4]))
        if self._inflight_end is not None and n > acked:
            # Covered, or covered in part: the next batch starts at the
            # journal's pointer, at once.
            self._inflight_end = None
            self._retry = _RETRY_MIN

    # -- messages out ------------------------------------------------------
    def hello(self, now_ms):
        j = self.journal
        return messages.hello(self.device_id, self.board, self.version, self.clock.boot, now_ms,
                              j.next_seq, j.acked, j.dropped, j.refused)

    def report(self, payload):
        # A STATUS to send once, right after the next HELLO (the boot
        # self-test): a bench reading the console sees them together.
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
        if self._inflight_end is not None:
            left = self._deadline - now_ms
            if left > 0 and self._inflight_end > j.acked:
                return None, left
            if left <= 0:
                self._retry = min(self._retry * 2, _RETRY_MAX)
            self._inflight_end = None
        payload, end = self._next_batch()
        if payload is None:
            return None, 1000
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
        self._estimate()
        e = self.clock.epoch(boot)
        if e is None:
            self._stuck = mark
        return e

    def _estimate(self):
        # One walk over the pending entries: the last uptime of each boot.
        last = {}
        at = None
        r = self._r
        while True:
            got, at = self.journal.read_into(self._raw, at, 32)
            if not got:
                break
            for first, count, off, n in got:
                r.i = off
                r.n = off + n
                try:
                    b, up = _entry_head(r)
                except (ValueError, IndexError):
                    continue
                last[b] = up
        clock = self.clock
        boots = list(last)
        for b in clock.known():
            if b not in last:
                boots.append(b)
        boots.sort(reverse=True)
        nxt = None
        out = []
        for b in boots:
            e = clock.epoch(b)
            if e is not None:
                nxt = e[0]
            elif nxt is not None and b in last:
                nxt = nxt - last[b] - 1
                out.append((b, nxt))
        if out:
            clock.estimate(out)

    def _next_batch(self):
        # BATCH from the head of the journal into the reused buffer:
        # (memoryview, end) or (None, None).
        j = self.journal
        while True:
            got, _ = j.read_into(self._raw, None, _MAX_TICKS)
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
        for first, count, off, n in got:
            r.i = off
            r.n = off + n
            if seq is None:
                seq = first if first > low else low
            skip = seq - first if ticks == 0 else 0
            try:
                b, up = _entry_head(r)
                if ticks == 0:
                    ep = self.clock.epoch(b)
                    if ep is None:
                        # The estimate walk reuses the entry buffer: read again.
                        if b < self.clock.boot and self._epoch(b) is not None:
                            return None
                        return None, None
                    tab = self._table_for(b)
                    if tab is None:
                        j.ack(first + count, dropped=first + count - seq)
                        return None
                    boot = b
                    base = up
                    budget = messages.MAX_MESSAGE - self._header(seq, b, ep, tab[2], up) - 2
                elif b != boot:
                    break
                for _ in range(2 * skip):
                    r.skip(1)
                dt = up - base if up > base else 0
                c, size, p0, v1 = self._fit(r, count - skip, records, o - _HEAD, dt, budget)
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
            o = self._put_tick(r, o, dt, c, size, p0, v1)
            ticks += 1
            records += c
            if c < count - skip or ticks >= _MAX_TICKS or records >= _MAX_RECORDS:
                break
        if not records:
            return None, None
        # The header and the ticks array head go right before the ticks.
        th = _hlen(ticks)
        start = _HEAD - th - self._hlen
        cbor.put_head(self._out, _HEAD - th, 0x80, ticks)
        self._omv[start:_HEAD - th] = self._hmv[:self._hlen]
        return self._omv[start:o], seq + records

    def _fit(self, r, limit, records, used, dt, budget):
        # How many pairs of this tick (from r.i) fit: (count, bytes as
        # sent, offset of the first, version-1 entry?); count -1: the first
        # record has a name not in the table.
        if limit > _MAX_RECORDS - records:
            limit = _MAX_RECORDS - records
        p0 = r.i
        v1 = r.b[p0] >> 5 == 3  # names as text: written by the version-1 firmware
        c = 0
        size = 0
        while c < limit:
            ks = r.i
            if v1:
                k = self._index.get(r.item(1))
                if k is None:
                    return (-1 if records == 0 and c == 0 else c), size, p0, v1
                kl = _hlen(k)
            else:
                r.skip(1)
                kl = r.i - ks
            vs = r.i
            r.skip(1)
            pl = kl + r.i - vs
            if used + _hlen(1 + 2 * (c + 1)) + _hlen(dt) + size + pl > budget:
                break
            size += pl
            c += 1
        return c, size, p0, v1

    def _put_tick(self, r, o, dt, c, size, p0, v1):
        # Writes [dt, pairs...] at out[o:]; returns the offset after it.
        out = self._out
        i = cbor.put_head(out, o, 0x80, 1 + 2 * c)
        i = cbor.put_head(out, i, 0, dt)
        if not v1:
            # The pairs' bytes as the journal holds them: one copy.
            self._omv[i:i + size] = r.b[p0:p0 + size]
            return i + size
        # Names become indexes; values are copied.
        r.i = p0
        for _ in range(c):
            i = cbor.put_head(out, i, 0, self._index[r.item(1)])
            vs = r.i
            r.skip(1)
            self._omv[i:i + r.i - vs] = r.b[vs:r.i]
            i += r.i - vs
        return i

    def _header(self, seq, boot, ep, tid, base):
        # BATCH keys 0-8 and the key 9 of the ticks, into the header buffer.
        hb = self._hb
        i = cbor.put_head(hb, 0, 0xA0, 10)
        i = cbor.put(hb, i, 0)
        i = cbor.put(hb, i, messages.T_BATCH)
        i = cbor.put(hb, i, 1)
        i = cbor.put(hb, i, self.device_id)
        vals = (seq, boot, 1 if ep[1] else 0, self.journal.dropped, tid, ep[0], base)
        k = 2
        for v in vals:
            i = cbor.put(hb, i, k)
            i = cbor.put(hb, i, v)
            k += 1
        i = cbor.put(hb, i, 9)
        self._hlen = i
        return i
