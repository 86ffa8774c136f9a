# Firmware images (docs/protocol.md 7.8): the inactive OTA partition of an
# ESP32-family board through MicroPython's esp32.Partition, with the methods
# of slots.AgentTarget. Chunks go straight into the partition at their
# offset (a 4096-byte sector is erased when the image enters it, then
# written piece by piece with writeblocks' offset form, which does not
# erase); the bytes held survive a reboot in ota/fw, rewritten at each flush,
# and a resume starts again at the sector they are in. The switch is set_boot(): the
# bootloader boots the image once as pending verification and goes back to
# the previous one unless slots.confirm() marks it valid first.
from micropython import const

from edgefw import atomic, slots

_BLOCK = const(4096)


class FirmwareTarget:
    component = "firmware"

    @staticmethod
    def open(esp32, root):
        # None when the port has no esp32.Partition or no OTA partition.
        try:
            run = esp32.Partition(esp32.Partition.RUNNING)
            return FirmwareTarget(esp32, root, run, run.get_next_update())
        except (AttributeError, OSError, ValueError):
            return None

    def __init__(self, esp32, root, run, part):
        self.root = root
        self.run = run
        self.part = part
        self._held = slots._p(root, "ota/fw")
        self._inst = slots._p(root, "ota/fwi")
        self._n = 0

    def capacity(self):
        return self.part.ioctl(4, 0) * self.part.ioctl(5, 0)

    def begin(self, resume):
        n = 0
        if resume:
            raw = atomic.read(self._held)
            n = int(raw) if raw else 0
            n -= n % _BLOCK  # that sector is erased again before it is written
        else:
            self.discard()
        self._n = n
        return n

    def write(self, offset, mv):
        # mv at offset, the next byte expected; split at sector starts,
        # each erased first (flash bits are only cleared by an erase).
        if offset != self._n:
            raise ValueError("offset")
        part = self.part
        i = 0
        k = len(mv)
        while i < k:
            at = offset + i
            sec = at // _BLOCK
            inner = at % _BLOCK
            if inner == 0:
                part.ioctl(6, sec)
            n = min(k - i, _BLOCK - inner)
            part.writeblocks(sec, mv[i:i + n] if n != k else mv, inner)
            i += n
        self._n = offset + k

    def flush(self):
        slots._mkdir(self.root)
        atomic.write(self._held, str(self._n).encode())

    def read_into(self, offset, buf):
        self.part.readblocks(offset // _BLOCK, buf, offset % _BLOCK)
        return len(buf)

    def close(self):
        pass

    def discard(self):
        atomic.remove(self._held)
        atomic.remove(self._inst)

    def _label(self):
        return self.part.info()[4]

    def install(self, seq, digest_hex, version):
        # The image is in place already: the marker says which one.
        slots._mkdir(self.root)
        atomic.write(self._inst, self._mark(seq, digest_hex))
        atomic.remove(self._held)

    def _mark(self, seq, digest_hex):
        return ("%d %s %s" % (seq, digest_hex, self._label())).encode()

    def installed(self, seq, digest_hex):
        return atomic.read(self._inst) == self._mark(seq, digest_hex)

    def apply(self, seq, digest_hex, version):
        if not self.installed(seq, digest_hex):
            raise OSError("nothing installed for sequence %d" % seq)
        d = slots.read(self.root)
        if "trial" in d:
            raise OSError("on trial: confirm or roll back first")
        d["trial"] = 0
        d["pending"] = {"component": "firmware", "seq": seq, "digest": digest_hex,
                        "version": version, "part": self._label(), "from": self.run.info()[4]}
        # The pointer first: a cut before set_boot() leaves a trial that
        # stage 0 ends at the next boot (the old image still runs).
        slots._write(self.root, d)
        try:
            self.part.set_boot()
        except OSError:
            # The bootloader's image check refused it: no trial after all.
            del d["trial"], d["pending"]
            slots._write(self.root, d)
            raise
        atomic.remove(self._inst)
