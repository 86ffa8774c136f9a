"""`edge flash`: boards found by USB id or on a virtual bench, the agent
deployed as .mpy, an identity minted, the self-test read back, and the
registry marking a board provisioned only when all of it passed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from edge_agent.board_link import BoardLink
from edge_agent.boards import load_board
from edge_agent.discover import board_from_platform, serial_candidates, usb_table
from edge_agent.errors import EXIT_PARTIAL, BadInput, DeviceError
from edge_agent.flash import Target, check_image, check_micropython, flash_board
from edge_agent.store import Store
from edge_hil.virtual.drivers import board as virtual_board


# -- discovery (no boards needed) ------------------------------------------------

def port(device: str, vid: int | None, pid: int | None, desc: str = "") -> ListPortInfo:
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description = vid, pid, desc
    return p


def test_discovery_keeps_only_ports_whose_usb_id_a_board_file_lists():
    ports = [port("/dev/ttyACM0", 0x2E8A, 0x0005, "Board in FS mode"),
             port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102"),
             port("/dev/ttyACM1", 0x303A, 0x1001, "USB JTAG/serial debug unit"),
             port("/dev/ttyS0", None, None, "ttyS0"),                 # a built-in UART
             port("/dev/ttyUSB1", 0x067B, 0x2303, "PL2303")]          # a bridge no board uses
    found = {c.port: c for c in serial_candidates(ports)}
    assert sorted(found) == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0"]
    # MicroPython's rp2 USB id is the same on a Pico and a Pico W: the board
    # tells which when asked (board_from_platform, below).
    assert found["/dev/ttyACM0"].board is None and set(found["/dev/ttyACM0"].choices) == {"pico", "picow"}
    assert found["/dev/ttyACM0"].usb_id == "2e8a:0005"
    # A CP210x sits on every ESP32 variant: the board type stays open.
    assert found["/dev/ttyUSB0"].board is None
    assert {"esp32", "esp32c3"} <= set(found["/dev/ttyUSB0"].choices)
    assert "esp32c3" in found["/dev/ttyACM1"].choices


def test_every_usb_id_of_the_issue_maps_to_a_board():
    table = usb_table()
    for vid, pid in [(0x10C4, 0xEA60), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x0403, 0x6001),
                     (0x0403, 0x6015), (0x2E8A, 0x0005)]:
        assert table.get((vid, pid)), f"{vid:04x}:{pid:04x} is in no board file"
    assert any(vid == 0x303A for vid, _ in table), "no board lists Espressif's native USB"


def test_a_board_names_its_type_through_sys_platform_and_machine():
    assert board_from_platform("esp32", "Generic ESP32C3 module with ESP32C3") == "esp32c3"
    assert board_from_platform("esp32", "Generic ESP32S3 module with ESP32S3") == "esp32s3"
    assert board_from_platform("esp32", "Generic ESP32 module with ESP32") == "esp32"
    assert board_from_platform("rp2", "Raspberry Pi Pico W with RP2040") == "picow"
    assert board_from_platform("rp2", "Raspberry Pi Pico with RP2040") == "pico"
    assert board_from_platform("rp2", "Raspberry Pi Pico2 with RP2350") is None   # no Pico 2 file
    assert board_from_platform("esp32", "Generic ESP32 module with ESP32", ["picow"]) is None


# -- checks that refuse before touching a board ------------------------------------

class IdentityLink:
    """Answers the identity probe as a board whose MicroPython says ``platform``/``machine``."""

    port = "/dev/ttyFAKE"

    def __init__(self, platform, machine):
        self.out = f"{platform}\r\n{machine}\r\n"

    def exec(self, code, timeout=10):
        return self.out


def test_a_board_is_accepted_only_as_the_type_it_says_it_is():
    from edge_agent.flash import check_board_type

    pico = IdentityLink("rp2", "Raspberry Pi Pico W with RP2040")
    check_board_type(pico, Target("b", "/dev/ttyACM0", "picow"), load_board("picow"))
    with pytest.raises(BadInput) as e:
        check_board_type(pico, Target("b", "/dev/ttyACM0", "esp32"), load_board("esp32"))
    assert e.value.exit_code == 5
    assert "esp32" in e.value.message and "picow" in e.value.message
    assert "--board picow" in e.value.hint
    # The chip decides among the ESP32 family.
    c3 = IdentityLink("esp32", "Generic ESP32C3 module with ESP32C3")
    check_board_type(c3, Target("b", "/dev/ttyACM0", "esp32c3"), load_board("esp32c3"))
    with pytest.raises(BadInput) as e:
        check_board_type(c3, Target("b", "/dev/ttyACM0", "esp32"), load_board("esp32"))
    assert "--board esp32c3" in e.value.hint



class FakeLink:
    """Answers the MicroPython probe like a board whose sys.implementation._mpy is ``mpy``."""

    port = "/dev/ttyFAKE"

    def __init__(self, name="micropython", mpy=0x0B06, release="1.22.0"):
        self.out = f"{name}\r\n{mpy}\r\n{release}\r\n"

    def exec(self, code, timeout=10):
        return self.out


def test_a_board_with_another_mpy_version_is_refused_naming_both_versions():
    t = Target("b", "/dev/ttyFAKE", "esp32")
    with pytest.raises(DeviceError) as e:
        check_micropython(FakeLink(mpy=0x0A05, release="1.19.1"), t, (6, 0, 0))
    assert "version 5" in e.value.message and "version 6" in e.value.message
    assert "--firmware" in e.value.hint
    assert check_micropython(FakeLink(mpy=0x0B06), t, (6, 0, 0)) == "1.22.0"
    # Native code also needs the sub-version and architecture to match.
    with pytest.raises(DeviceError):
        check_micropython(FakeLink(mpy=0x0A06), t, (6, 3, 2))
    with pytest.raises(DeviceError, match="does not run MicroPython"):
        check_micropython(FakeLink(name="cpython"), t, (6, 0, 0))


def test_images_of_the_wrong_kind_or_too_big_are_refused(tmp_path):
    esp32 = load_board("esp32")
    good = tmp_path / "fw.bin"
    good.write_bytes(b"\xe9" + bytes(65535))
    assert len(check_image(esp32, good)) == 65536
    uf2 = tmp_path / "fw.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(508))
    with pytest.raises(BadInput, match="not an ESP firmware image"):
        check_image(esp32, uf2)
    with pytest.raises(BadInput, match="not a UF2"):
        check_image(load_board("picow"), good)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\xe9" + bytes(esp32["flash"]["firmware_max"]))
    with pytest.raises(BadInput) as e:
        check_image(esp32, big)
    assert str(esp32["flash"]["firmware_max"]) in e.value.message or "fit" in e.value.message


# -- the command, against virtual boards ---------------------------------------------

def bundle_size() -> int:
    """How many files `edge flash` deploys: the agent's modules, main.py and board.json."""
    from edge_agent.flash import Builds

    with Builds() as builds:
        return len(builds.bundle(load_board("esp32"), None).files)


def test_flash_all_brings_three_blank_boards_to_provisioned_and_streaming(bench, tmp_path):
    boards = bench.up("esp32", "esp32c3", "picow", blank=True)
    assert not any(Path(b["fs"], "main.py").exists() for b in boards), "boards start blank"
    out = bench.edge("flash", "--all", "--json")
    results = json.loads(out.stdout)
    assert [r["name"] for r in results] == ["esp32-1", "esp32c3-1", "picow-1"]
    for r, b in zip(results, boards):
        assert r["ok"], r
        assert r["device_id"].startswith(b["board"] + "-")
        assert r["steps"] == ["check", "deploy", "provision", "selftest", "register"]
        assert r["selftest"]["sensor_errors"] == [] and r["selftest"]["sensors"] > 0
        fs = Path(b["fs"])
        assert (fs / "edgefw" / "boot.mpy").read_bytes()[:2] == b"M\x06"
        assert not list((fs / "edgefw").glob("*.py")), "the agent goes on as bytecode"
        assert json.loads((fs / "config.json").read_text())["device_id"] == r["device_id"]
        assert json.loads((fs / "board.json").read_text())["name"] == b["board"]
    ids = [r["device_id"] for r in results]
    store = Store(bench.db)
    try:
        for r in results:
            ident = store.identity(r["device_id"])
            assert ident["provisioned"] and ident["agent_version"] == r["selftest"]["version"]
            assert ident["firmware_version"]
    finally:
        store.close()

    # The label of a new identity renders.
    bench.edge("label", ids[0], "--out", str(tmp_path / "labels"))
    assert list((tmp_path / "labels").glob("*.png")) and list((tmp_path / "labels").glob("*.svg"))

    # Each board runs the agent: its telemetry reaches the registry.
    out = bench.edge("telemetry", "ingest", "--sim", "--for", "5", "--json", timeout=60)
    store = Store(bench.db)
    try:
        for d in ids:
            assert len(list(store.query(device=d))) > 0, f"no telemetry from {d}"
    finally:
        store.close()

    # Again: nothing to copy, same identities, still provisioned.
    again = json.loads(bench.edge("flash", "--all", "--json").stdout)
    assert [r["device_id"] for r in again] == ids
    for r in again:
        assert r["ok"] and r["files_copied"] == 0 and r["files_skipped"] == bundle_size()
        assert not r["identity_created"]


def test_a_table_of_results_by_default(bench):
    bench.up("esp32c3", blank=True)
    out = bench.edge("flash", "--all").stdout
    assert "esp32c3-1" in out and "ok" in out and "device id" in out


def power_cut_at(bench_dir, name, step, after_bytes=0):
    from edge_hil.virtual.control import Bench
    bench = Bench(bench_dir)
    done = []

    def progress(s, d, n):
        if s == step and not done and d >= after_bytes:
            done.append(d)
            bench.power_off(name)
    return bench, progress


@pytest.mark.parametrize("step, after", [("deploy", 6000), ("selftest", 0)])
def test_a_board_that_loses_power_is_reported_failed_not_provisioned_and_a_rerun_completes_it(bench, step, after):
    board = bench.up("esp32", blank=True)[0]
    control, progress = power_cut_at(bench.sim_dir, board["name"], step, after_bytes=after)
    target = Target(board["name"], board["port"], "esp32", virtual_board(bench.sim_dir, board["name"]))
    r = flash_board(target, bench.db, progress=progress, io_timeout=1.5, selftest_timeout=4)
    assert not r.ok and r.failed_step == step, r
    assert r.error and r.hint
    store = Store(bench.db)
    try:
        ident = store.identity(r.device_id) if r.device_id else None
        assert ident is None or not ident["provisioned"]
    finally:
        store.close()

    control.power_on(board["name"])
    out = bench.edge("flash", "--port", board["port"], "--json")
    (again,) = json.loads(out.stdout)
    assert again["ok"], (again["failed_step"], again["error"])
    if step == "selftest":
        assert again["device_id"] == r.device_id and not again["identity_created"]
    store = Store(bench.db)
    try:
        assert store.identity(again["device_id"])["provisioned"]
    finally:
        store.close()


def test_a_deploy_cut_after_half_the_files_resumes_with_the_copied_files_skipped(bench, monkeypatch):
    board = bench.up("picow", blank=True)[0]
    target = Target(board["name"], board["port"], "picow", virtual_board(bench.sim_dir, board["name"]))
    real_put = BoardLink.put
    puts: list[str] = []

    def failing_put(self, remote, data, progress=None):
        if len(puts) == 10:
            raise DeviceError(f"writing {remote} on {self.port} failed (cable pulled)", "retry")
        real_put(self, remote, data, progress)
        puts.append(remote)

    monkeypatch.setattr(BoardLink, "put", failing_put)
    r = flash_board(target, bench.db)
    assert not r.ok and r.failed_step == "deploy" and "cable pulled" in r.error
    assert r.files_copied == 10 and r.device_id is None
    assert not (Path(board["fs"]) / "config.json").exists()
    monkeypatch.setattr(BoardLink, "put", real_put)

    r = flash_board(target, bench.db)
    assert r.ok, r
    assert r.files_skipped == 10 and r.files_copied == bundle_size() - 10
    store = Store(bench.db)
    try:
        assert store.identity(r.device_id)["provisioned"]
    finally:
        store.close()


def test_one_failing_board_does_not_stop_the_others_and_the_exit_code_says_partial(bench):
    boards = bench.up("esp32", "picow", blank=True)
    bench.edge("sim", "power", boards[1]["name"], "off")
    proc = bench.edge("flash", "--all", "--json", check=False)
    assert proc.returncode == EXIT_PARTIAL, proc.stderr
    results = {r["name"]: r for r in json.loads(proc.stdout)}
    assert results["esp32-1"]["ok"]
    bad = results["picow-1"]
    assert not bad["ok"] and bad["failed_step"] == "check"
    assert "powered off" in bad["error"] and "edge sim power picow-1 on" in bad["hint"]


def test_a_wrong_board_name_lists_the_known_ones(bench):
    proc = bench.edge("flash", "--board", "esp33", "--port", "/dev/null", check=False)
    assert proc.returncode == 3
    assert "unknown board 'esp33'" in proc.stderr and "esp32c3" in proc.stderr and "picow" in proc.stderr


def test_an_absent_port_is_named_with_the_fix(bench):
    proc = bench.edge("flash", "--board", "esp32", "--port", "/dev/ttyUSB97", check=False)
    assert proc.returncode == 3
    assert "/dev/ttyUSB97 does not exist" in proc.stderr and "fix:" in proc.stderr


def test_a_raspberry_pi_gets_instructions_not_a_pretend_flash(bench):
    proc = bench.edge("flash", "--board", "rpi", "--port", "/dev/ttyUSB0", check=False)
    assert proc.returncode != 0
    assert "CPython" in proc.stderr and "pip install" in proc.stderr and "firmware/main.py" in proc.stderr


def test_no_board_anywhere_says_how_to_get_one(bench):
    proc = bench.edge("flash", "--all", check=False)
    assert proc.returncode == 3 and "no board found" in proc.stderr


# -- with a MicroPython image: esptool and the BOOTSEL drive ---------------------------

def uf2_image(data: bytes) -> bytes:
    """``data`` as RP2040 UF2 blocks (256-byte payloads at 0x10000000 + offset)."""
    import struct

    n = len(data) // 256
    out = bytearray()
    for i in range(n):
        block = struct.pack("<8I", 0x0A324655, 0x9E5D5157, 0x2000, 0x10000000 + 256 * i, 256, i, n,
                            0xE48BFF56) + data[256 * i:256 * (i + 1)]
        out += block + bytes(508 - len(block)) + struct.pack("<I", 0x0AB16F30)
    return bytes(out)


def test_a_pico_w_gets_its_uf2_through_the_bootsel_drive_then_the_agent(bench, tmp_path):
    import hashlib

    board = bench.up("picow", blank=True)[0]
    image = os.urandom(32 * 1024)
    fw = tmp_path / "micropython.uf2"
    fw.write_bytes(uf2_image(image))
    (r,) = json.loads(bench.edge("flash", "--port", board["port"], "--firmware", str(fw), "--json").stdout)
    assert r["ok"] and r["steps"][0] == "firmware", r
    last = bench.control.flash_record(board["name"])["last"]
    assert last["via"] == "uf2" and last["sha256"] == hashlib.sha256(image).hexdigest()


@pytest.mark.slow
def test_an_esp32_gets_its_image_through_esptool_then_the_agent(bench, tmp_path):
    import hashlib

    board = bench.up("esp32", blank=True)[0]
    image = b"\xe9" + os.urandom(16 * 1024 - 1)
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(image)
    (r,) = json.loads(bench.edge("flash", "--port", board["port"], "--firmware", str(fw), "--json",
                           timeout=120).stdout)
    assert r["ok"] and r["steps"][0] == "firmware", r
    last = bench.control.flash_record(board["name"])["last"]
    assert last["offset"] == 0x1000 and last["sha256"] == hashlib.sha256(image).hexdigest()
    assert bench.control.mode(board["name"]) == "micropython"


def test_a_pico_w_flashed_as_an_esp32_fails_the_check_and_is_not_registered(bench, tmp_path):
    # The board is reached as a plain serial port (no bench in --sim-dir), as a
    # real Pico W on /dev/ttyACM0 is: only what the board says can tell.
    board = bench.up("picow", blank=True)[0]
    proc = bench.edge("flash", "--port", board["port"], "--board", "esp32", "--sim-dir", str(tmp_path / "none"),
                "--json", check=False)
    assert proc.returncode == 5, proc.stderr
    (r,) = json.loads(proc.stdout)
    assert not r["ok"] and r["failed_step"] == "check"
    assert "esp32" in r["error"] and "picow" in r["error"] and "--board picow" in r["hint"]
    assert r["device_id"] is None
    with Store(bench.db) as store:
        assert store.devices() == []
    # Named as what it is, the same board flashes.
    (r,) = json.loads(bench.edge("flash", "--port", board["port"], "--board", "picow", "--sim-dir",
                           str(tmp_path / "none"), "--json").stdout)
    assert r["ok"], r


def test_an_esp_board_left_in_download_mode_is_named_as_such(bench):
    board = bench.up("esp32c3", blank=True)[0]
    bench.control.download_mode(board["name"])
    proc = bench.edge("flash", "--port", board["port"], check=False)
    assert proc.returncode == 6
    assert "download mode" in proc.stderr and f"edge sim reset {board['name']}" in proc.stderr


def test_a_port_held_by_another_program_is_named_busy(bench):
    import serial

    board = bench.up("esp32", blank=True)[0]
    holder = serial.Serial(board["port"], exclusive=True)  # a serial monitor left open
    try:
        proc = bench.edge("flash", "--board", "esp32", "--port", board["port"], check=False)
    finally:
        holder.close()
    assert proc.returncode in (4, 7), proc.stderr + proc.stdout
    assert "in use" in (proc.stderr + proc.stdout) and "fix" in (proc.stderr + proc.stdout)


def test_a_board_in_safe_mode_after_repeated_crashes_is_brought_back_by_edge_flash(bench):
    import struct
    import zlib

    import cbor2

    board = bench.up("esp32c3", blank=True)[0]
    (first,) = json.loads(bench.edge("flash", "--port", board["port"], "--json").stdout)
    assert first["ok"], first
    # Three crashes in a row, as state/crashes records them (atomic file:
    # data, then its CRC-32): the next boot stops in safe mode.
    data = cbor2.dumps([3, "RuntimeError('boom')"])
    crashes = Path(board["fs"], "state", "crashes")
    crashes.write_bytes(data + struct.pack(">I", zlib.crc32(data)))
    bench.edge("sim", "reset", board["name"])
    out = bench.edge("flash", "--port", board["port"], "--json", check=False)
    (again,) = json.loads(out.stdout)
    assert again["ok"], (again["failed_step"], again["error"])
    assert again["device_id"] == first["device_id"]
    assert not crashes.exists()


def test_a_board_session_starts_from_a_clean_heap_not_one_the_stopped_agent_holds(bench):
    board = bench.up("esp32", blank=True)[0]
    (first,) = json.loads(bench.edge("flash", "--port", board["port"], "--json").stdout)
    assert first["ok"], first
    # The agent runs and holds much of the heap; a session (deploy, provision)
    # must still have most of the board's budget for itself.
    budget = load_board("esp32")["heap_bytes"]
    with BoardLink(board["port"]) as link:
        out = link.exec(f"b = bytearray({int(budget * 0.6)})\nprint(len(b))")
    assert out.strip() == str(int(budget * 0.6))


# -- a board whose image has the agent frozen in ---------------------------------------

class FolderBoard:
    """A board link over a folder (its filesystem), each exec a fresh
    ``micropython`` there. ``frozen``, a folder holding an ``edgefw``
    package, stands for the modules frozen into its image: ``.frozen`` in
    code run on it names that folder, and it comes after the filesystem on
    ``sys.path``, as on an ESP32 or a Pico W."""

    port = "/dev/ttyFOLDER"

    def __init__(self, fs: Path, frozen: Path | None):
        self.fs, self.frozen = fs, frozen

    def exec(self, code, timeout=10):
        from tests.mpy import micropython_exe

        flash = str(self.frozen) if self.frozen else "/nonexistent-frozen"
        code = f"import sys\nsys.path[:] = ['', {flash!r}]\n" + code.replace("'.frozen'", repr(flash))
        proc = subprocess.run([micropython_exe(), "-c", code], cwd=self.fs, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "MICROPYPATH": ""})
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc.stdout

    def put(self, remote, data, progress=None):
        (self.fs / remote).parent.mkdir(parents=True, exist_ok=True)
        (self.fs / remote).write_bytes(data)

    def mkdir(self, remote):
        (self.fs / remote).mkdir(exist_ok=True)

    def get(self, remote):
        f = self.fs / remote
        return f.read_bytes() if f.exists() else None


def frozen_image(tmp_path: Path, version: str) -> Path:
    """A folder standing for an image with agent ``version`` frozen in."""
    flash = tmp_path / "flash"
    (flash / "edgefw").mkdir(parents=True)
    (flash / "edgefw" / "__init__.py").write_text(f'VERSION = "{version}"\nWHERE = "frozen"\n')
    return flash


def imported_from(board: FolderBoard) -> str:
    """Where the board's ``import edgefw`` finds the agent at boot."""
    return board.exec("import edgefw\nprint(getattr(edgefw, 'WHERE', 'filesystem'))").split()[-1]


def test_a_board_with_this_agent_frozen_in_its_image_gets_no_copy_that_would_shadow_it(tmp_path):
    from edge_agent.firmware import agent_version
    from edge_agent.flash import Builds, Result, deploy

    fs = tmp_path / "fs"
    fs.mkdir()
    board = FolderBoard(fs, frozen_image(tmp_path, agent_version()))
    # A copy from an earlier flash (before the image was built): it must go.
    board.put("edgefw/__init__.py", b'VERSION = "0.0.0"\n')
    board.put("edgefw/agent.py", b"old = 1\n")
    assert imported_from(board) == "filesystem"
    result = Result(Target("b", board.port, "esp32"))
    with Builds() as builds:
        bundle = builds.bundle(load_board("esp32"), None)
    copied, skipped, _ = deploy(board, bundle, lambda *a: None, result)
    assert result.frozen == agent_version() and result.warning is None
    assert sorted(p.name for p in fs.iterdir()) == ["board.json", "main.py", "stage0.mpy"]
    assert copied == 3 and skipped == 0
    assert imported_from(board) == "frozen"


def test_a_board_with_another_agent_version_frozen_gets_the_copy_and_a_warning(tmp_path):
    from edge_agent.flash import Builds, Result, deploy

    fs = tmp_path / "fs"
    fs.mkdir()
    board = FolderBoard(fs, frozen_image(tmp_path, "0.0.1"))
    result = Result(Target("b", board.port, "esp32"))
    with Builds() as builds:
        bundle = builds.bundle(load_board("esp32"), None)
    copied, _, _ = deploy(board, bundle, lambda *a: None, result)
    assert copied == len(bundle.files)
    assert result.frozen == "0.0.1"
    assert "shadows it" in result.warning and "--firmware" in result.warning
    assert imported_from(board) == "filesystem"


def test_a_board_with_nothing_frozen_gets_the_agent_copied(tmp_path):
    from edge_agent.flash import Builds, Result, deploy

    fs = tmp_path / "fs"
    fs.mkdir()
    board = FolderBoard(fs, None)
    result = Result(Target("b", board.port, "esp32"))
    with Builds() as builds:
        bundle = builds.bundle(load_board("esp32"), None)
    copied, _, _ = deploy(board, bundle, lambda *a: None, result)
    assert copied == len(bundle.files) and result.frozen is None and result.warning is None
    assert (fs / "edgefw" / "uplink.mpy").exists()


def test_a_reflash_returns_a_board_to_the_agent_it_deployed_keeping_counters_and_keys(tmp_path):
    import json
    import struct
    import zlib

    from edge_agent.flash import Builds, Result, deploy, factory_slot

    fs = tmp_path / "fs"
    (fs / "slots" / "b" / "edgefw").mkdir(parents=True)
    (fs / "slots" / "b" / "edgefw" / "__init__.py").write_text('VERSION = "9.9.9"\n')
    (fs / "ota").mkdir()
    (fs / "ota" / "keys.cose").write_bytes(b"key list")
    (fs / "ota" / "dl").write_bytes(b"half a download")
    pointer = {"active": "b", "prev": "a", "trial": 1, "seq": {"agent": 7, "firmware": 2},
               "digest": {"agent": "aa", "firmware": "ff"}, "version": {"agent": "9.9.9"},
               "bad": {"agent": 8}, "pending": {"component": "agent", "seq": 9, "digest": "bb",
                                                 "version": "10"}}
    data = json.dumps(pointer).encode()
    (fs / "ota" / "slot").write_bytes(data + struct.pack(">I", zlib.crc32(data)))
    board = FolderBoard(fs, None)
    with Builds() as builds:
        deploy(board, builds.bundle(load_board("esp32"), None), lambda *a: None,
               Result(Target("b", board.port, "esp32")))
    factory_slot(board)
    raw = (fs / "ota" / "slot").read_bytes()
    assert zlib.crc32(raw[:-4]) == struct.unpack(">I", raw[-4:])[0]
    assert json.loads(raw[:-4]) == {"active": "", "prev": "", "why": "", "seq": {"agent": 7, "firmware": 2},
                                    "digest": {"firmware": "ff"}, "version": {}, "bad": {"agent": 8}}
    assert not (fs / "slots" / "b").exists() and not (fs / "ota" / "dl").exists()
    assert (fs / "ota" / "keys.cose").read_bytes() == b"key list"


# -- again and again -----------------------------------------------------------------

@pytest.mark.slow
def test_flash_all_on_a_plain_sim_up_succeeds_twenty_times_in_a_row(bench):
    """Boards that already run the agent (as `edge sim up` leaves them) are
    flashed over and over: every run reaches every board, with the heap to do it."""
    boards = bench.up("esp32", "esp32c3", "picow")
    since = {b["name"]: Path(b["console_log"]).stat().st_size for b in boards}
    for run in range(20):
        proc = bench.edge("flash", "--all", "--json", timeout=120, check=False)
        assert proc.returncode == 0, f"run {run + 1}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        results = json.loads(proc.stdout)
        assert [r["name"] for r in results] == [b["name"] for b in boards], f"run {run + 1}"
        bad = [r for r in results if not r["ok"]]
        assert not bad, f"run {run + 1}: {bad}"
        assert "MemoryError" not in proc.stdout + proc.stderr, f"run {run + 1}"
        assert [r["device_id"] for r in results] == [b["device_id"] for b in boards], f"run {run + 1}"
    for b in boards:
        with open(b["console_log"], "rb") as f:
            f.seek(since[b["name"]])
            assert b"MemoryError" not in f.read(), f"{b['name']}'s console shows a MemoryError"
