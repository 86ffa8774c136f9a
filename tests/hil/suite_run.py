"""Run a HIL suite as QA runs it, on the rig of three virtual boards (tests/hil/rigs/virtual3.yaml):
for the tests of the suites' real runs. Each run takes its board locks in a folder of its own, so
two suite runs of the project's test session never wait on each other's boards."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RIG = "tests/hil/rigs/virtual3.yaml"


def whole_run(test):
    """Mark ``test`` as a whole suite's run on three boards: slow, with a timeout beyond the project's
    300 s for one test, and in the xdist group of such runs: ``make test`` (``--dist loadgroup``)
    gives the group to one worker, first (the largest group is scheduled first), so the runs never
    load the machine two at a time and the other workers take the rest of the session beside them."""
    return pytest.mark.slow(pytest.mark.timeout(1000)(pytest.mark.xdist_group("hil-suite-runs")(test)))


def run_suite(suite: str, *args: str, timeout: float = 1200, run_dir: Path | None = None, rig: str = RIG
              ) -> subprocess.CompletedProcess:
    """``pytest --rig RIG hil/suites/SUITE ARGS`` (RIG: virtual3) in a process of its own, from the
    repository. ``suite``: one suite file, or several separated by spaces."""
    with tempfile.TemporaryDirectory(prefix="edge-run-") as own:
        env = {**os.environ, "EDGE_RUN_DIR": str(run_dir or own)}
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rig", rig,
                               *(f"hil/suites/{s}" for s in suite.split()), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)


def failures(proc: subprocess.CompletedProcess, head: int = 8000, tail: int = 3000) -> str:
    """What a failed run says about why: the start of its FAILURES section (the first failure's
    traceback and the board's console since that test began) and the end of its output (the summary,
    the rig table), so a failure in CI can be read from the log alone."""
    out = proc.stdout
    at = max(out.find("= FAILURES ="), out.find("= ERRORS ="))  # FAILURES if any: pytest prints it after ERRORS
    first = out[out.rfind("\n", 0, at) + 1:][:head] if at >= 0 else ""
    return f"{first}\n[...]\n{out[-tail:]}\n{proc.stderr[-2000:]}"


def run_suite_passing(suite: str, run_dir: Path, passed: dict[str, int], *args: str) -> str:
    """:func:`run_suite` with ``args``, asserting it passed with ``passed[board]`` tests passed, none
    failed or skipped, on each board (the plugin's summary table). Its output."""
    proc = run_suite(suite, "-rs", *args, timeout=900, run_dir=run_dir)
    out = proc.stdout
    assert proc.returncode == 0, failures(proc)
    assert f"{sum(passed.values())} passed" in out.splitlines()[-1], out[-2000:]
    for board, n in passed.items():
        assert any(line.split()[:6] == [board, board[4:], "virtual", str(n), "0", "0"]
                   for line in out.splitlines()), out[-2000:]
    return out
