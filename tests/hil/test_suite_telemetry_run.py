"""The telemetry suite, run as QA runs it, on a rig of three virtual boards (esp32, esp32c3, picow)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.hil.suite_run import failures, run_suite, whole_run


@whole_run
def test_the_telemetry_suite_passes_on_a_rig_of_virtual_boards(tmp_path):
    xml = tmp_path / "telemetry.xml"
    proc = run_suite("test_telemetry.py", f"--junitxml={xml}")
    assert proc.returncode == 0, failures(proc)
    # Every test on every board, but the full flash: on the first virtual board only (its docstring says why).
    assert "28 passed, 2 skipped" in proc.stdout, proc.stdout[-2000:]
    cases = list(ET.parse(xml).iter("testcase"))
    ran = [c for c in cases if c.find("skipped") is None]
    assert len(ran) == 28
    for case in ran:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        # Each test counted its window from the device's own journal: nothing lost, nothing twice.
        assert props["records_lost"] == "0" and props["records_duplicated"] == "0", (case.get("name"), props)
        assert int(props["records_stored"]) > 0
    names = " ".join(c.get("name") for c in ran)
    # Per board: reset and power cut over serial and over BLE, a lost serial link, a dropped BLE link.
    for fault, times in (("reset", 6), ("power_cut", 6), ("link_lost", 3), ("ble_drop", 3)):
        assert names.count(f"-{fault}]") == times, (fault, names)


@pytest.mark.slow
def test_the_benchs_fault_requests_move_the_clock_drop_ble_fill_the_folder_and_refuse_bad_input(bench):
    """The bench side of faults.clock_jump, ble_drop and fill_fs, and what each refuses."""
    from edge_agent.errors import DeviceError
    from edge_hil.virtual.full_fs import CannotFill, FullFs

    name = bench.up("esp32")[0]["name"]
    control = bench.control
    home = Path(control.board(name)["fs"]).parent
    assert control.clock_jump(name, 2) == 2000
    assert control.clock_jump(name, 0.5) == 2500          # the offset adds up
    assert (home / "clock-offset").read_bytes().strip() == b"2500"
    for bad in (0, -1, "soon", True, None):
        with pytest.raises(DeviceError, match="a clock jump is a positive number of ms"):
            control.request("clock_jump", board=name, ms=bad)
    with pytest.raises(DeviceError, match="no board named"):
        control.request("clock_jump", board="nope", ms=5)
    control.ble_drop(name)                                 # nobody connected: nothing to drop, no error
    control.power_off(name)
    with pytest.raises(DeviceError, match="has no BLE radio running"):
        control.ble_drop(name)
    control.power_on(name)
    full = FullFs(control, name)
    try:
        filler = full.fill(leave=8192)
    except CannotFill as e:
        pytest.skip(f"{e.message} ({e.hint})")
    try:
        assert filler > 0
        st = os.statvfs(full.folder)
        assert st.f_bavail * st.f_frsize <= 8192
        assert (full.folder / "config.json").exists(), "the board's files moved with it"
        full.free()
        assert not (full.folder / "filler.bin").exists()
    finally:
        full.restore()
    assert not os.path.ismount(full.folder) and (full.folder / "config.json").exists()
    assert control.mode(name) == "micropython"
