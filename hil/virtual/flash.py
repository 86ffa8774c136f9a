"""A virtual board's SPI flash: a file of the chip's flash size, and the record of what was written.

``RUNDIR/<name>/flash.bin`` holds the whole flash (erased bytes are 0xFF) and
survives ``sim down`` / ``sim up`` like a real chip's flash survives a power
cycle. ``RUNDIR/<name>/flash.json`` records each image a bootloader wrote
(offset, size, sha256, which path wrote it, when), so tools can tell which
firmware a virtual chip carries. The interpreter a virtual board runs never
changes: the image is stored, not executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

SECTOR = 4096
RECORD_MAX = 32                 # flash.json keeps the newest writes only


class FlashImage:
    """NOR-flash semantics over a file: erase sets 0xFF, a write can only clear bits."""

    def __init__(self, path: Path | str, size: int):
        self.path = Path(path)
        self.size = int(size)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._f = os.fdopen(fd, "r+b", buffering=0)
        have = os.fstat(fd).st_size
        if have < self.size:
            # A new (or smaller) chip comes erased.
            self._f.seek(have)
            left = self.size - have
            while left:
                n = min(left, 1 << 20)
                self._f.write(b"\xff" * n)
                left -= n

    def close(self) -> None:
        self._f.close()

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"flash access 0x{offset:x}+{n} is outside the {self.size}-byte flash")

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset``."""
        self._check(offset, n)
        self._f.seek(offset)
        return self._f.read(n)

    def erase(self, offset: int, n: int) -> None:
        """Erase every 4 KB sector that [offset, offset+n) touches."""
        if n <= 0:
            return
        start = offset - offset % SECTOR
        end = min(-(-(offset + n) // SECTOR) * SECTOR, self.size)
        self._check(start, end - start)
        self._f.seek(start)
        self._f.write(b"\xff" * (end - start))

    def write(self, offset: int, data: bytes) -> None:
        """Program ``data`` at ``offset``: bits only go from 1 to 0, as on NOR flash."""
        self._check(offset, len(data))
        old = self.read(offset, len(data))
        if old != b"\xff" * len(data):
            data = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(len(data), "little")
        self._f.seek(offset)
        self._f.write(data)

    def sha256(self, offset: int, n: int) -> str:
        """Hex sha256 of ``n`` bytes at ``offset``."""
        return hashlib.sha256(self.read(offset, n)).hexdigest()


def record_write(record: Path | str, flash: FlashImage, offset: int, size: int, via: str) -> dict:
    """Append what was just written to ``flash.json`` (atomically); return the entry."""
    record = Path(record)
    entry = {"offset": offset, "size": size, "sha256": flash.sha256(offset, size), "via": via,
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        doc = json.loads(record.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("writes"), list):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    writes = (doc.get("writes") or [])[-(RECORD_MAX - 1):] + [entry]
    doc = {"flash_size": flash.size, "flash_file": str(flash.path), "writes": writes, "last": entry}
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, record)
    return entry
