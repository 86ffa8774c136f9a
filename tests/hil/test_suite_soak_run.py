"""The soak suite, run as QA runs it (short), on a rig of three virtual boards (esp32, esp32c3, picow)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.hil.suite_run import failures, run_suite, whole_run

BOARDS = ("sim-esp32", "sim-esp32c3", "sim-picow")


def soak(*args: str) -> subprocess.CompletedProcess:
    return run_suite("test_soak.py", *args, timeout=900)


@whole_run
def test_the_soak_suite_passes_on_virtual_boards_and_reports_its_tally(tmp_path):
    xml = tmp_path / "soak.xml"
    proc = soak("--soak-seconds", "12", "--soak-seed", "11", f"--junitxml={xml}")
    assert proc.returncode == 0, failures(proc)
    assert "3 passed" in proc.stdout
    cases = list(ET.parse(xml).iter("testcase"))
    assert len(cases) == 3
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["board"] in BOARDS
        assert props["soak_seed"] == "11" and props["soak_seconds"] == "12.0"
        assert props["records_lost"] == "0" and props["records_duplicated"] == "0", props
        assert int(props["records_stored"]) > 0 and int(props["records_sent"]) >= int(props["records_stored"])
        assert props["soak_faults"], props
        # The tally is printed too (JUnit's system-out).
        assert "lost 0, duplicated 0" in (case.findtext("system-out") or ""), case.findtext("system-out")


@pytest.mark.parametrize("bad", ["0", "-5", "soon"])
def test_a_soak_duration_that_is_not_a_positive_number_of_seconds_is_a_usage_error(bad):
    proc = soak("--soak-seconds", bad, "--collect-only")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--soak-seconds" in proc.stderr and "not a number of seconds above 0" in proc.stderr
