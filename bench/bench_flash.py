"""Bench-station benchmark: `edge flash` on virtual boards.

Measured in the same run, on blank virtual boards (empty filesystems, as new
boards out of the box):

  (a) time to provision one board end to end (check, deploy, identity,
      self-test, registry), through the library the command uses;
  (b) 8 boards one after the other (``flash_many(jobs=1)``) vs all 8 at once
      (``jobs=8``, what ``edge flash --all`` does): wall time and speed-up;
  (c) bytes copied per board: the agent as ``.mpy`` (what is deployed,
      ``edge_agent.firmware.build``) vs the plain ``.py`` sources, and the
      time to copy each through the raw REPL.

Virtual boards are the MicroPython Unix port on pseudo-terminals: the copy
speed says nothing about a real board's USB link (a real 115200-baud UART
moves ~11 KB/s); the ratios are the result.

    python bench/bench_flash.py [--boards 8]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from edge_agent.board_link import BoardLink
from edge_agent.firmware import build
from edge_agent.flash import Target, flash_board, flash_many
from edge_agent.paths import FIRMWARE_DIR
from edge_hil.virtual.control import Bench


def blank_bench(rundir: Path, boards: list[str]) -> tuple[Bench, list[Target]]:
    bench = Bench.up(boards, rundir=rundir, blank=True)
    targets = [Target(b["name"], b["port"], b["board"], True, b.get("flash_url"), bench.rundir)
               for b in bench.boards()]
    return bench, targets


def check(results) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"flash failed: {[(r.target.name, r.failed_step, r.error) for r in bad]}")


def copy_time(port: str, files: list[tuple[str, bytes]]) -> float:
    """Seconds to copy ``files`` to the board (mkdir + put each), fresh names."""
    with BoardLink(port) as link:
        link.mkdir("bench")
        link.mkdir("bench/edgefw")
        t = time.perf_counter()
        for path, data in files:
            link.put("bench/" + path, data)
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=8, help="boards for the concurrency figure")
    args = parser.parse_args()
    n = args.boards
    tmp = Path(tempfile.mkdtemp(prefix="bench-flash-"))
    rows: list[tuple[str, str]] = []
    try:
        from edge_ota.keys import root_public_key
        import os
        os.environ["EDGE_HOME"] = str(tmp / "home")
        root_public_key()

        # (a) one board, end to end
        bench, (one,) = blank_bench(tmp / "one", ["esp32"])
        try:
            t = time.perf_counter()
            r = flash_board(one, tmp / "one.db")
            single = time.perf_counter() - t
            check([r])
            t = time.perf_counter()
            again = flash_board(one, tmp / "one.db")
            rerun = time.perf_counter() - t
            check([again])
            rows += [("provision 1 blank board, end to end", f"{single:.2f} s"),
                     ("  of which deploy bytes", f"{r.bytes_copied} B in {r.files_copied} files"),
                     ("re-run on the same board (idempotent)", f"{rerun:.2f} s, "
                      f"{again.files_copied} copied, {again.files_skipped} skipped")]

            # (c) .mpy vs source, bytes and copy time
            mpy_dir = tmp / "mpy"
            mpy = [(p.relative_to(mpy_dir).as_posix(), p.read_bytes()) for p in build(mpy_dir, None)]
            src = [(p.relative_to(FIRMWARE_DIR).as_posix(), p.read_bytes())
                   for p in sorted((FIRMWARE_DIR / "edgefw").glob("*.py"))] + \
                  [("main.py", (FIRMWARE_DIR / "main.py").read_bytes())]
            mpy_bytes, src_bytes = sum(len(d) for _, d in mpy), sum(len(d) for _, d in src)
            t_mpy = copy_time(one.port, mpy)
            t_src = copy_time(one.port, [("src_" + p.replace("/", "_"), d) for p, d in src])
            rows += [("agent as .mpy (deployed)", f"{mpy_bytes} B, {len(mpy)} files, copy {t_mpy:.2f} s"),
                     ("agent as .py source", f"{src_bytes} B, {len(src)} files, copy {t_src:.2f} s"),
                     (".mpy / source bytes", f"{mpy_bytes / src_bytes:.2f}"),
                     ("at 115200 baud (~11.5 KB/s), .mpy vs .py",
                      f"{mpy_bytes / 11520:.1f} s vs {src_bytes / 11520:.1f} s (payload only)")]
        finally:
            bench.down()

        # (b) n boards: one by one vs all at once, same boards re-blanked
        kinds = (["esp32", "esp32c3", "picow"] * n)[:n]
        seq_dir, par_dir = tmp / "seq", tmp / "par"
        bench, targets = blank_bench(seq_dir, kinds)
        try:
            t = time.perf_counter()
            check(flash_many(targets, tmp / "seq.db", jobs=1))
            one_by_one = time.perf_counter() - t
        finally:
            bench.down()
        bench, targets = blank_bench(par_dir, kinds)
        try:
            t = time.perf_counter()
            check(flash_many(targets, tmp / "par.db", jobs=n))
            at_once = time.perf_counter() - t
        finally:
            bench.down()
        rows += [(f"{n} blank boards one by one (jobs=1)", f"{one_by_one:.2f} s"),
                 (f"{n} blank boards at once (--all, jobs={n})", f"{at_once:.2f} s"),
                 ("speed-up of --all", f"{one_by_one / at_once:.2f}x on {os.cpu_count()} CPU(s)")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(k) for k, _ in rows)
    print("edge flash on virtual boards (MicroPython Unix port)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
