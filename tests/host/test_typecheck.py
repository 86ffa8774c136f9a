"""The host code type-checks (mypy), so signatures stay honest as it grows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.mpy import REPO


def test_host_packages_type_check_with_mypy():
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "mypy"), "--ignore-missing-imports",
                           "--cache-dir", str(bin_dir.parent / "mypy-cache" / "host"),
                           "agent", "hil", "ota"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
