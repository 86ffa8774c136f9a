"""Free heap of the device agent per feature and per board, on the real MicroPython Unix port.

Each board runs with its board file's heap budget and the agent frozen (a
ROMFS image standing for flash, as on a board built with firmware/manifest.py;
see hil/virtual/rom.py). Figures are the free heap after a collection, in
bytes, the lowest seen:

- code .mpy:   heap the agent's modules take when imported from .mpy files
               (a board running stock MicroPython), for comparison;
               code run once at boot or on a refusal is imported then and
               dropped, and so are the message builders at each message
               sent, so they are not counted (tests/firmware/test_heap.py:
               52,224 B here, 59,936 B before that cut);
- code frozen: the same modules imported frozen;
- boot:        the boot self-test's heap_free (STATUS key 4);
- streaming:   after each tick while a host takes every batch;
- catch-up:    the same, with a full journal of an earlier boot to send;
- flood:       streaming under hostile console input at full rate;
- worst:       catch-up + flood + every sensor failing (the test's case,
               tests/firmware/test_heap.py, which runs it in 3/4 of the heap).

Run:  .venv/bin/python bench/bench_heap.py [--seconds 6] [BOARD ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.device import pump  # noqa: E402
from tests.firmware import worst_case  # noqa: E402
from tests.firmware.spec_host import SpecHost  # noqa: E402
from tests.mpy import board_heap, micropython_exe  # noqa: E402

BOARDS = ["virtual", "esp32", "esp32c3", "esp32s3", "picow"]

_PATH = """
import sys
ROM = {rom!r}
{mount}
sys.path.insert(0, "/rom" if ROM else {pkg!r})
"""


def code_cost(tmp: Path, frozen: bool) -> int:
    """Heap taken by importing the agent's modules (frozen: less the names a frozen build keeps in flash)."""
    from edge_agent.firmware import build
    from edge_hil.virtual.rom import MOUNT, build_rom, qstr_bytes

    pkg = tmp / "code"
    if not pkg.exists():
        build(pkg)
    rom = ""
    if frozen:
        build_rom(pkg, tmp / "code.romfs")
        rom = str(tmp / "code.romfs")
    code = _PATH.format(rom=rom, pkg=str(pkg), mount=MOUNT if rom else "") + worst_case.IMPORT_COST
    out = subprocess.run([micropython_exe(), "-X", "heapsize=4M", "-c", code], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    cost = int(out[-1])
    if frozen:
        cost -= qstr_bytes(micropython_exe(), Path(rom))
    return cost


def run(board: str, seconds: float, *, prefill: bool = False, flood: bool = False,
        failing: bool = False) -> tuple[int | None, int | None]:
    """(lowest free heap after a tick, boot self-test heap_free) for one scenario."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-heap-"))
    try:
        fs = worst_case.board_folder(tmp, board)
        if prefill:
            worst_case.prefill(fs)
        before = worst_case.TRACE_HEAP + (worst_case.FAIL_SENSORS if failing else "")
        dev = worst_case.device(fs, board, before_main=before)
        host = SpecHost()
        dev.start()
        try:
            dev.write(host.start())
            if flood:
                with worst_case.Flood(dev):
                    pump(dev, host, seconds)
            else:
                pump(dev, host, seconds)
        finally:
            dev.stop()
        console = bytes(dev.console).decode(errors="replace")
        if "MemoryError" in console or "agent stopped" in console:
            return None, None
        heap = [int(line.split()[1]) for line in console.splitlines()
                if line.startswith("#HEAP ") and line.split()[1].isdigit()]
        boot = [s[4]["heap_free"] for s in host.statuses() if 4 in s]
        return (min(heap) if heap else None), (boot[0] if boot else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("boards", nargs="*", default=BOARDS)
    ap.add_argument("--seconds", type=float, default=6.0, help="time per scenario (default 6)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as t:
        mpy = code_cost(Path(t), frozen=False)
        frozen = code_cost(Path(t), frozen=True)
    print(f"agent modules' heap on the 64-bit Unix port: {mpy} B from .mpy files, {frozen} B frozen "
          f"({frozen / mpy:.2f}x)")
    cols = ["board", "budget", "boot", "streaming", "catch-up", "flood", "worst", "worst free"]
    print(" | ".join(f"{c:>10}" for c in cols))
    for board in args.boards:
        budget = board_heap(board)
        streaming, boot = run(board, args.seconds)
        catchup, _ = run(board, args.seconds, prefill=True)
        flood, _ = run(board, args.seconds, flood=True)
        worst, _ = run(board, args.seconds, prefill=True, flood=True, failing=True)
        share = f"{worst / budget:.0%}" if worst else "crashed"
        row = [board, budget, boot, streaming, catchup, flood, worst, share]
        print(" | ".join(f"{'crashed' if v is None else v:>10}" for v in row), flush=True)


if __name__ == "__main__":
    main()
