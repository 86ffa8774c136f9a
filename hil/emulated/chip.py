"""The emulated RP2040's side of the board seam: how the bench starts its chip.

A board of the virtual bench runs one process per boot of its chip, on a
pseudo-terminal that the supervisor relays to the board's public port (see
:mod:`edge_hil.virtual.board`). For a virtual board that process is the Unix
port; for an emulated Pico it is our Node runner (``runner/runner.js``) with
rp2040js, the boot ROM and the board's flash image, so:

* the flash image ``RUNDIR/<name>/flash.bin`` is the chip's whole flash:
  the firmware at 0, littlefs at its end. It survives power off/on, resets
  and ``sim down``/``sim up``; ``--reflash`` writes the firmware again and
  keeps the filesystem.
* the console is the firmware's USB CDC, byte for byte: no line-ending
  rewrite, no in-band markers, and Ctrl-C is a byte the firmware reads
  (its REPL and raw REPL handle soft reset themselves).
* the process only ends when the bench ends it (power, reset, BOOTSEL) or
  when the emulator fails: an exit on its own is a crash, never a soft reset.
* ``machine.bootloader()`` (the boot ROM's USB boot) ends the process with
  :data:`EXIT_BOOTSEL`: the bench shows the board's BOOTSEL drive folder,
  which takes a UF2 into the flash image, and the chip boots it.
* it has no radio (an RPI_PICO has no CYW43).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from edge_agent.errors import DeviceError
from edge_hil.emulated import assets
from edge_hil.virtual.board import Launch
from edge_hil.virtual.flash import FlashImage, record_write

RUNNER = assets.RUNNER_DIR / "runner.js"
STATS = "emulator.json"
RUNNER_LOG = "runner.log"
EXIT_BOOTSEL = 3        # runner.js: the firmware entered the boot ROM's USB boot


def unique_id(name: str) -> str:
    """The flash chip's 64-bit unique id (``machine.unique_id()``) of board ``name``: the same on every run."""
    return hashlib.sha256(b"edge-agent emulated rp2040 " + name.encode()).hexdigest()[:16]


def flash_has_firmware(flash: FlashImage) -> bool:
    """Whether the flash holds a boot2 (its first 256 bytes are not erased)."""
    return flash.read(0, 256) != b"\xff" * 256


def prepare_flash(home: Path, size: int, firmware: Path, reflash: bool = False) -> dict | None:
    """Program ``firmware`` at 0 of ``home/flash.bin`` if the chip is blank (or ``reflash``); return the
    ``flash.json`` entry, or None when the firmware already there stays. The filesystem at the end
    of the flash is kept."""
    image = firmware.read_bytes()
    flash = FlashImage(home / "flash.bin", size)
    try:
        if flash_has_firmware(flash) and not reflash:
            return None
        flash.erase(0, len(image))
        flash.write(0, image)
        return record_write(home / "flash.json", flash, 0, len(image), "sim up")
    finally:
        flash.close()


class EmulatedRp2040:
    """The chip of an emulated Pico, as :class:`edge_hil.virtual.board.VirtualBoard` drives it."""

    kind = "emulated"
    exit_is_soft_reset = False          # the firmware soft-resets inside the chip
    interrupts_by_signal = False        # Ctrl-C is a byte on USB CDC
    native_console = True               # the firmware's own line endings and banners
    has_radio = False

    def __init__(self, name: str, home: str, flash_file: str, flash_size: int):
        self.name, self.home, self.flash_file, self.flash_size = name, home, flash_file, flash_size
        self._modules = assets.rp2040js_dir()
        self._bootrom = assets.bootrom()
        self._node = assets.find_node()

    async def launch(self, mode: str) -> Launch:
        """The runner's command; ``mode`` does not matter: the chip always boots from its ROM."""
        argv = [self._node, str(RUNNER), "--rp2040js", str(self._modules), "--bootrom", str(self._bootrom),
                "--flash", self.flash_file, "--flash-size", str(self.flash_size),
                "--unique-id", unique_id(self.name), "--stats", str(Path(self.home) / STATS)]
        return Launch(argv=argv, env=dict(os.environ), cwd=self.home,
                      stderr_file=str(Path(self.home) / RUNNER_LOG))

    def entered_bootloader(self, rc: int | None) -> bool:
        return rc == EXIT_BOOTSEL

    @staticmethod
    def request_stats(pid: int) -> None:
        """Ask a running runner to write its counters (cycles, device time) to ``emulator.json``."""
        os.kill(pid, signal.SIGUSR1)


def read_stats(home: Path | str, pid: int, timeout: float = 5.0) -> dict:
    """The counters of the runner ``pid`` of the board whose folder is ``home``, now: ``cycles`` the
    core executed since the chip booted (none while it sleeps), ``device_ns`` and ``boot_device_ns``
    (its clock, sleep included), ``wall_ns``, ``boots``."""
    path = Path(home) / STATS
    path.unlink(missing_ok=True)
    EmulatedRp2040.request_stats(pid)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise DeviceError(f"the emulator of {Path(home).name} wrote no counters within {timeout:.0f} s",
                              hint=f"see {path.parent / RUNNER_LOG}")
        time.sleep(0.002)
    return json.loads(path.read_text())
