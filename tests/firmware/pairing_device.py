"""A device's pairing core in its own micropython process, for tests.

:class:`Device` runs ``tests/firmware/pairing_driver.py`` under the real
MicroPython (with a board's heap) in a folder that is the board's flash, and
talks to it one line at a time; a new :class:`Device` on the same folder is
a reboot. :func:`provision` writes an identity the way ``edgefw.atomic``
does (data, then its CRC-32), so a folder can be made without a board.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

from tests.firmware.compiled import prelude as compiled_prelude
from tests.mpy import FIRMWARE, board_heap, micropython_exe

DRIVER = Path(__file__).with_name("pairing_driver.py")
DEVICE_ID = "esp32-3f9a0c12b7d4"
CODE = "48213907"


def atomic_bytes(data: bytes) -> bytes:
    return data + struct.pack(">I", zlib.crc32(data))


def clamp(key: bytes) -> bytes:
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def provision(folder: Path, key: bytes = bytes(range(1, 33)), code: str = CODE) -> None:
    (folder / "identity").mkdir(parents=True, exist_ok=True)
    (folder / "identity" / "key").write_bytes(atomic_bytes(clamp(key)))
    (folder / "identity" / "setup").write_bytes(atomic_bytes(code.encode()))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under the folder and its bytes: what a test compares for "nothing persisted"."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Device:
    """One boot of a device: its pairing core, driven by lines."""

    def __init__(self, folder: Path, *, device_id: str = DEVICE_ID, uptime_ms: int = 0,
                 heap: int | str = "esp32", randoms: list[bytes] | None = None, compiled: bool = True):
        heap_bytes = board_heap(heap) if isinstance(heap, str) else heap
        # As `edge flash` deploys it (.mpy): compiling from source costs heap a board never spends.
        prelude = compiled_prelude() if compiled else f"import sys\nsys.path.insert(0, {str(FIRMWARE)!r})\n"
        self.proc = subprocess.Popen(
            [micropython_exe(), "-X", f"heapsize={heap_bytes}", "-c", prelude + DRIVER.read_text()],
            cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"MICROPYPATH": ".frozen", "PATH": "/usr/bin:/bin"})
        for r in randoms or []:
            self.cmd(f"rand {r.hex()}")
        assert self.cmd(f"{'boot' if randoms is not None else 'bootrandom'} {device_id} {uptime_ms}") == "ok"

    def cmd(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().decode().strip()
        if not out:
            self.proc.kill()
            raise AssertionError(f"device died on {line!r}: {self.proc.stderr.read().decode()}"
                                 if self.proc.stderr else line)
        return out

    def rand(self, value: bytes) -> None:
        assert self.cmd(f"rand {value.hex()}") == "ok"

    def control(self, payload: bytes, now_ms: int = 0) -> tuple[bytes | None, bool]:
        reply, opened = self.cmd(f"ctl {payload.hex() or '-'} {now_ms}").split()
        return (None if reply == "-" else bytes.fromhex(reply)), opened == "1"

    def seal(self, msg: bytes) -> bytes:
        return bytes.fromhex(self.cmd(f"seal {msg.hex()}"))

    def open(self, sealed: bytes) -> bytes | None:
        out = self.cmd(f"open {sealed.hex() or '00'}")
        return None if out == "-" else bytes.fromhex(out)

    def sealed(self, msg: bytes) -> bytes | None:
        out = self.cmd(f"sealed {msg.hex()}")
        return None if out == "-" else bytes.fromhex(out)

    def state(self, now_ms: int) -> int:
        return int(self.cmd(f"state {now_ms}"))

    def disconnected(self) -> None:
        assert self.cmd("disc") == "ok"

    def info(self) -> dict[str, int]:
        names = ("attempts", "bad_messages", "bad_sealed", "proven", "paired", "bad_state")
        return dict(zip(names, map(int, self.cmd("info").split())))

    def modules(self) -> set[str]:
        return set(self.cmd("mods").split())

    def heap(self) -> tuple[int, int]:
        """(live heap now, largest live heap seen inside an exchange), after gc.collect."""
        a, b = self.cmd("heap").split()
        return int(a), int(b)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
