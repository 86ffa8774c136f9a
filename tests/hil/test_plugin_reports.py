"""What the HIL plugin reports (pytester): JUnit properties per test case, the board's console on a
failure, the table at the end, retries counted, the board's lock held for the test.

The rig is of USB boards: one on pyserial's ``loop://`` (what the test
writes to its console comes back, as a board echoing), one at a port nothing
opens. No bench is started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.hil.rig_pytester import rig_project

pytest_plugins = ["pytester"]

RIG = """\
rig: 1
name: bench-r
boards:
  - name: esp32-loop
    board: esp32
    port: "loop://"
  - name: picow-idle
    board: picow
    port: /dev/edge-test-picow-idle
"""

SUITE = """\
import pytest

@pytest.mark.boards("esp32")
def test_echo_fails(board, console):
    console.open()
    console.write(b"rst: the board's boot banner\\r\\n")
    console.expect(b"banner", 5)
    assert False, "the test fails after the board spoke"

@pytest.mark.boards("esp32")
def test_versions(board, record_property):
    record_property("firmware", "1.29.0")
    record_property("agent_version", "0.1.0")

def test_flaky_step(board, retry):
    calls = []
    def step():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("the port glitched")
        return "ok"
    assert retry(step, 3, "open the port") == "ok"

@pytest.mark.needs("power")
def test_power(power):
    pass
"""


@pytest.fixture
def suite(pytester, tmp_path, monkeypatch):
    return rig_project(pytester, monkeypatch, tmp_path / "run", RIG, SUITE)


def cases(path) -> dict[str, dict[str, list[str]]]:
    """Each test case of a JUnit file: its properties (a name may repeat) and its system-out."""
    out = {}
    for case in ET.parse(path).iter("testcase"):
        props: dict[str, list[str]] = {}
        for p in case.iter("property"):
            props.setdefault(p.get("name"), []).append(p.get("value"))
        props["system-out"] = [e.text or "" for e in case.iter("system-out")]
        out[case.get("name")] = props
    return out


@pytest.fixture
def ran(suite):
    result = suite.runpytest("--rig", "rig.yaml", "--junitxml=out.xml", "-o", "junit_logging=system-out", "-rs")
    return suite, result


def test_every_test_case_carries_the_board_properties_in_the_junit_xml(ran):
    suite, result = ran
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    got = cases(suite.path / "out.xml")
    props = got["test_flaky_step[picow-idle]"]
    assert {k: v for k, v in props.items() if k != "system-out"} == {
        "board": ["picow-idle"], "board_type": ["picow"], "board_kind": ["usb"],
        "board_serial": ["/dev/edge-test-picow-idle"],       # no such USB device: its port
        "firmware": ["unknown"], "agent_version": ["unknown"],
        "git_revision": props["git_revision"], "retries": ["2"]}
    assert props["git_revision"] != [""]
    # Recorded by a test, kept once, and known for the board's later tests.
    assert got["test_versions[esp32-loop]"]["firmware"] == ["1.29.0"]
    assert got["test_flaky_step[esp32-loop]"]["firmware"] == ["1.29.0"]
    assert got["test_flaky_step[esp32-loop]"]["agent_version"] == ["0.1.0"]


def test_a_failing_test_gets_the_console_since_it_began_in_the_terminal_and_the_xml(ran):
    suite, result = ran
    out = result.stdout.str()
    assert "Captured stdout: console of esp32-loop since the test began" in out
    assert "rst: the board's boot banner" in out
    system_out = "".join(cases(suite.path / "out.xml")["test_echo_fails[esp32-loop]"]["system-out"])
    assert "rst: the board's boot banner" in system_out
    # Only on a failure.
    assert "console of esp32-loop" not in "".join(cases(suite.path / "out.xml")["test_versions[esp32-loop]"]["system-out"])


def test_the_run_ends_with_a_table_per_board_and_the_retried_steps(ran):
    _, result = ran
    result.stdout.re_match_lines([
        r"=+ rig bench-r =+",
        r"board\s+type\s+kind\s+passed\s+failed\s+skipped\s+retries$",
        r"esp32-loop\s+esp32\s+usb\s+2\s+1\s+0\s+2$",
        r"picow-idle\s+picow\s+usb\s+1\s+0\s+0\s+2$",
        r"1 test\(s\) skipped: no board of the rig matches their markers",
        r"esp32-loop: test_flaky_step\[esp32-loop\]: retried open the port \(attempt 1 of 3: the port glitched\)",
    ])


def test_a_power_test_is_skipped_when_nobody_can_switch_the_board(ran):
    _, result = ran
    result.stdout.fnmatch_lines(["*no board of rig bench-r has power: esp32-loop lacks power; "
                                 "picow-idle lacks power*"])


def test_a_manual_board_has_power_when_the_run_has_answers(suite):
    suite.path.joinpath("answers.txt").write_text("done\ndone\n")
    result = suite.runpytest("--rig", "rig.yaml", "--rig-answers", "answers.txt", "-k", "test_power")
    result.assert_outcomes(passed=2)


HOLD = """
import sys, time
from edge_hil.locks import BoardLock
BoardLock("bench-r", "picow-idle").acquire(timeout=30)
print("held", flush=True)
time.sleep(600)
"""


def test_a_board_another_process_holds_fails_the_test_naming_the_holder(suite, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "EDGE_RUN_DIR": str(tmp_path / "run")})
    try:
        assert holder.stdout.readline().strip() == "held"
        result = suite.runpytest("--rig", "rig.yaml", "--rig-lock-wait", "0.3", "-k", "test_flaky_step")
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines([f"*board picow-idle of rig bench-r is held by pid {holder.pid}*"])
    finally:
        holder.kill()
        holder.wait()
    result = suite.runpytest("--rig", "rig.yaml", "-k", "test_flaky_step")
    result.assert_outcomes(passed=2)
