"""The drivers of a virtual board (:mod:`edge_agent.drivers`' protocols) and
the board source that finds the boards of a running virtual bench.

The power and reset drivers are the bench's supervisor requests (the buttons
and the supply a person would use); the flasher is the host's own: esptool
at the board's ROM loader URL, or the UF2 copied to the BOOTSEL drive the
supervisor shows. ``edge_agent.cli`` registers :class:`VirtualBoards`.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent import device_fs
from edge_agent.boards import load_board
from edge_agent.discover import Candidate
from edge_agent.drivers import ByFlashMethod
from edge_agent.errors import DeviceError, EdgeError
from edge_hil.virtual.control import Bench
from edge_hil.virtual.fs import device_id_of


class BenchPower:
    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.name = bench, name

    def power_on(self) -> None:
        self.bench.power_on(self.name)

    def power_off(self) -> None:
        self.bench.power_off(self.name)


class BenchReset:
    """Reset by the board's lines: EN (into the agent), EN with BOOT/BOOTSEL held."""

    def __init__(self, bench: Bench, name: str, family: str | None) -> None:
        self.bench, self.name, self.family = bench, name, family

    def reset(self) -> None:
        self.bench.reset(self.name)

    def reset_to_bootloader(self) -> None:
        if self.family == "rp2":
            self.bench.bootsel(self.name)
        else:
            self.bench.download_mode(self.name)


class VirtualBoard:
    """One board of a virtual bench, driven through its supervisor: a virtual board (the Unix port)
    or an emulated one (a chip running its port's real firmware), as its row's ``kind`` says."""

    def __init__(self, bench: Bench, row: dict) -> None:
        self.bench, self.name, self.row = bench, row["name"], row
        self.kind = row.get("kind") or "virtual"
        self.power = BenchPower(bench, self.name)
        self.reset = BenchReset(bench, self.name, load_board(row["board"]).get("micropython_port"))
        self.flasher = ByFlashMethod(self.name, row.get("flash_url"), self.reset, self.wait_running,
                                     find_drive=self._drive, drives_before=lambda: None, exclusive=False)

    def _drive(self, _before) -> Path | None:
        d = self.bench.board(self.name).get("uf2_drive")
        return Path(d) if d and (Path(d) / "INFO_UF2.TXT").is_file() else None

    def console_port(self) -> str:
        return self.row["port"]

    def mode(self) -> str | None:
        try:
            return self.bench.mode(self.name)
        except EdgeError:
            return None

    def why_not_running(self) -> EdgeError | None:
        mode = self.mode()
        d = f" --sim-dir {self.bench.rundir}"
        if mode == "download":
            return DeviceError(f"virtual board {self.name} is in its ROM download mode, not running "
                               "MicroPython", f"reset it (`edge sim reset {self.name}{d}`), or write "
                               "MicroPython with --firmware FILE")
        if mode == "bootsel":
            return DeviceError(f"virtual board {self.name} is in BOOTSEL mode (its UF2 drive is up)",
                               f"copy a UF2 with --firmware FILE, or `edge sim reset {self.name}{d}`")
        if mode == "off":
            return DeviceError(f"virtual board {self.name} is powered off",
                               f"`edge sim power {self.name} on{d}`, then run again")
        return None

    def wait_running(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.mode() in (None, "micropython"):
                return
            time.sleep(0.1)
        raise DeviceError(f"virtual board {self.name} did not come back as MicroPython after the image "
                          "was written", f"see its console log in {self.bench.rundir}")

    def mpy_arch(self, board: dict) -> str | None:
        # A virtual board runs the host's interpreter: bytecode only, whatever
        # the board type's architecture; an emulated chip runs the real port.
        return board.get("mpy_arch") if self.kind == "emulated" else None

    def mpy_cross(self, board: dict) -> str | None:
        # An emulated chip's firmware was built with its own mpy-cross: the
        # agent is compiled by that one (the check step still compares versions).
        if self.kind != "emulated":
            return None
        from edge_hil.emulated.build import cached_firmware

        return str(cached_firmware().mpy_cross)

    def config_defaults(self) -> dict:
        return dict(device_fs.BENCH_CONFIG)

    def stored_device_id(self) -> str | None:
        # A virtual board's filesystem is a folder on this host: read without
        # the port. An emulated board's is littlefs inside its flash image.
        return device_id_of(self.row["fs"]) if self.kind != "emulated" else None


def board(bench_dir: Path | str | None, name: str) -> VirtualBoard:
    """The driver of virtual board ``name`` of the bench in ``bench_dir``."""
    bench = Bench(bench_dir)
    return VirtualBoard(bench, bench.board(name))


class VirtualBoards:
    """The board source of virtual benches (:func:`edge_agent.drivers.register_source`)."""

    def boards(self, bench_dir: Path | str | None) -> list[Candidate]:
        bench = Bench(bench_dir)
        if not bench.is_running():
            return []
        try:
            rows = bench.boards()
        except EdgeError:
            return []
        return [Candidate(name=r["name"], port=r["port"], board=r["board"], choices=[r["board"]],
                          description=f"{r.get('kind') or 'virtual'} {r['board']}", driver=VirtualBoard(bench, r))
                for r in rows]
