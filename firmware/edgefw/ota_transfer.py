# One image transfer (docs/protocol.md 7.5, 7.6): opened by an OFFER that
# passed its checks, closed when the image is verified, refused, stalled or
# its link goes away. Sans-I/O: chunks in (take), OTA_WINDOW out (through
# the client's window slot), the image into the target.
#
# Rules it keeps:
# - two 4096-byte blocks (made by the client when the OFFER came, before
#   its checks cut the heap up; released when the transfer closes), the
#   one at ack first, swapped when it is written; each has a
#   4-byte guard in front, so a BLE write (u32be offset | data) is copied
#   whole, its 4 header bytes landing on bytes already held (saved and put
#   back) or on the guard: no allocation per chunk. The one chunk of a
#   block that straddles two is copied byte by byte;
# - a chunk is taken only at the expected offset; a block is written, hashed
#   and acknowledged when whole (one OTA_WINDOW per 4 KB, none per chunk);
# - a gap asks for a rewind at most once per expected offset or second; a
#   rewind expects the bytes from ack again (the host cuts its chunks anew
#   from there);
# - a block not complete within 15 s of its grant: a rewind, and after 3
#   with no block completed the transfer closes `stalled`, keeping what it
#   holds;
# - ota/dl.json is rewritten when the transfer opens and every 64 KB, after
#   the target made the bytes durable.
from hashlib import sha256

from edgefw import atomic
from edgefw.cbor_put import put, put_head
from edgefw.messages import T_OTA_WINDOW
from edgefw.ota_client import path
from edgefw.ota_files import save

from micropython import const

_BLOCK = const(4096)
_GRANT = const(8192)
_BLOCK_MS = const(15000)
_RETRIES = const(3)
_REWIND_MS = const(1000)
_SAVE_EVERY = const(65536)
def _copy(blk, at, src, skip):
    # src into the block's buffer from at; the skip bytes its header
    # overwrites (held bytes or the guard) are put back. Ints on the stack:
    # no allocation.
    buf = blk[0]
    if skip:
        s0 = buf[at]
        s1 = buf[at + 1]
        s2 = buf[at + 2]
        s3 = buf[at + 3]
        blk[2][at:at + len(src)] = src
        buf[at] = s0
        buf[at + 1] = s1
        buf[at + 2] = s2
        buf[at + 3] = s3
    else:
        blk[2][at:at + len(src)] = src


def forget(root):
    atomic.remove(path(root, "ota/dl.json"))


class Transfer:
    def __init__(self, c, blocks, link, target, m, digest_hex, resume, now_ms):
        self.c = c
        self.link = link
        self.t = target
        self.component = m["component"]
        self.seq = m["sequence"]
        self.size = m["size"]
        self.digest = m["digest"]
        self.digest_hex = digest_hex
        self.version = m["version"]
        self.a, self.b = blocks  # the block at ack, the next one (the client's)
        self.h = sha256()
        self.dup = self.gaps = self.past = 0  # chunks ignored, by rule
        self.retries = 0
        self.wbuf = bytearray(128)  # an OTA_WINDOW: a device id is at most 64 characters
        self.rewind = False
        self.rw_at = -1
        self.rw_ms = 0
        held = target.begin(resume)
        # The running SHA-256 cannot be saved: the bytes held are hashed again.
        v = self.a[1]
        for off in range(0, held, _BLOCK):
            n = target.read_into(off, v)
            self.h.update(v if n == _BLOCK else v[:n])
        self.ack = self.next = self.saved = held
        self.save()
        c.state(self.component, self.seq, "downloading", version=self.version, held=held, size=self.size)
        if held >= self.size:
            self.finish(now_ms)
        else:
            self.grant(now_ms, resume)

    def save(self):
        save(self.c.root, "dl.json", {"component": self.component, "seq": self.seq,
                                      "digest": self.digest_hex, "size": self.size, "held": self.ack})
        self.saved = self.ack

    def grant(self, now_ms, rewind):
        # OTA_WINDOW {ack, limit}; the block's 15 s start now.
        self.limit = min(self.size, self.ack + _GRANT)
        self.deadline = now_ms + _BLOCK_MS
        self.window(rewind)

    def window(self, rewind):
        # A window is due on the link; built when it goes out (message()),
        # so a rewind asked for is not lost to a block written before.
        c = self.c
        self.rewind = self.rewind or rewind
        c.window = self
        c.window_link = self.link

    def rewind_from_ack(self, now_ms):
        # The host sends again from ack, its chunks cut anew from there: the
        # bytes past ack held in the blocks are taken again, not matched.
        self.next = self.ack
        self.rw_at = self.ack
        self.rw_ms = now_ms
        self.window(True)

    def message(self):
        # OTA_WINDOW, written in place (one per 4 KB: messages_write is not
        # loaded for it), deterministic as messages.ota_window writes it.
        rewind = self.rewind
        self.rewind = False
        b = self.wbuf
        i = put_head(b, 0, 0xA0, 6 if rewind else 5)
        i = put(b, put(b, i, 0), T_OTA_WINDOW)
        i = put(b, put(b, i, 1), self.c.device_id)
        i = put(b, put(b, i, 2), self.seq)
        i = put(b, put(b, i, 3), self.ack)
        i = put(b, put(b, i, 4), self.limit)
        if rewind:
            i = put(b, put(b, i, 5), True)
        return memoryview(b)[:i]

    def again(self, link, now_ms):
        # The same manifest offered again: the host waited 30 s for news.
        self.link = link
        self.grant(now_ms, True)

    # -- chunks ------------------------------------------------------------
    def take(self, offset, src, skip, now_ms):
        # src[skip:] holds the bytes at offset.
        n = len(src)
        end = offset + n - skip
        if end > self.size:
            self.refuse("size-mismatch")  # the endless-data attack
            return
        if end > self.limit:
            self.past += 1  # the host broke the window
            return
        exp = self.next
        if offset != exp:
            if offset < exp:
                self.dup += 1
            else:
                self.gaps += 1
                if self.rw_at != exp or now_ms - self.rw_ms >= _REWIND_MS:
                    self.rewind_from_ack(now_ms)
            return
        d = offset - self.ack  # where src[skip] goes, from the first block's start
        e = d + n - skip
        if e <= _BLOCK:
            _copy(self.a, 4 + d - skip, src, skip)
        elif d >= _BLOCK:
            _copy(self.b, 4 + d - _BLOCK - skip, src, skip)
        else:
            a = self.a[0]
            b = self.b[0]
            for i in range(skip, n):
                if d < _BLOCK:
                    a[4 + d] = src[i]
                else:
                    b[4 + d - _BLOCK] = src[i]
                d += 1
        self.next = end
        if end - self.ack >= _BLOCK or end == self.size:
            self.block(now_ms)

    def block(self, now_ms):
        # The first block is whole: to flash, into the hash, acknowledged.
        a = self.ack
        k = self.size - a
        v = self.a[1] if k >= _BLOCK else self.a[1][:k]
        if k > _BLOCK:
            k = _BLOCK
        try:
            self.t.write(a, v)
            if a + k - self.saved >= _SAVE_EVERY:
                self.t.flush()
                self.ack = a + k
                self.save()
        except OSError as e:
            self.fail("write failed: %r" % e)
            return
        self.h.update(v)
        self.ack = a + k
        self.a, self.b = self.b, self.a  # the next block is now first
        self.retries = 0
        self.rw_at = -1
        if self.ack == self.size:
            self.finish(now_ms)
        else:
            self.grant(now_ms, False)

    def tick(self, now_ms):
        # From the client's poll: the block's 15 s.
        if now_ms < self.deadline:
            return
        self.retries += 1
        if self.retries > _RETRIES:
            self.pause(None)
            return
        self.deadline = now_ms + _BLOCK_MS
        self.rewind_from_ack(now_ms)

    # -- the end -----------------------------------------------------------
    def release(self):
        c = self.c
        if c.xfer is self:
            c.xfer = None
        self.a = self.b = None

    def pause(self, why="paused"):
        # Closed, what is held kept for a resume: `stalled` when the host
        # stopped sending (why None), silently on a link closed.
        c = self.c
        try:
            self.t.flush()
            self.save()
            self.t.close()
        except OSError:
            pass
        if why is None:
            c.state(self.component, self.seq, "stalled", version=self.version, held=self.ack,
                    size=self.size, reason="no block in %d s, %d times" % (_BLOCK_MS // 1000, _RETRIES + 1))
            c.why = "resume"
        self.release()

    def _drop(self):
        self.release()
        try:
            self.t.discard()
        except OSError:
            pass
        forget(self.c.root)

    def refuse(self, check):
        # The image is refused and what was held deleted.
        self._drop()
        self.c.state(self.component, self.seq, "refused", version=self.version, size=self.size, check=check)

    def fail(self, reason):
        self._drop()
        self.c.state(self.component, self.seq, "failed", version=self.version, reason=reason)

    def finish(self, now_ms):
        c = self.c
        comp = self.component
        seq = self.seq
        try:
            self.t.flush()
            self.save()
        except OSError as e:
            self.fail("flush failed: %r" % e)
            return
        if self.h.digest() != self.digest:
            self.refuse("digest-mismatch")
            return
        self.limit = self.size
        self.window(False)
        self.release()
        c.state(comp, seq, "verified", version=self.version, size=self.size)
        t = self.t
        try:
            t.install(seq, self.digest_hex, self.version)
        except ValueError as e:
            self._drop()
            c.state(comp, seq, "refused", version=self.version, check=e.args[0] if e.args else "bad-bundle")
            return
        except OSError as e:
            self.fail("install failed: %r" % e)
            return
        forget(c.root)
        c.state(comp, seq, "installed", version=self.version)
        c.waiting = (comp, seq, self.digest_hex, self.version, t, "")
        c.try_apply(now_ms)
