"""The emulated Pico: boot to REPL, and the device cost of a fixed snippet in emulated cycles.

One emulated Pico (``edge sim up --board pico --emulated`` through the
bench's Python API) in a temporary run folder:

* boot to REPL: wall seconds from ``power_on`` (the emulator process starts,
  the chip runs its boot ROM, boot2, the firmware, mounts littlefs, USB
  enumerates) to the first ``>>>`` answering on the pseudo-terminal;
* the snippet (:data:`SNIPPET`, integer and float arithmetic in a loop):
  the device microseconds it took (``time.ticks_us``, the emulated timer, so
  125 cycles a microsecond at clk_sys 125 MHz while the core computes) and
  the emulator's cycle counter around the whole exec (REPL and USB traffic
  included). Both come from emulated time, so they repeat run to run
  whatever the host's load; wall seconds do not, and are shown for scale;
* baseline: the same snippet on the MicroPython Unix port on this host
  (wall microseconds), measured in the same run.

Without the firmware (``edge emulator build``), Node or npm it says why and
exits 0, so ``make bench`` runs everywhere.

Run: ``python bench/bench_emulated_pico.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import serial  # noqa: E402

from edge_agent.errors import EdgeError  # noqa: E402
from edge_hil.emulated.chip import read_stats  # noqa: E402
from edge_hil.virtual.control import Bench, find_micropython  # noqa: E402

NAME = "pico-1"
SNIPPET = """\
import time
def work(n):
    a = 0
    f = 0.0
    for i in range(n):
        a = (a * 31 + i) & 0xFFFF
        f += i * 0.5
    return a, f
t0 = time.ticks_us()
work(2000)
print("US", time.ticks_diff(time.ticks_us(), t0))
"""


def to_prompt(s: serial.Serial, timeout: float) -> float:
    """Poke the REPL until ``>>> `` answers; the wall time it took."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    buf = b""
    while time.perf_counter() < deadline:
        s.write(b"\r")
        buf += s.read(s.in_waiting or 1)
        if b">>> " in buf:
            return time.perf_counter() - t0
    raise EdgeError(f"no REPL prompt within {timeout:.0f} s", hint="see the board's console.log")


def stats(bench: Bench) -> dict:
    row = next(b for b in bench.status() if b["name"] == NAME)
    return read_stats(Path(bench.rundir) / NAME, row["pid"])


def run_snippet(port: str) -> tuple[int, float]:
    """Run :data:`SNIPPET` with plain mpremote; (device µs, wall s)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "mpremote"), "connect", port, "exec", SNIPPET],
                          capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise EdgeError(f"mpremote exec failed: {proc.stderr.strip()}")
    return int(proc.stdout.split("US")[-1].split()[0]), wall


def unix_port_us(runs: int) -> list[int]:
    mp = find_micropython()
    out = []
    for _ in range(runs):
        proc = subprocess.run([mp, "-c", SNIPPET], capture_output=True, text=True, timeout=60)
        out.append(int(proc.stdout.split("US")[-1].split()[0]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-bench-emulated-") as tmp:
        try:
            bench = Bench.up(["pico"], rundir=tmp, emulated=True, timeout=300)
        except EdgeError as e:
            print(f"skipped: {e} ({e.hint})")
            return 0
        try:
            port = bench.board(NAME)["port"]
            boots = []
            for _ in range(args.runs):
                bench.power_off(NAME)
                with serial.Serial(port, timeout=0.05) as s:
                    s.reset_input_buffer()
                    t0 = time.perf_counter()
                    bench.power_on(NAME)
                    boots.append(time.perf_counter() - t0 + to_prompt(s, 120))
            rows = []
            for _ in range(args.runs):
                before = stats(bench)
                us, wall = run_snippet(port)
                after = stats(bench)
                rows.append((us, after["cycles"] - before["cycles"], wall))
        finally:
            bench.down()
    unix = unix_port_us(args.runs)
    print(f"boot to REPL (wall s): {', '.join(f'{b:.2f}' for b in boots)}")
    print(f"{'run':>3} {'device us':>10} {'snippet cycles':>15} {'exec cycles':>12} {'wall s':>7}")
    for k, (us, cycles, wall) in enumerate(rows, 1):
        print(f"{k:>3} {us:>10} {us * 125:>15} {cycles:>12} {wall:>7.2f}")
    best_unix = min(unix)
    print(f"unix port, same snippet (host us): {', '.join(map(str, unix))}; "
          f"emulated device time / unix port time: {rows[0][0] / best_unix:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
