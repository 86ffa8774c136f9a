"""Helpers for the tests of agent slots (docs/protocol.md 7.7): agent bundles
of small stand-in agents whose every module states its version, a board
folder, and the device code that installs, applies and boots them under
MicroPython (the firmware compiled to .mpy, the esp32 heap)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from tests.firmware.compiled import compiled_firmware
from tests.mpy import run

MODULES = 6


def bundle(files: list[tuple[str, bytes]], *, magic: bytes = b"EAB1", end: bytes = b"\x00") -> bytes:
    """An agent bundle (7.1) of ``files`` in order, names taken as given."""
    out = bytearray(magic)
    for name, data in files:
        raw = name.encode()
        out += bytes([len(raw)]) + raw + struct.pack(">I", len(data)) + data
    return bytes(out + end)


def agent(version: str, *, boot: str | None = None, pad: int = 1500) -> list[tuple[str, bytes]]:
    """A stand-in agent: ``edgefw/__init__`` and MODULES modules each stating
    ``version``; its boot.main imports them all and prints ``AGENT v v v ...``.
    ``boot`` replaces the body of main (a crash, a bad return)."""
    body = boot or ("    import edgefw\n"
                    + "".join(f"    import edgefw.m{i}\n" for i in range(MODULES))
                    + "    print('AGENT', edgefw.VERSION, "
                    + ", ".join(f"edgefw.m{i}.V" for i in range(MODULES)) + ")\n"
                    + "    return 'ok'\n")
    files = [("edgefw/__init__.py", f'VERSION = "{version}"\n'.encode()),
             ("edgefw/boot.py", ("def main(port=None, trial=False):\n" + body).encode())]
    filler = "#" + "x" * 70 + "\n"
    for i in range(MODULES):
        files.append((f"edgefw/m{i}.py", (f'V = "{version}"\n' + filler * (pad // len(filler))).encode()))
    return files


def board(tmp: Path) -> Path:
    """A board folder with the stand-in agent "1" as its factory slot ""."""
    fs = tmp / "fs"
    for name, data in agent("1", pad=100):
        (fs / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / name).write_bytes(data)
    return fs


def pointer_bytes(d: dict) -> bytes:
    data = json.dumps(d).encode()
    return data + struct.pack(">I", zlib.crc32(data))


def write_pointer(fs: Path, d: dict) -> None:
    (fs / "ota").mkdir(parents=True, exist_ok=True)
    (fs / "ota" / "slot").write_bytes(pointer_bytes(d))


def read_pointer(fs: Path) -> dict | None:
    """The pointer as a host parses it (edgefw.atomic's format); None when absent.
    Fails the test when it is present but torn."""
    for p in (fs / "ota" / "slot", fs / "ota" / "slot.new"):
        if p.exists():
            raw = p.read_bytes()
            if len(raw) >= 4 and zlib.crc32(raw[:-4]) == struct.unpack(">I", raw[-4:])[0]:
                return json.loads(raw[:-4])
    assert not (fs / "ota" / "slot").exists(), "ota/slot is torn and no whole ota/slot.new"
    return None


def device(fs: Path, code: str, *, check: bool = True, heap: str = "esp32"):
    """Device code run in the board folder with the compiled firmware first on sys.path."""
    pre = f"import sys\nsys.path[:] = [{str(compiled_firmware())!r}, '', '.frozen']\n"
    return run(pre + code, heap=heap, cwd=fs, check=check)


# Feeds a bundle file through AgentTarget as the client does: 4096-byte
# blocks, flushed; then installs it (and applies it with APPLY).
FEED = """
from edgefw import slots
t = slots.AgentTarget("")
t.begin(False)
buf = bytearray(4096)
f = open(SRC, "rb")
off = 0
while True:
    n = f.readinto(buf)
    if not n:
        break
    t.write(off, memoryview(buf)[:n])
    off += n
f.close()
t.flush()
t.close()
"""


def install(fs: Path, data: bytes, seq: int, *, apply: bool = True, check: bool = True):
    src = fs.parent / f"bundle-{seq}.bin"
    src.write_bytes(data)
    code = (f"SRC = {str(src)!r}\n" + FEED
            + f"try:\n    t.install({seq}, 'd{seq}', 'v{seq}')\nexcept ValueError as e:\n"
            + "    print('REFUSED', e.args[0])\n    raise SystemExit(2)\n"
            + (f"t.apply({seq}, 'd{seq}', 'v{seq}')\n" if apply else ""))
    return device(fs, code, check=check)


# One boot as a board does it: stage 0 picks the slot (factory "" is the
# folder's own edgefw/, ahead of the compiled firmware on sys.path).
BOOT = """
import sys
sys.path[:] = ['', {compiled!r}, '.frozen']
import stage0
print('RESULT', stage0.boot())
"""


def boot(fs: Path):
    """(exit code, versions the agent's modules stated or None, stdout)."""
    proc = run(BOOT.format(compiled=str(compiled_firmware())), heap="esp32", cwd=fs, check=False)
    out = proc.stdout.decode(errors="replace")
    versions = None
    for line in out.splitlines():
        if line.startswith("AGENT "):
            versions = line.split()[1:]
    return proc.returncode, versions, out + proc.stderr.decode(errors="replace")
