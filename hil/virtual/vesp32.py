# MicroPython (Unix port) module, not host code: the `esp32` module of a
# virtual ESP-family board, for its OTA partitions (docs/protocol.md 7.8).
# The runner installs it as sys.modules["esp32"] when the supervisor gives
# the board a partition file (EDGE_ESP32_OTA, in the board's home, outside
# its filesystem folder), opened before that folder is mounted at "/".
#
# The file: a 4096-byte otadata record, then ota_0 and ota_1 of
# EDGE_ESP32_OTA_SIZE bytes each (0x180000 for a 4 MB ESP32: MicroPython's
# ports/esp32/partitions-4MiB-ota.csv puts ota_0 at 0x10000 and ota_1 at
# 0x190000, 0x180000 each). The record is "<boot> <state> <prev> <run>"
# (partition indexes; state new | pending | valid | aborted), not ESP-IDF's
# otadata bytes.
#
# The bootloader rule of ESP-IDF with app rollback enabled runs at each start
# that runs main.py (a virtual board has no machine.reset(): its soft reset
# stands for one): an image set_boot() chose boots once as pending
# verification; started again while still pending, the bootloader marks it
# aborted and boots the previous image; mark_app_valid_cancel_rollback()
# makes it valid. set_boot() refuses an image without the ESP image magic
# (0xE9) in its first byte, as esp_ota_set_boot_partition() refuses one that
# does not verify (the stand-in checks nothing more of the image).
#
# What it exercises: the agent's writes, read-back, switch, confirm and the
# bootloader's rollback, through the calls MicroPython's esp32.Partition
# offers. What it does not: it cannot run the image it boots (the
# interpreter stays the Unix port: "running" is only which partition the
# record says), nor a real image check, secure boot, or flash timing.
_BLOCK = 4096
_f = None
_size = 0
_rec = [0, "valid", 0, 0]   # boot, state, prev, run
_old = bytearray(64)        # what a write without erase meets, 64 bytes at a time
_oldv = memoryview(_old)
_FF = b"\xff" * 64


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id):
        if id == Partition.RUNNING:
            id = _rec[3]
        elif id == Partition.BOOT:
            id = _rec[0]
        elif id in ("ota_0", "ota_1"):
            id = int(id[-1])
        else:
            raise ValueError("no such partition")
        self.i = id

    @staticmethod
    def find(type=0, subtype=0xFF, label=None):
        if type != Partition.TYPE_APP:
            return []
        return [Partition(n) for n in ("ota_0", "ota_1") if label in (None, n)]

    def info(self):
        return (0, 0x10 + self.i, 0x10000 + self.i * _size, _size, "ota_%d" % self.i, False)

    def _at(self, block, offset, n):
        a = block * _BLOCK + offset
        if a < 0 or a + n > _size:
            raise OSError(22)  # EINVAL, as esp_partition_read/write past the end
        _f.seek(_BLOCK + self.i * _size + a)

    def readblocks(self, block, buf, offset=0):
        self._at(block, offset, len(buf))
        _f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Erase then write: the erase works on whole sectors.
            if len(buf) % _BLOCK:
                raise OSError(22)
            self._at(block, 0, len(buf))
            _f.write(buf)
        else:
            # No erase: as NOR flash, a write only clears bits, so bytes
            # written over without an erase come out as the AND of both.
            self._at(block, offset, len(buf))
            at = block * _BLOCK + offset
            mv = memoryview(buf)
            for i in range(0, len(buf), 64):
                n = min(64, len(buf) - i)
                self._at(0, at + i, n)
                _f.readinto(_oldv[:n])
                for j in range(n):
                    _old[j] &= mv[i + j]
                self._at(0, at + i, n)
                _f.write(_oldv[:n])
        _f.flush()

    def ioctl(self, op, arg):
        if op == 4:
            return _size // _BLOCK
        if op == 5:
            return _BLOCK
        if op == 6:
            # Erase one sector: every byte back to 0xFF.
            self._at(arg, 0, _BLOCK)
            for _ in range(_BLOCK // 64):
                _f.write(_FF)
            return 0
        return 0

    def get_next_update(self):
        return Partition("ota_%d" % (1 - _rec[3]))

    def set_boot(self):
        b = bytearray(1)
        self.readblocks(0, b)
        if b[0] != 0xE9:
            raise OSError(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED
        _rec[:] = [self.i, "new", _rec[3], _rec[3]]
        _save()

    @staticmethod
    def mark_app_valid_cancel_rollback():
        if _rec[1] == "pending" and _rec[0] == _rec[3]:
            _rec[1] = "valid"
            _save()


def _save():
    _f.seek(0)
    _f.write(("%d %s %d %d" % tuple(_rec)).encode() + b" " * 16)
    _f.flush()


def start(path, size, boot):
    # Opens the partition file (made on first use) and, when the chip
    # boots, applies the bootloader's rule.
    global _f, _size
    _size = size
    try:
        _f = open(path, "r+b")
    except OSError:
        _f = open(path, "w+b")
        _f.seek(_BLOCK + 2 * size - 1)
        _f.write(b"\xff")
        _save()
    _f.seek(0)
    words = _f.read(64).split()
    _rec[:] = [int(words[0]), words[1].decode(), int(words[2]), int(words[3])]
    if boot:
        if _rec[1] == "new":
            _rec[1] = "pending"
            _rec[3] = _rec[0]
        elif _rec[1] == "pending":
            _rec[1] = "aborted"
            _rec[0] = _rec[3] = _rec[2]
        else:
            _rec[3] = _rec[0]
        _save()

