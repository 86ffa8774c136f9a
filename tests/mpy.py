"""Run code under the real MicroPython Unix port, with the firmware importable.

Tests of device code go through :func:`run` so they execute on the same
interpreter as the boards, with a heap as small as a board's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
# Under CPython the firmware imports `micropython` from this stand-in folder.
CPYTHON_SHIM = FIRMWARE / "cpython"
BOARDS = REPO / "boards"


def micropython_exe() -> str:
    """The ``micropython`` command installed beside this Python (the venv's), else on PATH."""
    from edge_hil.virtual.control import find_micropython

    return find_micropython()


def board_heap(board: str) -> int:
    """The heap budget (bytes) of a board file in ``boards/``."""
    return json.loads((BOARDS / f"{board}.json").read_text())["heap_bytes"]


def run(code: str, *, heap: int | str = "esp32", cwd: Path | None = None,
        stdin: bytes | None = None, timeout: float = 60, check: bool = True,
        args: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` under micropython with ``firmware/`` on ``sys.path``.

    ``heap`` is a byte count, or a board name whose budget is used.
    Returns the completed process (stdout/stderr as bytes). With ``check``, a
    non-zero exit raises an AssertionError that shows the output.
    """
    if isinstance(heap, str):
        heap = board_heap(heap)
    prelude = f"import sys\nsys.path.insert(0, {str(FIRMWARE)!r})\n"
    cmd = [micropython_exe(), "-X", f"heapsize={heap}", "-c", prelude + code] + (args or [])
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                          cwd=str(cwd) if cwd else None, env={**os.environ, "MICROPYPATH": ".frozen"})
    if check and proc.returncode != 0:
        raise AssertionError(
            f"micropython exited {proc.returncode}\n--- stdout\n{proc.stdout.decode(errors='replace')}"
            f"\n--- stderr\n{proc.stderr.decode(errors='replace')}")
    return proc


def firmware_on_path() -> None:
    """Make the firmware importable in this CPython process (as on a Raspberry Pi)."""
    for p in (str(FIRMWARE), str(CPYTHON_SHIM)):
        if p not in sys.path:
            sys.path.insert(0, p)


# Device code that takes all the heap but FREE bytes (FREE is set before it),
# for tests that find how little free heap a job needs. The ballast is many
# blocks: after the imports no single free block spans the heap.
BALLAST = """
ballast = []
small = [None] * 1024
size = 16384
gc.collect()
while size >= 16 and gc.mem_free() > FREE + 64:
    try:
        ballast.append(bytearray(min(size, gc.mem_free() - FREE - 48)))
    except MemoryError:
        size //= 2
# The holes too small for a bytearray (one 16-byte block): a boxed float each.
for i in range(1024):
    if gc.mem_free() <= FREE + 16:
        break
    try:
        small[i] = i + 0.5
    except MemoryError:
        break
gc.collect()
"""
