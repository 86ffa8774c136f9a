"""The device's filesystem layout is defined once (edge_agent.device_fs): a
board set up by `edge sim up` and one set up by `edge flash` hold the same
files with the same bytes, and the firmware reads the paths the host writes."""

from __future__ import annotations

import json
import re

from edge_agent import device_fs
from edge_agent.boards import load_board
from edge_agent.flash import Builds
from edge_agent.paths import FIRMWARE_DIR, REPO
from edge_hil.virtual.fs import install_firmware


def test_sim_up_and_edge_flash_put_the_same_agent_and_board_file_on_a_board(tmp_path):
    fs = tmp_path / "fs"
    install_firmware(fs, "esp32c3", "esp32c3-1-abcdef")
    with Builds() as builds:
        bundle = builds.bundle(load_board("esp32c3"), None)
    for path, data in bundle.files:
        assert (fs / path).read_bytes() == data, path
    on_board = sorted(p.relative_to(fs).as_posix() for p in fs.rglob("*") if p.is_file())
    assert on_board == sorted([p for p, _ in bundle.files] + [device_fs.CONFIG_JSON])
    config = json.loads((fs / device_fs.CONFIG_JSON).read_text())
    assert config == {"device_id": "esp32c3-1-abcdef", "board": "esp32c3", **device_fs.BENCH_CONFIG}


def test_the_test_devices_get_the_same_board_file_bytes(tmp_path):
    from tests.device import install

    fs = install(tmp_path / "fs", "picow", "picow-1")
    assert (fs / device_fs.BOARD_JSON).read_bytes() == device_fs.board_json(load_board("picow"))


def test_the_firmware_reads_the_paths_the_host_writes():
    sources = "\n".join(p.read_text() for p in (FIRMWARE_DIR / "edgefw").rglob("*.py"))
    for path in (device_fs.BOARD_JSON, device_fs.CONFIG_JSON, device_fs.CRASHES, device_fs.JOURNAL_DIR,
                 *(p.split("/", 1)[1] for p in device_fs.IDENTITY_FILES)):
        assert re.search(r"[\"']%s[\"']" % re.escape(path), sources), f"the firmware never names {path}"
    assert (FIRMWARE_DIR / device_fs.MAIN_PY).is_file() and (FIRMWARE_DIR / device_fs.PACKAGE_DIR).is_dir()


def test_no_module_but_device_fs_spells_the_layout():
    allowed = {REPO / "agent" / "device_fs.py"}
    for root in ("agent", "hil"):
        for py in (REPO / root).rglob("*.py"):
            if py in allowed or py.name in ("runner.py", "vmachine.py"):
                continue
            code = py.read_text()
            for path in ("board.json", "config.json", "state/crashes"):
                assert not re.search(r"[\"'/]%s[\"']" % re.escape(path), code), f"{py} spells {path!r}"
