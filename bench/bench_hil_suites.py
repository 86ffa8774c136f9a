"""Wall time of the HIL suites on three virtual boards, with one worker and with three.

``pytest --rig tests/hil/rigs/virtual3.yaml hil/suites`` (every suite; the
soak for ``--soak-seconds`` per board, 15 by default) is run
as QA runs it (a subprocess, the virtual bench started by the run), once
without pytest-xdist and once with ``-n 3`` (one worker per board); the
ratio is the gain of running boards in parallel on this machine. The run's
own table gives the seconds each board spent in each strategy state.

Both runs include starting and stopping the bench (3 interpreters, the
virtual air). These machines are noisy and shared: read the ratio, not the
seconds.

Run: ``python bench/bench_hil_suites.py [--suite PATH] [--soak-seconds S] [--rounds N]``
(prints a table; the whole of ``hil/suites`` takes about 8 minutes with one worker on 2 cores, 5 with three).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RIG = "tests/hil/rigs/virtual3.yaml"


def run_suite(suite: str, workers: int, soak_s: float) -> tuple[float, list[dict[str, str]]]:
    """One run: its wall time and the rows of its rig table (column name -> cell)."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rig", RIG, suite,
            "--soak-seconds", str(soak_s)]
    if workers > 1:
        argv += ["-n", str(workers)]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=3600)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"the suite failed with {workers} worker(s):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return seconds, table_rows(proc.stdout)


def table_rows(out: str) -> list[dict[str, str]]:
    """The per-board table the plugin prints at the end of a run."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["board", "type"])
    head = lines[start].replace(" s", "_s").split()
    rows = []
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != len(head) or line.startswith("="):
            break
        rows.append(dict(zip(head, cells)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="hil/suites", help="suite file or folder [%(default)s]")
    p.add_argument("--soak-seconds", type=float, default=15.0, help="the soak's length per board [%(default)s]")
    p.add_argument("--rounds", type=int, default=1, help="runs of each kind; the median is shown [%(default)s]")
    args = p.parse_args()
    times: dict[int, list[float]] = {1: [], 3: []}
    tables: dict[int, list[dict[str, str]]] = {}
    for _ in range(args.rounds):
        for workers in (1, 3):
            print(f"running {args.suite} with {workers} worker(s) ...", file=sys.stderr, flush=True)
            seconds, tables[workers] = run_suite(args.suite, workers, args.soak_seconds)
            print(f"  {seconds:.1f} s", file=sys.stderr, flush=True)
            times[workers].append(seconds)
    one, three = statistics.median(times[1]), statistics.median(times[3])
    print(f"{args.suite} on {RIG} (3 virtual boards), {args.rounds} round(s), median wall time:")
    print(f"  1 worker   {one:7.1f} s")
    print(f"  3 workers  {three:7.1f} s   ratio 1/3 workers: {one / three:.2f}x")
    for workers, rows in tables.items():
        states = [k for k in rows[0] if k.endswith("_s")] if rows else []
        print(f"\nseconds per strategy state, {workers} worker(s), last round:")
        print("  " + "  ".join([f"{'board':<12}", *(f"{s[:-2]:>10}" for s in states), f"{'tests':>6}"]))
        for r in rows:
            print("  " + "  ".join([f"{r['board']:<12}", *(f"{r[s]:>10}" for s in states), f"{r['passed']:>6}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
