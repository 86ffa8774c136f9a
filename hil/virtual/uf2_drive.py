"""The RP2040's BOOTSEL mass-storage drive, for a virtual Pico: a folder that takes a .uf2.

While a virtual rp2 board is in BOOTSEL mode, ``RUNDIR/<name>/RPI-RP2/``
exists with ``INFO_UF2.TXT`` and ``INDEX.HTM`` as on a real RP2040's drive.
:meth:`Uf2Drive.poll` (called periodically by the board) picks up a ``.uf2``
file once its size has stopped changing, and :func:`parse_uf2` checks it the
way the boot ROM does before anything touches flash:

* every 512-byte block has the three magic numbers (0x0A324655, 0x9E5D5157
  at the start, 0x0AB16F30 at the end);
* a block with the family-id flag (0x2000) names the RP2040 (0xE48BFF56);
* payloads are 256 bytes at 256-aligned addresses inside
  0x10000000 .. 0x10000000 + flash size (blocks flagged "not main flash",
  0x1), the RP2040 boot ROM's rule;
* block numbers are 0 .. n-1, each once, all blocks agreeing on n, and the
  file holds exactly n blocks (a truncated copy is refused).

A file that fails is not written (a real RP2040 ignores it; the drive stays).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FAMILY_ID = 0x00002000
RP2040_FAMILY = 0xE48BFF56
FLASH_BASE = 0x10000000
BLOCK = 512
PAYLOAD = 256
DRIVE_NAME = "RPI-RP2"

INFO_UF2 = ("UF2 Bootloader v3.0\r\n"
            "Model: Raspberry Pi RP2\r\n"
            "Board-ID: RPI-RP2\r\n")
INDEX_HTM = ('<html><head><meta http-equiv="refresh" content="0;URL=\'https://raspberrypi.com/device/RP2?version=E0C9125B0D9B\'"/></head>'
             "<body>Redirecting to <a href='https://raspberrypi.com/device/RP2?version=E0C9125B0D9B'>"
             "raspberrypi.com</a></body></html>\r\n")


class Uf2Error(ValueError):
    """A .uf2 file the RP2040 boot ROM would not write."""


def parse_uf2(data: bytes, flash_size: int, family: int = RP2040_FAMILY) -> list[tuple[int, bytes]]:
    """The (flash offset, payload) pairs of a valid UF2 image, in block order; raise :class:`Uf2Error`."""
    if not data:
        raise Uf2Error("the file is empty")
    if len(data) % BLOCK:
        raise Uf2Error(f"the file is {len(data)} bytes, not a whole number of {BLOCK}-byte UF2 blocks "
                       "(truncated copy?)")
    total = len(data) // BLOCK
    seen: set[int] = set()
    count = None
    out = []
    for k in range(total):
        blk = data[k * BLOCK:(k + 1) * BLOCK]
        m0, m1, flags, addr, size, no, n, fam = struct.unpack_from("<8I", blk)
        (mend,) = struct.unpack_from("<I", blk, BLOCK - 4)
        if m0 != MAGIC_START0 or m1 != MAGIC_START1 or mend != MAGIC_END:
            raise Uf2Error(f"block {k} has bad magic numbers (not a UF2 file)")
        if count is None:
            count = n
        if n != count:
            raise Uf2Error(f"block {k} says the file has {n} blocks, block 0 said {count}")
        if no >= n or no in seen:
            raise Uf2Error(f"block {k} has block number {no} (repeated or not below {n})")
        seen.add(no)
        if flags & FLAG_FAMILY_ID and fam != family:
            raise Uf2Error(f"block {k} is for family 0x{fam:08x}, not the RP2040 (0x{family:08x})")
        if flags & FLAG_NOT_MAIN_FLASH:
            continue
        if size != PAYLOAD or addr % PAYLOAD:
            raise Uf2Error(f"block {k} carries {size} bytes at 0x{addr:08x}; the RP2040 takes "
                           f"{PAYLOAD}-byte payloads at {PAYLOAD}-byte aligned addresses")
        if addr < FLASH_BASE or addr + size > FLASH_BASE + flash_size:
            raise Uf2Error(f"block {k} targets 0x{addr:08x}, outside the flash "
                           f"0x{FLASH_BASE:08x}..0x{FLASH_BASE + flash_size:08x}")
        out.append((addr - FLASH_BASE, bytes(blk[32:32 + size])))
    if count != total:
        raise Uf2Error(f"the file holds {total} blocks but its blocks say {count} (truncated copy?)")
    if not out:
        raise Uf2Error("no block of the file is for the main flash")
    return out


def to_uf2(image: bytes, base: int = FLASH_BASE, family: int = RP2040_FAMILY) -> bytes:
    """A flash image as a UF2 file :func:`parse_uf2` (and the boot ROM) takes:
    256-byte payloads at ``base``, ``base + 256``, ..., the last one padded
    with 0xFF (erased flash), every block tagged with ``family``."""
    if not image:
        raise Uf2Error("the image is empty: nothing to put in a UF2 file")
    n = (len(image) + PAYLOAD - 1) // PAYLOAD
    out = bytearray()
    for no in range(n):
        chunk = image[no * PAYLOAD:(no + 1) * PAYLOAD].ljust(PAYLOAD, b"\xff")
        block = struct.pack("<8I", MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID,
                            base + no * PAYLOAD, PAYLOAD, no, n, family) + chunk
        out += block.ljust(BLOCK - 4, b"\x00") + struct.pack("<I", MAGIC_END)
    return bytes(out)


class Uf2Drive:
    """The BOOTSEL drive folder of one board: appears, takes one good .uf2, disappears."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._sizes: dict[str, tuple[int, int]] = {}

    def create(self) -> None:
        """Make the drive appear (a fresh folder with the boot ROM's files)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        (self.path / "INFO_UF2.TXT").write_text(INFO_UF2)
        (self.path / "INDEX.HTM").write_text(INDEX_HTM)
        self._sizes.clear()

    def remove(self) -> None:
        """Make the drive disappear (the board rebooted)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._sizes.clear()

    def poll(self) -> list[tuple[str, bytes]]:
        """The .uf2 files whose size did not change since the last poll (name, content); each is removed."""
        ready: list[tuple[str, bytes]] = []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return ready
        names = set()
        for e in entries:
            if not e.name.lower().endswith(".uf2") or not e.is_file():
                continue
            names.add(e.name)
            st = e.stat()
            key = (st.st_size, st.st_mtime_ns)
            if self._sizes.get(e.name) != key:
                self._sizes[e.name] = key       # still being copied, or new: look again next time
                continue
            try:
                data = Path(e.path).read_bytes()
                os.unlink(e.path)
            except OSError:
                continue
            del self._sizes[e.name]
            ready.append((e.name, data))
        for gone in set(self._sizes) - names:
            del self._sizes[gone]
        return ready
