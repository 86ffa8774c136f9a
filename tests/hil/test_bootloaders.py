"""Bootloaders of virtual boards: the real esptool against the ESP ROM loader, UF2 into a Pico's BOOTSEL drive.

The ESP32's ROM serial loader (and esptool's stub) is emulated sans-I/O in
:mod:`edge_hil.virtual.esp_rom`; a virtual ESP board runs it in download
mode, reached by esptool's own DTR/RTS reset over the board's RFC 2217
``flash_url`` (or by ``Bench.download_mode`` for esptool on the pty). A
virtual Pico enters BOOTSEL on ``machine.bootloader()`` and takes a .uf2 in
its drive folder. Every bench runs in a temporary folder and is stopped by
its fixture; every subprocess has a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_hil.virtual.esp_rom import EspRomLoader, checksum, slip_encode
from edge_hil.virtual.flash import FlashImage
from edge_hil.virtual.uf2_drive import RP2040_FAMILY, Uf2Error, parse_uf2
from tests.harness import invoke, mpremote, wait_mode

BIN = Path(sys.executable).parent
ESPTOOL = [str(BIN / "python"), "-m", "esptool"]
FLASH_BASE = 0x10000000


def esptool(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real, unmodified esptool."""
    return subprocess.run([*ESPTOOL, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def answers_python(port: str, timeout: float = 20) -> bool:
    """Whether MicroPython runs ``print(1+1)`` for the real mpremote (a board in a bootloader does not)."""
    try:
        r = mpremote(port, "exec", "print(1+1)", timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and r.stdout.strip() == "2"


def uf2(image: bytes, base: int = FLASH_BASE, family: int = RP2040_FAMILY, flags: int = 0x2000) -> bytes:
    """A UF2 file as picotool / the MicroPython build writes them: 256-byte payloads."""
    chunks = [image[k:k + 256].ljust(256, b"\0") for k in range(0, len(image), 256)]
    out = b""
    for no, chunk in enumerate(chunks):
        head = struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, base + 256 * no, 256, no, len(chunks), family)
        out += head + chunk + b"\0" * (476 - 256) + struct.pack("<I", 0x0AB16F30)
    return out


@pytest.fixture
def bench(bench):
    """An ESP32 and a Pico W with MicroPython and the agent but no identity; the bench's control API."""
    bench.up("esp32", "picow", extra=("--unprovisioned",))
    return bench.control


# ---- the sans-I/O ROM loader ------------------------------------------------


class MemFlash:
    def __init__(self, size: int):
        self.size = size
        self.data = bytearray(b"\xff" * size)

    def read(self, off, n):
        return bytes(self.data[off:off + n])

    def erase(self, off, n):
        start, end = off - off % 4096, -(-(off + n) // 4096) * 4096
        self.data[start:end] = b"\xff" * (end - start)

    def write(self, off, data):
        self.data[off:off + len(data)] = data


def request(op: int, data: bytes, chk: int = 0) -> bytes:
    return slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data)


def replies(raw: bytes) -> list[tuple[int, int, bytes]]:
    """(opcode, value, body) of each SLIP reply in ``raw``."""
    out = []
    for frame in raw.split(b"\xc0"):
        if len(frame) >= 8:
            frame = frame.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
            _, op, size, val = struct.unpack("<BBHI", frame[:8])
            out.append((op, val, frame[8:8 + size]))
    return out


def test_rom_refuses_a_flash_block_with_a_bad_checksum_and_writes_nothing():
    flash = MemFlash(1 << 22)
    rom = EspRomLoader("esp32", flash)
    rom.receive_data(request(0x02, struct.pack("<IIII", 1024, 1, 1024, 0x1000)))   # FLASH_BEGIN
    block = os.urandom(1024)
    rom.receive_data(request(0x03, struct.pack("<IIII", 1024, 0, 0, 0) + block, checksum(block) ^ 0x5A))
    begin, bad = replies(rom.data_to_send())
    assert begin[2] == b"\0\0\0\0"
    assert bad[0] == 0x03 and bad[2][:2] == b"\x01\x07"            # ROM: failed, "checksum error"
    assert flash.read(0x1000, 1024) == b"\xff" * 1024
    # esptool's retry with the right checksum then lands.
    rom.receive_data(request(0x03, struct.pack("<IIII", 1024, 0, 0, 0) + block, checksum(block)))
    assert replies(rom.data_to_send())[0][2] == b"\0\0\0\0"
    assert flash.read(0x1000, 1024) == block
    rom.receive_data(request(0x13, struct.pack("<IIII", 0x1000, 1024, 0, 0)))      # SPI_FLASH_MD5
    assert replies(rom.data_to_send())[0][2][:32] == hashlib.md5(block).hexdigest().encode()
    assert ("written", 0x1000, 1024, True) in rom.next_events()


def test_rom_answers_sync_eight_times_ignores_noise_and_refuses_writes_past_the_flash():
    flash = MemFlash(1 << 20)
    rom = EspRomLoader("esp32", flash)
    rom.receive_data(b"garbage \xdb\x00 from the console" + request(0x08, b"\x07\x07\x12\x20" + b"\x55" * 32))
    got = replies(rom.data_to_send())
    assert len(got) == 8 and all(op == 0x08 and val for op, val, _ in got)
    rom.receive_data(request(0x02, struct.pack("<IIII", 8192, 8, 1024, (1 << 20) - 4096)))
    assert replies(rom.data_to_send())[0][2][:2] == b"\x01\x06"
    assert flash.data == bytearray(b"\xff" * (1 << 20))
    rom.receive_data(request(0x14, b""))                           # the ESP32 has no GET_SECURITY_INFO
    assert replies(rom.data_to_send())[0][2][:2] == b"\x01\x05"
    rom.receive_data(request(0x0A, struct.pack("<I", 0x40001000)))
    assert replies(rom.data_to_send())[0][1] == 0x00F01D83


@pytest.mark.parametrize("chip, chip_id", [("esp32s3", 9), ("esp32c3", 5)])
def test_newer_chips_report_their_chip_id_in_security_info(chip, chip_id):
    rom = EspRomLoader(chip, MemFlash(1 << 22))
    rom.receive_data(request(0x14, b""))
    body = replies(rom.data_to_send())[0][2]
    assert struct.unpack("<IBBBBBBBBII", body[:20])[9] == chip_id and body[20:22] == b"\0\0"


def test_flash_image_is_erased_nor_flash_kept_in_a_file(tmp_path):
    f = FlashImage(tmp_path / "flash.bin", 64 * 1024)
    assert f.read(0, 64 * 1024) == b"\xff" * 64 * 1024
    f.write(100, b"\x0f\xf0")
    f.write(100, b"\xf3\x3f")                                       # bits only clear
    assert f.read(100, 2) == b"\x03\x30"
    f.close()
    g = FlashImage(tmp_path / "flash.bin", 64 * 1024)               # kept across a restart
    assert g.read(100, 2) == b"\x03\x30"
    with pytest.raises(ValueError, match="outside"):
        g.write(64 * 1024 - 1, b"ab")


# ---- UF2 validation ----------------------------------------------------------


def test_uf2_parser_takes_a_picotool_style_file():
    image = os.urandom(3000)
    blocks = parse_uf2(uf2(image), 2 << 20)
    assert blocks[0][0] == 0 and b"".join(p for _, p in blocks)[:3000] == image


@pytest.mark.parametrize("mangle, why", [
    (lambda d: b"\0" * 4 + d[4:], "magic"),
    (lambda d: d[:-512], "truncated"),
    (lambda d: d[:-100], "whole number"),
    (lambda d: b"", "empty"),
    (lambda d: d[:512] + d[:512] + d[1024:], "repeated"),
])
def test_uf2_parser_refuses_damaged_files(mangle, why):
    with pytest.raises(Uf2Error, match=why):
        parse_uf2(mangle(uf2(os.urandom(2048))), 2 << 20)


def test_uf2_parser_refuses_other_families_and_addresses_outside_the_flash():
    with pytest.raises(Uf2Error, match="family"):
        parse_uf2(uf2(b"x" * 512, family=0x1C5F21B0), 2 << 20)      # an ESP32 UF2
    with pytest.raises(Uf2Error, match="outside the flash"):
        parse_uf2(uf2(b"x" * 512, base=FLASH_BASE + (2 << 20) - 256), 2 << 20)
    with pytest.raises(Uf2Error, match="outside the flash"):
        parse_uf2(uf2(b"x" * 512, base=0x20000000), 2 << 20)        # RAM, not flash


# ---- the real esptool against a virtual ESP32 ----------------------------------------


@pytest.mark.slow
def test_esptool_resets_over_rfc2217_writes_verifies_and_board_boots_micropython_again(bench, tmp_path):
    esp = bench.board("esp32-1")
    assert esp["flash_url"].startswith("rfc2217://127.0.0.1:") and bench.mode("esp32-1") == "micropython"
    image = tmp_path / "small.bin"
    image.write_bytes(os.urandom(4096))
    t0 = time.monotonic()
    r = esptool("--chip", "esp32", "--port", esp["flash_url"], "--no-stub", "write-flash", "0x1000", str(image))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hash of data verified" in r.stdout and "Hard resetting via RTS pin" in r.stdout
    print(f"esptool --no-stub write-flash of 4 KB over RFC 2217, reset included: {took:.1f} s")
    flash = Path(esp["flash_file"]).read_bytes()
    assert flash[0x1000:0x2000] == image.read_bytes() and flash[:0x1000] == b"\xff" * 0x1000
    last = bench.flash_record("esp32-1")["last"]
    assert (last["offset"], last["size"]) == (0x1000, 4096)
    assert last["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    wait_mode(bench, "esp32-1", "micropython")
    assert answers_python(esp["port"])


def test_esptool_rom_and_stub_paths_write_read_back_and_identify_the_chip(bench, tmp_path):
    esp = bench.board("esp32-1")
    image = tmp_path / "img.bin"
    image.write_bytes(os.urandom(64 * 1024))
    bench.download_mode("esp32-1")
    assert bench.mode("esp32-1") == "download"
    assert not answers_python(esp["port"], timeout=4)   # the ROM answers, not MicroPython
    port = ["--port", esp["port"], "--before", "no-reset", "--after", "no-reset"]
    r = esptool("--chip", "auto", *port, "--no-stub", "write-flash", "0x1000", str(image))
    assert r.returncode == 0 and "Hash of data verified" in r.stdout, r.stdout + r.stderr
    r = esptool("--chip", "esp32", *port, "--no-stub", "read-flash", "0x1000", "0x10000", str(tmp_path / "rom.bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "rom.bin").read_bytes() == image.read_bytes()
    r = esptool("--chip", "esp32", *port, "--no-stub", "chip-id")
    assert r.returncode == 0 and "ESP32-D0WD-V3" in r.stdout and "MAC:" in r.stdout, r.stdout + r.stderr
    r = esptool("--chip", "esp32", *port, "flash-id")                 # through the stub
    assert r.returncode == 0 and "Detected flash size: 4MB" in r.stdout, r.stdout + r.stderr
    # The stub path (esptool's default): compressed write, streamed read.
    image.write_bytes(bytes(range(256)) * 512)
    r = esptool("--chip", "esp32", *port, "write-flash", "0x20000", str(image))
    assert r.returncode == 0 and "Hash of data verified" in r.stdout, r.stdout + r.stderr
    r = esptool("--chip", "esp32", *port, "read-flash", "0x20000", "0x20000", str(tmp_path / "stub.bin"))
    assert r.returncode == 0 and (tmp_path / "stub.bin").read_bytes() == image.read_bytes(), r.stdout + r.stderr
    assert bench.flash_record("esp32-1")["last"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    bench.reset("esp32-1")
    assert bench.mode("esp32-1") == "micropython" and answers_python(esp["port"])


def test_power_cut_during_an_esptool_write_fails_esptool_and_the_board_recovers(bench, tmp_path):
    esp = bench.board("esp32-1")
    image = tmp_path / "img.bin"
    image.write_bytes(os.urandom(1024 * 1024))
    (tmp_path / "esptool.cfg").write_text("[esptool]\ntimeout = 1\nwrite_block_attempts = 1\n")
    bench.download_mode("esp32-1")
    proc = subprocess.Popen([*ESPTOOL, "--chip", "esp32", "--port", esp["port"], "--before", "no-reset",
                             "--no-stub", "write-flash", "0x1000", str(image)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        flash = Path(esp["flash_file"])
        while flash.read_bytes()[0x1000:0x1400] == b"\xff" * 1024:    # first block written
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        bench.power_off("esp32-1")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    assert "Hash of data verified" not in out and ("Timed out" in out or "error" in out.lower()), out
    assert bench.mode("esp32-1") == "off"
    last = bench.flash_record("esp32-1")["last"]
    assert last["via"] == "esptool (interrupted)" and last["size"] < len(image.read_bytes())
    bench.power_on("esp32-1")
    assert bench.mode("esp32-1") == "micropython" and answers_python(esp["port"])


# ---- a virtual Pico W's BOOTSEL drive -------------------------------------------


def test_machine_bootloader_opens_the_uf2_drive_and_a_good_uf2_lands_in_flash(bench, tmp_path):
    pico = bench.board("picow-1")
    try:        # the board resets under mpremote's feet, as a real Pico does
        mpremote(pico["port"], "exec", "import machine; machine.bootloader()", timeout=4)
    except subprocess.TimeoutExpired:
        pass
    wait_mode(bench, "picow-1", "bootsel")
    drive = Path(bench.board("picow-1")["uf2_drive"])
    assert (drive / "INFO_UF2.TXT").read_text().startswith("UF2 Bootloader") and (drive / "INDEX.HTM").exists()
    assert not answers_python(pico["port"], timeout=4)
    image = os.urandom(10 * 1024)
    shutil.copy(_write(tmp_path / "fw.uf2", uf2(image)), drive / "firmware.uf2")
    wait_mode(bench, "picow-1", "micropython")
    assert not drive.exists() and bench.board("picow-1")["uf2_drive"] is None
    assert Path(pico["flash_file"]).read_bytes()[:len(image)] == image
    last = bench.flash_record("picow-1")["last"]
    assert (last["offset"], last["size"], last["via"]) == (0, len(image), "uf2")
    assert answers_python(pico["port"])


def test_a_bad_uf2_leaves_the_flash_alone_and_the_drive_open(bench, tmp_path):
    pico = bench.board("picow-1")
    drive = Path(bench.bootsel("picow-1")["uf2_drive"])
    before = Path(pico["flash_file"]).read_bytes()
    log_size = Path(pico["console_log"]).stat().st_size
    for name, data in [("wrong-family.uf2", uf2(b"x" * 4096, family=0x1C5F21B0)),
                       ("truncated.uf2", uf2(b"y" * 4096)[:-512]),
                       ("bad-magic.uf2", b"\0" * 1024)]:
        _write(drive / name, data)
        bench.wait_console("picow-1", name.encode() + b" ignored", timeout=5, since=log_size)
    assert bench.mode("picow-1") == "bootsel" and (drive / "INFO_UF2.TXT").exists()
    assert Path(pico["flash_file"]).read_bytes() == before
    assert bench.flash_record("picow-1") is None
    bench.reset("picow-1")
    assert bench.mode("picow-1") == "micropython" and not drive.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_sim_cli_lists_flash_url_and_enters_bootsel(bench):
    r = invoke("sim", "ls", "--dir", str(bench.rundir), "--json")
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["esp32-1"]["flash_url"].startswith("rfc2217://") and rows["picow-1"]["flash_url"] is None
    assert rows["esp32-1"]["mode"] == "micropython"
    r = invoke("sim", "bootsel", "picow-1", "--dir", str(bench.rundir))
    assert r.exit_code == 0 and "BOOTSEL" in r.output
    r = invoke("sim", "bootsel", "esp32-1", "--dir", str(bench.rundir))
    assert r.exit_code != 0
    r = invoke("sim", "download", "esp32-1", "--dir", str(bench.rundir))
    assert r.exit_code == 0 and bench.mode("esp32-1") == "download"
