"""Free heap on each board with BLE active, against the board file's budget.

For esp32, esp32c3, esp32s3 and picow, on one virtual bench (temporary
EDGE_HOME, ``edge sim up --ble-hosts 4``, each board sampling every second),
the least free heap the board's own ``heap_free`` sensor reports (the board's
GC heap after its tick, in bytes) in three states:

- no BLE:     the agent streaming over serial on the same heap budget with no
              ``bluetooth`` module at all (bench/bench_heap.py's "streaming"
              run: its lowest free heap after a tick);
- BLE idle:   the board on the bench, its radio up and advertising (the
              ``bluetooth`` stand-in and the BLE link loaded), telemetry
              taken over serial by ``edge telemetry ingest --sim``;
- BLE active: paired over the air with its setup code, then streaming sealed
              telemetry to a plain bleak central (tests/hil/ble_central.py
              ``pair``), all four boards at once.

The stand-in (hil/virtual/vbluetooth.py, compiled to .mpy as the bench loads
it) is Python on the GC heap; a real port's ``bluetooth`` is C in flash. Its
own import cost is measured and a "less stand-in" column adds it back.

How the firmware fits on real boards (MicroPython source, commit printed):

- ESP32: ports/esp32/main.c allocates the first GC heap area
  (MICROPY_GC_INITIAL_HEAP_SIZE, 56 KiB on the ESP32, ports/esp32/mpconfigport.h)
  from the ESP-IDF heap, and MICROPY_GC_SPLIT_HEAP_AUTO grows it on demand;
  the size is "chosen so they can grow the heap once (double it) and still
  have enough internal RAM to start WiFi" (same file). NimBLE's host and the
  controller are ESP-IDF components allocating from the ESP-IDF heap, outside
  the GC heap: their ~40 KB comes out of internal RAM the GC heap never
  claims, so the budget in boards/esp32.json (110 KiB: one doubling) is what
  the agent has whether BLE is on or not. What BLE costs the GC heap on a real
  port is the module's own state: extmod/modbluetooth.c allocates the IRQ
  data buffer (and a ring buffer on ports without sync events) with m_new,
  extmod/nimble/modbluetooth_nimble.c the service definitions, and the agent
  its GATT value buffers: the "BLE idle" difference less the stand-in.
- Pico W: BTstack is built without HAVE_MALLOC
  (extmod/btstack/modbluetooth_btstack.c says enabling it would leak) and its
  pools are fixed by MAX_NR_* in extmod/btstack/btstack_config_common.h:
  static memory in the firmware image (.bss), not the GC heap.

Run:  .venv/bin/python bench/bench_heap_ble.py [--seconds 12] [BOARD ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import Home  # noqa: E402
from tests.mpy import board_heap, micropython_exe  # noqa: E402

BOARDS = ["esp32", "esp32c3", "esp32s3", "picow"]
CENTRAL = REPO / "tests" / "hil" / "ble_central.py"
MICROPYTHON_COMMIT = "1c3c201149f37fe8d81246191b3127bb198d6306"   # where the cited files were read

_IMPORT_COST = """
import gc, sys
sys.path.insert(0, {folder!r})
gc.collect()
before = gc.mem_free()
import vbluetooth
gc.collect()
print(before - gc.mem_free())
"""


def standin_cost(tmp: Path) -> int:
    """GC heap the bluetooth stand-in keeps once imported (compiled, as a board loads it)."""
    from edge_hil.virtual.radio import standin_mpy

    folder = standin_mpy(tmp)
    assert folder is not None, "mpy-cross could not compile the stand-in"
    out = subprocess.run([micropython_exe(), "-X", "heapsize=1M", "-c", _IMPORT_COST.format(folder=str(folder))],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return int(out[-1])


def least_heap_stored(db: Path, device_id: str) -> int | None:
    from edge_agent.store import Store

    with Store(str(db)) as store:
        values = [r.value for r in store.query(device=device_id, name="heap_free")]
    return int(min(values)) if values else None


def stream_over_ble(home: Home, board: dict, code: str, seconds: float) -> dict:
    from edge_hil.virtual import state as st

    env = {**home.env, "EDGE_BLE": "sim", "PYTHONPATH": str(REPO)}
    env.pop("EDGE_BLE_HCI", None)
    p = subprocess.run([sys.executable, str(CENTRAL), "pair", st.board_ble_address(board["name"]),
                        board["device_id"], code, str(seconds)], env=env, capture_output=True, text=True,
                       timeout=seconds + 120)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds of streaming per state (default 12)")
    parser.add_argument("boards", nargs="*", default=BOARDS)
    args = parser.parse_args()

    from bench.bench_heap import run as run_without_ble

    root = Path(tempfile.mkdtemp(prefix="bench-heap-ble-"))
    home = Home(root / "home")
    try:
        cost = standin_cost(root)
        no_ble = {b: run_without_ble(b, args.seconds / 2)[0] for b in args.boards}
        rows = home.up(*args.boards, extra=("--ble-hosts", str(len(args.boards))), timeout=180)
        codes = {b["device_id"]: json.loads(home.edge("label", b["device_id"], "--out", str(root / "labels"),
                                                      "--json").stdout)["setup_code"] for b in rows}
        home.edge("telemetry", "ingest", "--sim", "--for", f"{args.seconds:g}", "--json",
                  timeout=args.seconds + 60)
        idle = {b["board"]: least_heap_stored(home.db, b["device_id"]) for b in rows}
        with ThreadPoolExecutor(len(rows)) as pool:
            active = dict(zip([b["board"] for b in rows],
                              pool.map(lambda b: stream_over_ble(home, b, codes[b["device_id"]], args.seconds),
                                       rows)))
        crashed = {b["board"]: "MemoryError" in Path(b["console_log"]).read_text(errors="replace")
                   for b in rows}
        report(args, cost, no_ble, idle, active, crashed)
    finally:
        home.down()
        shutil.rmtree(root, ignore_errors=True)


def report(args, cost: int, no_ble: dict, idle: dict, active: dict, crashed: dict) -> None:
    print("Least free GC heap (bytes), from the board's heap_free sensor (no BLE: bench_heap.py's lowest free "
          f"heap after a tick), {args.seconds:g} s per state, sampling every 1 s.")
    print(f"The bluetooth stand-in (hil/virtual/vbluetooth.py as .mpy) keeps {cost} B of GC heap once "
          "imported; a real port's module is C in flash. 'less stand-in' adds it back to the BLE active figure.")
    print(f"{'board':<8} {'budget':>7} {'no BLE':>7} {'BLE idle':>8} {'BLE active':>10} {'less stand-in':>13} "
          f"{'BLE costs':>9} {'w/o stand-in':>12} {'active/budget':>13}  notes")
    for b in args.boards:
        budget = board_heap(b)
        got = active.get(b) or {}
        act = got.get("heap_free_min")
        base = no_ble.get(b)
        fix = act + cost if act is not None else None
        delta = base - act if base is not None and act is not None else None
        notes = []
        if "error" in got:
            notes.append(f"central: {got['error'][:80]}")
        elif act is None:
            notes.append("no heap_free record streamed over BLE")
        else:
            notes.append(f"{got.get('records', 0)} records over BLE")
        if crashed.get(b):
            notes.append("MemoryError in its console log")
        f = lambda v: "-" if v is None else str(v)   # noqa: E731
        print(f"{b:<8} {budget:>7} {f(base):>7} {f(idle.get(b)):>8} {f(act):>10} {f(fix):>13} {f(delta):>9} "
              f"{f(None if delta is None else delta - cost):>12} "
              f"{'-' if act is None else f'{act / budget:.2f}':>13}  {'; '.join(notes)}")
    print("BLE costs: no BLE minus BLE active (the stand-in, the BLE link's buffers, the session and the sealing); "
          "w/o stand-in: the same less the stand-in's own import cost, what a real port's GC heap would pay.")
    print("On real boards (MicroPython source at commit " + MICROPYTHON_COMMIT[:12] + "): the ESP32's GC heap "
          "is carved out of the ESP-IDF heap (ports/esp32/main.c allocates its first area, "
          "MICROPY_GC_INITIAL_HEAP_SIZE in ports/esp32/mpconfigport.h, whose comment sizes it to leave room to start "
          "Wi-Fi and make an HTTPS request; it says nothing of BLE); NimBLE, an ESP-IDF component, allocates its "
          "~40 KB from that same ESP-IDF heap, not from the GC heap (inferred, not found stated in the source), so "
          "on a real ESP32 it competes with the GC heap's growth (split heap), not with the budget above; the Pico W's "
          "BTstack has static pools (extmod/btstack/btstack_config_common.h MAX_NR_*, no HAVE_MALLOC) in the "
          "image's .bss. Only the module's own state (extmod/modbluetooth.c irq data / ring buffer, the service "
          "definitions, the agent's buffers) comes out of the budget above.")


if __name__ == "__main__":
    main()
