"""The HIL plugin's options and markers (pytester): which boards a test runs on, and why it is skipped.

The rigs here are of USB boards at ports nothing opens: choosing boards
happens at collection, before any driver is made.
"""

from __future__ import annotations

import pytest

from tests.hil.rig_pytester import INI, rig_project

pytest_plugins = ["pytester"]

RIG = """\
rig: 1
name: bench-t
boards:
  - name: esp32-a
    board: esp32
    port: /dev/edge-test-esp32-a
    ble: {address: "C0:FF:EE:00:00:01"}
  - name: esp32-b
    board: esp32
    port: /dev/edge-test-esp32-b
  - name: picow-a
    board: picow
    port: /dev/edge-test-picow-a
"""

SUITE = """\
import pytest

def test_any(board):
    pass

@pytest.mark.boards("picow")
def test_picow_only(board):
    pass

@pytest.mark.needs("ble")
def test_ble(board):
    pass

@pytest.mark.boards("picow")
@pytest.mark.needs("ble")
def test_picow_ble(board):
    pass

@pytest.mark.boards("esp32c3")
def test_esp32c3(board):
    pass

def test_no_rig_needed():
    pass
"""


@pytest.fixture
def suite(pytester, tmp_path, monkeypatch):
    return rig_project(pytester, monkeypatch, tmp_path / "run", RIG, SUITE)


def collected(result) -> list[str]:
    return sorted(line.split("::", 1)[1] for line in result.outlines if "::" in line)


def test_without_a_rig_the_rig_tests_are_skipped_with_the_reason_and_others_run(suite):
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*no rig: run with --rig RIGFILE (docs/hil.md)*"])
    assert "rig bench-t" not in result.stdout.str()


def test_a_run_without_the_rig_fixtures_is_untouched(pytester):
    pytester.makeini(INI)
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    assert "test_plain PASSED" in result.stdout.str()
    assert "rig" not in result.stdout.str().split("PASSED", 1)[1]


def test_each_test_runs_on_the_boards_its_markers_match_with_board_names_as_ids(suite):
    result = suite.runpytest("--rig", "rig.yaml", "--collect-only", "-q")
    assert collected(result) == [
        "test_any[esp32-a]", "test_any[esp32-b]", "test_any[picow-a]",
        "test_ble[esp32-a]",          # the rig names esp32-a's BLE address only
        "test_esp32c3[no-board]",
        "test_no_rig_needed",
        "test_picow_ble[no-board]",
        "test_picow_only[picow-a]",
    ]


def test_a_test_no_board_matches_is_skipped_naming_what_is_missing(suite):
    result = suite.runpytest("--rig", "rig.yaml", "-rs", "-k", "esp32c3 or picow_ble")
    result.assert_outcomes(skipped=2)
    out = result.stdout.str()
    assert "no board of type esp32c3 in rig bench-t (it has esp32, picow)" in out
    assert "no board of rig bench-t has ble: picow-a lacks ble" in out


def test_rig_board_keeps_only_the_boards_named(suite):
    result = suite.runpytest("--rig", "rig.yaml", "--rig-board", "esp32-b", "--rig-board", "picow-a",
                             "--collect-only", "-q", "-k", "any or ble")
    assert collected(result) == ["test_any[esp32-b]", "test_any[picow-a]", "test_ble[no-board]",
                                 "test_picow_ble[no-board]"]


def test_an_unknown_rig_board_is_a_usage_error_listing_the_boards(suite):
    result = suite.runpytest("--rig", "rig.yaml", "--rig-board", "esp32-z")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rig-board esp32-z: no such board in rig bench-t*",
                                 "*fix: boards: esp32-a, esp32-b, picow-a*"])


def test_a_bad_rig_file_stops_the_run_naming_its_line(suite):
    suite.makefile(".yaml", bad=RIG.replace("board: picow", "board: picoww").replace("- name: esp32-b", "- name: esp32-a"))
    result = suite.runpytest("--rig", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "bad.yaml:8: boards[1].name: 'esp32-a' is already the name of boards[0]" in err
    assert "bad.yaml:12: boards[2].board: unknown board type 'picoww'" in err
    assert result.stdout.str().count("passed") == 0


@pytest.mark.parametrize("rigfile, text", [
    ("absent.yaml", "rig file absent.yaml does not exist"),
    ("empty.yaml", "empty.yaml"),
    ("truncated.yaml", "truncated.yaml:"),
])
def test_a_missing_empty_or_truncated_rig_file_is_a_usage_error(suite, rigfile, text):
    suite.makefile(".yaml", empty="")
    suite.makefile(".yaml", truncated=RIG[:RIG.index("EE:00")])
    result = suite.runpytest("--rig", rigfile)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert text in result.stderr.str()


def test_a_missing_answers_file_is_a_usage_error(suite):
    result = suite.runpytest("--rig", "rig.yaml", "--rig-answers", "nowhere.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rig-answers nowhere.txt: no such file*"])


@pytest.mark.parametrize("marker, text", [
    ('boards("esp33")', "@pytest.mark.boards names no board type 'esp33'; board types: "),
    ('needs("blee", "power")', "@pytest.mark.needs names no capability 'blee'; capabilities: console, reset, power"),
    ("boards(32)", "@pytest.mark.boards takes names (text), not 32"),
    ("needs()", "@pytest.mark.needs takes one or more names"),
    ('boards(type="esp32")', "@pytest.mark.boards takes one or more names"),
])
def test_a_marker_that_names_nothing_known_fails_collection_with_or_without_a_rig(suite, marker, text):
    suite.makepyfile(test_typo=f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(board):\n    pass\n")
    for args in ((), ("--rig", "rig.yaml")):
        result = suite.runpytest("test_typo.py", *args)
        assert result.ret == pytest.ExitCode.INTERRUPTED
        assert text in result.stdout.str()
        assert "test_typo.py::test_x" in result.stdout.str()


def test_each_board_is_its_own_xdist_group(suite):
    items, _ = suite.inline_genitems("--rig", "rig.yaml")
    groups = {i.name: [m.args[0] for m in i.iter_markers("xdist_group")] for i in items if "test_any" in i.name}
    assert groups == {"test_any[esp32-a]": ["bench-t:esp32-a"], "test_any[esp32-b]": ["bench-t:esp32-b"],
                      "test_any[picow-a]": ["bench-t:picow-a"]}
