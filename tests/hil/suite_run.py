"""Run one suite of hil/suites as QA runs it, on the rig of three virtual boards (tests/hil/rigs/virtual3.yaml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ("sim-esp32", "sim-esp32c3", "sim-picow")


def run_suite(suite: str, run_dir: Path, passed: dict[str, int]) -> str:
    """`pytest --rig virtual3.yaml hil/suites/SUITE` with its own lock folder (``run_dir``); asserts it
    passed with ``passed[board]`` tests passed, none failed or skipped, on each board. Its output."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rig",
                           "tests/hil/rigs/virtual3.yaml", f"hil/suites/{suite}", "-rs"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ, "EDGE_RUN_DIR": str(run_dir)})
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-2000:]
    assert f"{sum(passed.values())} passed" in out.splitlines()[-1], out[-2000:]
    for board, n in passed.items():
        assert any(line.split()[:6] == [board, board[4:], "virtual", str(n), "0", "0"]
                   for line in out.splitlines()), out[-2000:]
    return out
