"""The agent frozen into a virtual board's "flash": a ROMFS image of its ``edgefw`` package.

A real board runs the agent from a custom MicroPython image with the agent
frozen in (``firmware/manifest.py``, docs/firmware-build.md): its bytecode
stays in flash and costs no heap. A virtual board stands for that board: at
every start that runs main.py its supervisor packs the folder's ``edgefw/*.mpy`` into a ROMFS
image (MicroPython's read-only filesystem whose ``.mpy`` files run in place),
the runner mounts it at ``/rom`` ahead of the folder on ``sys.path``, and the
interpreter's heap is the board file's budget *plus* what a frozen build keeps
in flash and the Unix port keeps in its heap: the image (the heap's first
allocation) and the interned names (qstrs) of the frozen modules, measured
once per image by importing them all. So ``gc.mem_free()`` on a virtual board
means what it means on the real one.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from mpremote.romfs import VfsRomWriter

# Block header and alignment slack for the one allocation holding the image.
ROM_HEAP_SLACK = 64

# MicroPython code that mounts the image at path ROM (a name it defines) on
# /rom: the image is read into one buffer, the heap's first allocation.
MOUNT = """
import os, vfs
_buf = bytearray(os.stat(ROM)[6])
with open(ROM, "rb") as _f:
    _f.readinto(_buf)
vfs.mount(vfs.VfsRom(_buf), "/rom")
"""

# Imports every module of the image and prints how many bytes the qstr pool
# grew by (micropython.qstr_info's n_total_bytes).
_QSTRS = "import sys\nROM = sys.argv[1]\n" + MOUNT + """
import micropython
sys.path.insert(0, "/rom")
micropython.qstr_info()
for name in os.listdir("/rom/edgefw"):
    if name.endswith(".mpy"):
        try:
            __import__("edgefw." + name[:-4])
        except Exception:
            pass
micropython.qstr_info()
"""
_qstr_cache: dict[str, int] = {}


def qstr_bytes(micropython: str, image: Path) -> int:
    """Bytes the frozen modules' names add to the qstr pool (flash on a frozen build); cached by image."""
    key = hashlib.sha256(Path(image).read_bytes()).hexdigest()
    if key not in _qstr_cache:
        proc = subprocess.run([micropython, "-X", "heapsize=4M", "-c", _QSTRS, str(image)],
                              capture_output=True, text=True, timeout=60)
        totals = [int(line.rsplit("=", 1)[1]) for line in proc.stdout.splitlines()
                  if line.startswith("qstr pool:") and "n_total_bytes=" in line]
        _qstr_cache[key] = totals[-1] - totals[0] if len(totals) == 2 else 0
    return _qstr_cache[key]


def _package(rom: VfsRomWriter, modules: list[Path]) -> None:
    rom.opendir("edgefw")
    for m in modules:
        rom.mkfile(m.name, m.read_bytes())
    rom.closedir()


def build_rom(fs: Path, out: Path) -> int:
    """Write the ROMFS image of ``fs/edgefw`` to ``out``; return its size, 0 when there is no agent.

    Only compiled modules (``.mpy``) go in, as mpy-cross would freeze them; a
    board without them (blank, or running sources) gets no image and
    ``out`` is removed.
    """
    package = Path(fs) / "edgefw"
    modules = sorted(package.glob("*.mpy")) if package.is_dir() else []
    if not modules:
        Path(out).unlink(missing_ok=True)
        return 0
    rom = VfsRomWriter()
    _package(rom, modules)
    # The OTA slots (docs/protocol.md 7.7) whose package is whole, as
    # slots/<x>/edgefw: stage 0 runs a slot from here when it is here.
    slots = [(s, sorted((Path(fs) / "slots" / s / "edgefw").glob("*.mpy"))) for s in ("a", "b")]
    slots = [(s, m) for s, m in slots if any(p.name == "__init__.mpy" for p in m)]
    if slots:
        rom.opendir("slots")
        for s, m in slots:
            rom.opendir(s)
            _package(rom, m)
            rom.closedir()
        rom.closedir()
    image = rom.finalise()
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    tmp.write_bytes(image)
    tmp.replace(out)
    return len(image)
