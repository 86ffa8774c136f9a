"""The smoke suite, run as QA runs it, on a rig of three virtual boards (esp32, esp32c3, picow)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.hil.suite_run import failures, whole_run

ROOT = Path(__file__).resolve().parents[2]


@whole_run
def test_the_smoke_suite_passes_on_a_rig_of_virtual_boards(tmp_path):
    xml = tmp_path / "smoke.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rig",
                           "tests/hil/rigs/virtual3.yaml", "hil/suites/test_smoke.py", f"--junitxml={xml}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, failures(proc)
    assert "12 passed" in proc.stdout
    for board in ("sim-esp32", "sim-esp32c3", "sim-picow"):
        assert any(line.split()[:6] == [board, board[4:], "virtual", "4", "0", "0"]
                   for line in proc.stdout.splitlines()), proc.stdout[-2000:]
    cases = list(ET.parse(xml).iter("testcase"))
    assert len(cases) == 12
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["board_kind"] == "virtual"
        # Versions run first on each board: every later test of it carries them.
        assert props["firmware"].startswith("1."), (case.get("name"), props)
        assert props["agent_version"] != "unknown"
