# One image transfer (docs/protocol.md 7.5, 7.6): opened by an OFFER that
# passed its checks, closed when the image is verified, refused, stalled or
# its link goes away. Sans-I/O: chunks in (take), OTA_WINDOW out (through
# the client's window slot), the image into the target.
#
# Rules it keeps:
# - no block in RAM: a chunk that covers the offset expected next is
#   written to the target and hashed at once, from that offset (section
#   7.5); the transfer itself holds a 128-byte OTA_WINDOW buffer, so it
#   needs no hole larger than the chunk the link already holds;
# - one OTA_WINDOW each time the bytes taken pass a multiple of 4096, none
#   per chunk;
# - a gap asks for a rewind at most once per expected offset or second; the
#   host then sends again from what the device holds;
# - 4096 bytes not taken within 15 s of a grant: a rewind, and after 3 with
#   none taken the transfer closes `stalled`, keeping what it holds;
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
_REHASH = const(512)


def forget(root):
    atomic.remove(path(root, "ota/dl.json"))


class Transfer:
    def __init__(self, c, link, target, m, digest_hex, resume, now_ms):
        self.c = c
        self.link = link
        self.t = target
        self.component = m["component"]
        self.seq = m["sequence"]
        self.size = m["size"]
        self.digest = m["digest"]
        self.digest_hex = digest_hex
        self.version = m["version"]
        self.manifest = None  # its bytes (the client's), to know the same offer again
        self.h = sha256()
        self.dup = self.gaps = self.past = 0  # chunks ignored, by rule
        self.retries = 0
        self.wbuf = bytearray(128)  # an OTA_WINDOW: a device id is at most 64 characters
        self.rewind = False
        self.rw_at = -1
        self.rw_ms = 0
        held = target.begin(resume)
        if held:
            # The running SHA-256 cannot be saved: the bytes held are hashed
            # again, through a small buffer dropped after.
            v = memoryview(bytearray(_REHASH))
            for off in range(0, held, _REHASH):
                k = min(_REHASH, held - off)
                if target.read_into(off, v[:k]) != k:
                    raise OSError(5)
                self.h.update(v[:k])
            v = None
        self.ack = self.saved = held
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
        # OTA_WINDOW {ack, limit}; the next window when the bytes taken pass
        # the next multiple of 4096, within 15 s from now.
        self.limit = min(self.size, self.ack + _GRANT)
        self.mark = min(self.size, (self.ack // _BLOCK + 1) * _BLOCK)
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
        # The host sends again from ack: every byte before it is taken.
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
        # src[skip:] holds the bytes at offset. Taken from the offset
        # expected when the chunk covers it: straight to the target and the
        # hash (a view, no copy of the bytes).
        end = offset + len(src) - skip
        if end > self.size:
            self.refuse("size-mismatch")  # the endless-data attack
            return
        if end > self.limit:
            self.past += 1  # the host broke the window
            return
        exp = self.ack
        if offset > exp:
            self.gaps += 1
            if self.rw_at != exp or now_ms - self.rw_ms >= _REWIND_MS:
                self.rewind_from_ack(now_ms)
            return
        if end <= exp:
            self.dup += 1
            return
        skip += exp - offset
        v = memoryview(src)[skip:] if skip else src
        try:
            self.t.write(exp, v)
            self.h.update(v)
            if end - self.saved >= _SAVE_EVERY:
                self.t.flush()
                self.ack = end
                self.save()
        except OSError as e:
            self.fail("write failed: %r" % e)
            return
        self.ack = end
        self.rw_at = -1
        if end == self.size:
            self.finish(now_ms)
        elif end >= self.mark:
            self.retries = 0
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
