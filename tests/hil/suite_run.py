"""Run a HIL suite as QA runs it, on the rig of three virtual boards: for the tests of the suites' real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RIG = "tests/hil/rigs/virtual3.yaml"


def run_suite(suite: str, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``pytest --rig virtual3 hil/suites/SUITE ARGS`` in a process of its own, from the repository."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rig", RIG,
                           f"hil/suites/{suite}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
