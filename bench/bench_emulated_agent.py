"""The agent on the emulated Pico, in emulated CPU cycles: boot to agent-up, one telemetry tick, one journal append.

One emulated Pico (``edge sim up --board pico --emulated``) in a temporary
home, the agent deployed and provisioned by ``edge flash``; every figure
comes from the emulator's clock, so it repeats run to run whatever the
host's load (cycles at clk_sys 125 MHz):

* boot to agent-up: the power goes on (a new chip: boot ROM, boot2, the
  firmware, littlefs mounted, main.py, the agent's imports and self-test)
  until the agent's first HELLO frame reaches the console. At that moment
  the runner is asked for its counters (SIGUSR1): ``cycles`` is what the
  core executed since the chip booted (instructions only: while the core
  sleeps in WFI/WFE no cycle is counted), ``device ms`` the chip's clock
  since it booted (sleep included: while the core sleeps, device time is
  paced to wall time). The counters are read a few host milliseconds after
  the frame was written, so they overshoot by at most one emulator slice
  (200,000 instructions), well under 1 % of a boot;
* one tick (the agent's ``TickWriter.append``: the Pico's sensors read,
  the record encoded, one journal append) and one journal append alone (a
  tick's payload), N of each on the chip with the agent stopped, timed
  with ``time.ticks_us`` (the emulated timer): device µs, and cycles = µs x
  125, per operation (the agent sleeps between ticks, never during one);
* beside each, the Unix port (``micropython`` with the Pico's heap) running
  the same snippet in the same run, in host µs, and the ratio; for the
  boot, a virtual Pico (the Unix port on a pty) from power on to its first
  HELLO, in wall ms.

Without the firmware (``edge emulator build``), Node or npm it says why and
exits 0, so ``make bench`` runs everywhere.

Run: ``python bench/bench_emulated_agent.py [--boots N] [--n N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import serial  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edge_agent.errors import EdgeError  # noqa: E402
from edge_agent.frames import Frame, FrameDecoder  # noqa: E402
from edge_agent.messages import Hello, MessageError, decode_message  # noqa: E402
from edge_hil.emulated.chip import read_stats  # noqa: E402
from tests.harness import Home  # noqa: E402
from tests.hil.emulated_pico import NAME, flashed_pico  # noqa: E402
from tests.mpy import board_heap, run  # noqa: E402

CYCLES_PER_US = 125          # clk_sys 125 MHz, as the runner counts it

# The agent's tick as boot_build.py makes it, over the Pico's own sensors
# (uptime, heap_free, mcu_temp: the chip reads its temperature through the
# ADC, the Unix port has no reading, so its tick holds two records, the
# chip's three), and the agent's journal sizes, in a folder of its own;
# then N ticks, and N appends alone.
SNIPPET = """
import os, time
from edgefw import cbor, port as _port, sensors_build
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.ticks import TickWriter
ROOT = %r
N = %d
def mkdir(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
mkdir(ROOT)
for d in ("j", "a"):
    mkdir(ROOT + "/" + d)
    for f in os.listdir(ROOT + "/" + d):
        os.remove(ROOT + "/" + d + "/" + f)
p = _port.detect()
p.virtual = False   # the board file's sensors only, never a virtual board's simulated ones
clock = Clock(p, ROOT + "/clock")
j = Journal(ROOT + "/j", max_bytes=65536, seg_bytes=4096)
j.open()
tw = TickWriter(j, sensors_build.build({"sensors": %r}, p, clock, "bench"))
tw.append(clock.boot, clock.uptime_ms())
t0 = time.ticks_us()
for i in range(N):
    tw.append(clock.boot, clock.uptime_ms())
print("TICK", time.ticks_diff(time.ticks_us(), t0))
a = Journal(ROOT + "/a", max_bytes=65536, seg_bytes=4096)
a.open()
payload = cbor.dumps([0, 123456, 0, 123, 1, 150000])
a.append(payload, 2)
t0 = time.ticks_us()
for i in range(N):
    a.append(payload, 2)
print("APPEND", time.ticks_diff(time.ticks_us(), t0))
"""


def snippet(root: str, n: int) -> str:
    sensors = json.loads((REPO / "boards" / "pico.json").read_text())["sensors"]
    return SNIPPET % (root, n, sensors)


def parse(out: str, n: int) -> dict[str, float]:
    """Per-operation µs from the snippet's TICK and APPEND lines."""
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("TICK", "APPEND"):
            got[parts[0].lower()] = int(parts[1]) / n
    if set(got) != {"tick", "append"}:
        raise EdgeError(f"the snippet printed no figures: {out[-500:]!r}")
    return got


def stats(home: Home) -> dict:
    """The runner's counters now (cycles since the chip booted, device ns)."""
    return read_stats(home.sim_dir / NAME, home.control.board(NAME)["pid"])


def first_hello(s: serial.Serial, timeout: float) -> Hello:
    """Read the console until the agent's HELLO frame."""
    dec = FrameDecoder()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in dec.feed(s.read(s.in_waiting or 1)):
            if isinstance(ev, Frame):
                try:
                    msg = decode_message(ev.payload)
                except MessageError:
                    continue
                if isinstance(msg, Hello):
                    return msg
    raise EdgeError(f"no HELLO within {timeout:.0f} s of power on", hint="see the board's console.log")


def boot_to_hello(home: Home, port: str, emulated: bool) -> dict:
    """Power ``NAME`` off and on; at its first HELLO: wall ms, and the emulator's counters."""
    home.control.power_off(NAME)
    with serial.Serial(port, timeout=0.01) as s:
        s.reset_input_buffer()
        t0 = time.perf_counter()
        home.control.power_on(NAME)
        first_hello(s, 300)
        wall_ms = (time.perf_counter() - t0) * 1000
        row = {"wall_ms": wall_ms}
        if emulated:
            st = stats(home)
            row.update(cycles=st["cycles"], device_ms=st["boot_device_ns"] / 1e6)
    return row


def unix_boot_ms(tmp: Path, runs: int) -> list[float]:
    """A virtual Pico (the Unix port on a pty) from power on to its first HELLO, in wall ms."""
    home = Home(tmp / "virtual")
    try:
        (row,) = home.up("pico", timeout=120)
        return [boot_to_hello(home, row["port"], emulated=False)["wall_ms"] for _ in range(runs)]
    finally:
        home.down()


def unix_port_us(tmp: Path, n: int, runs: int) -> dict[str, float]:
    """The snippet on the Unix port with the Pico's heap: the best per-operation µs of ``runs``."""
    best: dict[str, float] = {}
    for _ in range(runs):
        out = run(snippet(str(tmp / "unix"), n), heap=board_heap("pico"), cwd=tmp, timeout=120)
        for k, v in parse(out.stdout.decode(), n).items():
            best[k] = min(best.get(k, v), v)
    return best


def missing() -> str | None:
    """Why the emulated Pico cannot run here, or None."""
    from edge_hil.emulated import assets

    try:
        assets.find_node()
        assets.firmware()
        assets.rp2040js_dir()
        assets.bootrom()
    except EdgeError as e:
        return f"{e} ({e.hint})" if e.hint else str(e)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--boots", type=int, default=3, help="power cycles to the first HELLO (default 3)")
    p.add_argument("--n", type=int, default=50, help="ticks and appends timed on the chip (default 50)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    why = missing()
    if why:
        print(f"skipped: the emulated Pico cannot run here: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="edge-bench-agent-") as tmp_name:
        tmp = Path(tmp_name)
        home = Home(tmp / "emulated")
        try:
            pico = flashed_pico(home)
            boots = [boot_to_hello(home, pico.port, emulated=True) for _ in range(args.boots)]
            pico.park()
            chip = parse(pico.exec(snippet("/bench", args.n), timeout=600), args.n)
        finally:
            home.down()
        unix = unix_port_us(tmp, args.n * 20, 3)
        unix_boots = unix_boot_ms(tmp, args.boots)
    result = {
        "boot_to_hello": {"emulated": boots, "unix_port_wall_ms": unix_boots},
        "per_op": {k: {"emulated_device_us": chip[k], "emulated_cycles": round(chip[k] * CYCLES_PER_US),
                       "unix_port_us": unix[k], "ratio": chip[k] / unix[k]} for k in ("tick", "append")},
        "n": args.n,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title="The agent on the emulated Pico (cycles at 125 MHz) and on the Unix port")
    for col in ("what", "emulated: cycles", "emulated: device", "Unix port (host)", "ratio"):
        table.add_column(col, justify="left" if col == "what" else "right")
    cyc = [b["cycles"] for b in boots]
    dev = [b["device_ms"] for b in boots]
    ub = min(unix_boots)
    table.add_row("boot to first HELLO", f"{min(cyc) / 1e6:,.1f}-{max(cyc) / 1e6:,.1f} M",
                  f"{min(dev):,.0f}-{max(dev):,.0f} ms", f"{ub:,.0f} ms wall", f"{min(dev) / ub:,.1f}x")
    for k, label in (("tick", "one telemetry tick"), ("append", "one journal append")):
        r = result["per_op"][k]
        table.add_row(label, f"{r['emulated_cycles']:,}", f"{r['emulated_device_us']:,.0f} us",
                      f"{r['unix_port_us']:,.1f} us", f"{r['ratio']:,.0f}x")
    Console().print(table)
    print(f"boots: {args.boots} power cycles; ticks and appends: {args.n} on the chip, "
          f"{args.n * 20} on the Unix port (best of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
