"""Firmware images on ESP32-family boards (docs/protocol.md 7.8): edgefw's
FirmwareTarget over esp32.Partition, and the virtual board's stand-in
(hil/virtual/vesp32.py) with ESP-IDF's bootloader rule, under MicroPython
(esp32 heap, .mpy). Each process is one boot of the board."""

from __future__ import annotations

import ast
import hashlib

from tests.firmware.compiled import compiled_firmware
from tests.mpy import REPO, run

SIZE = 0x20000  # small partitions keep the file small; the rule does not depend on size
IMAGE = b"\xe9" + bytes(range(256)) * 40 + b"tail"    # 10245 bytes: the last block is short
DIGEST = hashlib.sha256(IMAGE).hexdigest()


def boot(fs, code: str, *, cold: bool = True) -> list:
    """One start of the board (``cold``: the bootloader runs), then ``code``;
    returns what it printed, one value per line (a bare word as a string)."""
    pre = f"""
import sys
sys.path[:] = [{str(compiled_firmware())!r}, {str(REPO / 'hil' / 'virtual')!r}, '', '.frozen']
import vesp32
vesp32.start({str(fs.parent / 'ota.bin')!r}, {SIZE}, {cold})
sys.modules["esp32"] = vesp32
import esp32
from edgefw import slots
from edgefw.ota_partition import FirmwareTarget
def running():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]
"""
    out = run(pre + code, heap="esp32", cwd=fs).stdout.decode()
    return [_value(line) for line in out.splitlines()]


def _value(line: str):
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return line


WRITE = f"""
t = FirmwareTarget.open(esp32, "")
print(t.capacity())
print(t.begin(False))
img = open({{src!r}}, "rb").read()
buf = bytearray(4096)
for off in range(0, len(img), 4096):
    t.write(off, memoryview(img)[off:off + 4096])
t.flush()
import hashlib
h = hashlib.sha256()
for off in range(0, len(img), 4096):
    n = t.read_into(off, buf)
    h.update(memoryview(buf)[:min(n, len(img) - off)])
print(h.digest().hex())
t.install(5, {DIGEST!r}, "1.30")
print((t.installed(5, {DIGEST!r}), t.installed(6, {DIGEST!r})))
t.apply(5, {DIGEST!r}, "1.30")
print(running())
"""

STAGE0 = "import stage0\nprint(stage0.choose(''))\nprint(running())\nprint(slots.take_report(''))\n"


def test_an_image_written_to_the_next_partition_boots_pending_and_stays_once_confirmed(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (tmp_path / "img").write_bytes(IMAGE)
    assert boot(fs, "print(running())") == ["ota_0"]
    assert boot(fs, WRITE.format(src=str(tmp_path / "img"))) == [SIZE, 0, DIGEST, (True, False), "ota_0"]
    # The next boot: the new image, pending verification; stage 0 counts a
    # trial, and the agent confirms in that same boot.
    assert boot(fs, STAGE0 + "print(slots.confirm('', esp32)['seq'])\nprint(slots.counter('', 'firmware'))") \
        == [("", True), "ota_1", ("trial", "firmware", 5, "1.30", ""), 5, 5]
    # Confirmed: later boots stay in it, no trial.
    assert boot(fs, STAGE0) == [("", False), "ota_1", None]
    assert boot(fs, STAGE0) == [("", False), "ota_1", None]


def test_an_image_never_confirmed_is_rolled_back_by_the_bootloader_and_reported(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (tmp_path / "img").write_bytes(IMAGE)
    boot(fs, WRITE.format(src=str(tmp_path / "img")))
    assert boot(fs, STAGE0)[1] == "ota_1"      # pending: runs once, not confirmed
    got = boot(fs, STAGE0)                      # the bootloader went back
    assert got[:2] == [("", False), "ota_0"]
    assert got[2] == ("rolled-back", "firmware", 5, "1.30",
                      "firmware never confirmed: the bootloader went back to ota_0")
    assert boot(fs, "print((slots.bad('', 'firmware'), slots.counter('', 'firmware')))\n"
                    "print(FirmwareTarget.open(esp32, '').part.info()[4])") == [(5, 0), "ota_1"]


def test_a_soft_reset_does_not_run_the_bootloader(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (tmp_path / "img").write_bytes(IMAGE)
    boot(fs, WRITE.format(src=str(tmp_path / "img")))
    assert boot(fs, "print(running())", cold=False) == ["ota_0"]
    assert boot(fs, "print(running())") == ["ota_1"]
    assert boot(fs, "print(running())", cold=False) == ["ota_1"]


def test_an_image_the_bootloader_would_refuse_leaves_no_trial(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (tmp_path / "img").write_bytes(b"\x00" + IMAGE[1:])
    got = boot(fs, WRITE.format(src=str(tmp_path / "img")).replace(
        't.apply(5, ', 'try:\n    t.apply(5, ').replace('"1.30")\nprint(running())',
                                                   '"1.30")\nexcept OSError as e:\n    print(e.args[0])\n'
                                                   'print((slots.on_trial(""), running()))'))
    assert got[-2:] == [-5379, (False, "ota_0")]
    assert boot(fs, "print(running())") == ["ota_0"]


def test_a_download_resumes_from_the_bytes_flushed(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    assert boot(fs, """
t = FirmwareTarget.open(esp32, "")
t.begin(False)
t.write(0, memoryview(bytearray(4096)))
t.write(4096, memoryview(bytearray(4096)))
t.flush()
t.write(8192, memoryview(bytearray(4096)))
print(t.begin(True))
t.discard()
print(t.begin(True))
""") == [8192, 0]


def test_chunks_of_any_size_land_whole_and_a_resume_mid_sector_erases_it_again(tmp_path):
    # The transfer writes each chunk as it comes (7.5, 7.8); the stand-in is
    # NOR flash (a write only clears bits). Bytes written past the last
    # flush, then a reboot: the resume starts at that sector, erased again,
    # so what was there cannot AND into the image.
    fs = tmp_path / "fs"
    fs.mkdir()
    src = tmp_path / "img"
    src.write_bytes(IMAGE)
    assert boot(fs, f"""
img = open({str(src)!r}, "rb").read()
mv = memoryview(img)
t = FirmwareTarget.open(esp32, "")
t.begin(False)
t.write(0, mv[:700])
t.write(700, mv[700:6000])
t.flush()
t.write(6000, memoryview(bytes(1500)))
print(t.begin(True))
at = 4096
while at < len(img):
    n = min(240, len(img) - at)
    t.write(at, mv[at:at + n])
    at += n
t.flush()
buf = bytearray(len(img))
t.read_into(0, buf)
print(bytes(buf) == img)
p = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
p.writeblocks(0, b"\x0f", 1)
b = bytearray(2)
p.readblocks(0, b)
print(b[1] == img[1] & 0x0f)
""") == [4096, True, True]


def test_a_port_without_ota_partitions_has_no_firmware_target(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    assert boot(fs, "class NoEsp32:\n    pass\nprint(FirmwareTarget.open(NoEsp32, ''))") == [None]


def test_a_crash_on_trial_of_a_new_image_resets_into_the_previous_one(tmp_path):
    fs = tmp_path / "fs"
    (fs / "edgefw").mkdir(parents=True)
    # The agent the new image runs crashes (stage 0 finds it in the folder).
    (fs / "edgefw" / "__init__.py").write_text("")
    (fs / "edgefw" / "boot.py").write_text("def main(port=None, trial=False):\n    raise OSError(5)\n")
    (tmp_path / "img").write_bytes(IMAGE)
    boot(fs, WRITE.format(src=str(tmp_path / "img")))
    proc = run(f"""
import sys
sys.path[:] = ['', {str(REPO / 'hil' / 'virtual')!r}, {str(compiled_firmware())!r}, '.frozen']
import vesp32
vesp32.start({str(tmp_path / 'ota.bin')!r}, {SIZE}, True)
sys.modules["esp32"] = vesp32
print(vesp32.Partition(vesp32.Partition.RUNNING).info()[4])
import stage0
stage0.boot()
""", heap="esp32", cwd=fs, check=False)
    assert proc.returncode == 1 and proc.stdout.decode().split() == ["ota_1"], proc.stderr   # reset
    (fs / "edgefw" / "boot.py").unlink()   # the real agent again
    (fs / "edgefw" / "__init__.py").unlink()
    got = boot(fs, STAGE0)
    assert got[:2] == [("", False), "ota_0"]
    assert got[2] == ("rolled-back", "firmware", 5, "1.30", "crashed on trial: OSError(5,)")
