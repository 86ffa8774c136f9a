"""The pairing suite run as QA runs it on three virtual boards (slow), and how a suite reads a board's
label (hil.rig.strategy.label_payload): printed once by `edge label`, read back from it after."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.errors import DeviceError
from edge_agent.label import render
from edge_hil.rig.strategy import label_payload
from tests.hil.suite_run import run_suite_passing, whole_run

DEVICE = "esp32-0a0b0c0d0e0f"
PAYLOAD = "EA1:ESP32-0A0B0C0D0E0F:12345678:0A0B0C0D0E0F0A0B:ESP32"


@whole_run
def test_the_pairing_suite_passes_on_a_rig_of_virtual_boards(tmp_path):
    run_suite_passing("test_pairing.py", tmp_path, {"sim-esp32": 5, "sim-esp32c3": 5, "sim-picow": 5})


@pytest.mark.slow
def test_a_board_the_pairing_suite_leaves_is_paired_again_by_the_suites_that_run_after_it(tmp_path):
    """QA runs every suite in one run: the pairing suite's last test leaves the board bonded to
    another owner's host; the BLE telemetry after it must still pair it with the run's host."""
    out = run_suite_passing("test_pairing.py test_telemetry.py", tmp_path, {"sim-esp32": 2},
                            "--rig-board", "sim-esp32", "-v", "-k", "unpair_tells or (ble_each and reset)")
    assert "test_unpair_tells_the_device" in out and "ble_each_record_is_stored_once_across" in out, out[-2000:]


def host_in(folder: Path, label: dict | None = None, code: int = 0):
    """A host whose `edge label` prints ``label`` (writing its files as the command does) and exits ``code``."""
    said = []

    def edge(*args, **kw):
        said.append(args)
        if code == 0:
            render(folder, DEVICE, "esp32", "12345678", "0a0b0c0d0e0f0a0b")
        return SimpleNamespace(returncode=code, stdout=json.dumps(label or {}),
                               stderr="error: the setup code was already printed")
    return SimpleNamespace(env={"EDGE_HOME": str(folder)}, edge=edge, said=said)


def test_the_first_pairing_prints_the_label_and_later_ones_read_it_back(tmp_path):
    host = host_in(tmp_path, {"payload": PAYLOAD})
    assert label_payload(host, DEVICE) == PAYLOAD
    assert host.said == [("label", DEVICE, "--json", "--no-terminal", "--out", str(tmp_path))]
    assert label_payload(host, DEVICE) == PAYLOAD          # from the label's file: no second `edge label`
    assert len(host.said) == 1


def test_a_code_printed_before_this_run_names_the_way_out(tmp_path):
    with pytest.raises(DeviceError) as e:
        label_payload(host_in(tmp_path, code=3), DEVICE)
    assert "already printed" in e.value.message and "--reprovision" in e.value.hint


@pytest.mark.parametrize("svg", [
    '<svg xmlns="http://www.w3.org/2000/svg"><title>x</title></svg>',          # no payload
    '<svg xmlns="http://www.w3.org/2000/svg"><desc></desc></svg>',             # an empty one
    '<svg xmlns="http://www.w3.org/2000/svg"><desc>EA1:ESP32',                 # cut short
])
def test_a_label_without_its_payload_is_an_error_naming_the_file(tmp_path, svg):
    (tmp_path / f"{DEVICE}.svg").write_text(svg)
    with pytest.raises(DeviceError, match=f"{DEVICE}.svg carries no pairing payload"):
        label_payload(host_in(tmp_path), DEVICE)
