"""The agent frozen into a virtual board's "flash": a ROMFS image of its ``edgefw`` package.

A real board runs the agent from a custom MicroPython image with the agent
frozen in (``firmware/manifest.py``, docs/firmware-build.md): its bytecode
stays in flash and costs no heap. A virtual board stands for that board: at
every start its supervisor packs the folder's ``edgefw/*.mpy`` into a ROMFS
image (MicroPython's read-only filesystem whose ``.mpy`` files run in place),
the runner mounts it at ``/rom`` ahead of the folder on ``sys.path``, and the
interpreter's heap is the board file's budget *plus* the image, which is its
first allocation and stands for the flash. So ``gc.mem_free()`` on a virtual
board means what it means on the real one.
"""

from __future__ import annotations

from pathlib import Path

from mpremote.romfs import VfsRomWriter

# Block header and alignment slack for the one allocation holding the image.
ROM_HEAP_SLACK = 64


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
    rom.opendir("edgefw")
    for m in modules:
        rom.mkfile(m.name, m.read_bytes())
    rom.closedir()
    image = rom.finalise()
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    tmp.write_bytes(image)
    tmp.replace(out)
    return len(image)
