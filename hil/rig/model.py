"""What a rig file describes, as values: the rig, its relays and its boards.

Resources in labgrid's sense: each value says *where* a piece of hardware is
and how it is reached (a port, a relay channel, a hub port); the drivers of
:mod:`edge_hil.drivers` bind to them. Nothing here opens a port.

Every value keeps the line of the rig file it came from, so a later error
(a probe that failed, a channel already in use) can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_agent.errors import BadInput

# What a test can ask of a board (``@pytest.mark.needs(...)``), docs/hil.md section 2.
CAPABILITIES = ("console", "reset", "power", "ble", "ota", "firmware-image")
# The states a strategy walks a board through, in order (docs/hil.md section 2).
STATES = ("off", "bootloader", "flashed", "agent-up", "paired", "updated")

Kind = Literal["usb", "virtual", "emulated"]
PowerMethod = Literal["relay", "uhubctl", "manual", "bench"]
ResetMethod = Literal["dtr-rts", "relay", "repl", "none", "bench"]


class RigError(BadInput):
    """A rig file that cannot be used: each problem is ``FILE:LINE: path.to.key: what is wrong``."""

    def __init__(self, problems: list[tuple[str, str]], hint: str | None = None):
        """``problems``: (``FILE:LINE: path: what``, its fix) pairs, the first shown first."""
        self.problems = problems
        message = "\n".join(p for p, _ in problems)
        fixes = [f for _, f in problems if f]
        super().__init__(message, hint if hint is not None else ("\n".join(dict.fromkeys(fixes)) or None))


@dataclass(frozen=True)
class Relay:
    """A relay board on a serial port (``relays.NAME``)."""

    name: str
    port: str
    channels: int
    protocol: str = "lcus"
    line: int = 0


@dataclass(frozen=True)
class PowerSpec:
    """How the run switches a board's supply.

    ``relay``/``channel`` for a relay, ``hub``/``hub_port`` for uhubctl;
    ``bench`` is the virtual bench's own switch (virtual and emulated boards).
    """

    method: PowerMethod
    relay: str | None = None
    channel: int | None = None
    hub: str | None = None
    hub_port: int | None = None


@dataclass(frozen=True)
class ResetSpec:
    """How the run resets a board (``relay``/``channel`` for a relay across the reset line)."""

    method: ResetMethod
    relay: str | None = None
    channel: int | None = None


@dataclass(frozen=True)
class BleSpec:
    """A real board's BLE identity: the address it advertises from; the host adapter that
    reaches it and the command that drops its link (None: BlueZ's Disconnect,
    :mod:`edge_hil.drivers.ble`)."""

    address: str
    adapter: str = "hci0"
    drop: str | None = None


def board_has_radio(board_file: dict) -> bool:
    """Whether a board type has a BLE radio. Board files carry no radio key:
    every ESP32 chip has one, an RP2040 only on a Pico W (its CYW43), the
    virtual board a stand-in on the virtual air, a Linux computer BlueZ."""
    chip = str(board_file.get("chip", ""))
    if chip == "rp2040":
        return board_file.get("micropython_board") == "RPI_PICO_W"
    return True


@dataclass(frozen=True)
class RigBoard:
    """One board of the rig (``boards[i]``), its board file already loaded.

    ``person`` says whether the run has a person to answer questions (a
    terminal or an answers file); it decides whether ``manual`` power counts
    as the ``power`` capability. Whoever opens the rig sets it
    (:func:`edge_hil.rig.load_rig`'s ``person``).
    """

    name: str
    board: str
    kind: Kind
    port: str | None
    power: PowerSpec
    reset: ResetSpec
    ble: BleSpec | None
    line: int
    board_file: dict = field(repr=False, compare=False)
    person: bool = False

    @property
    def capabilities(self) -> frozenset[str]:
        """The :data:`CAPABILITIES` the rig gives this board (docs/hil.md section 2)."""
        f = self.board_file
        caps = {"console"}
        if self.reset.method != "none":
            caps.add("reset")
        if self.power.method != "manual" or self.person:
            caps.add("power")
        # The emulated RP2040 has no radio; a real board is reachable when the rig names its address.
        if board_has_radio(f) and (self.kind == "virtual" or (self.kind == "usb" and self.ble is not None)):
            caps.add("ble")
        if f.get("ota_method"):
            caps.add("ota")
        # USB: the board file's method; virtual: the ESP ROM loader and the rp2 BOOTSEL drive;
        # emulated: the Pico's BOOTSEL drive.
        if f.get("flash_method") in ("esptool", "uf2"):
            caps.add("firmware-image")
        return frozenset(caps)


@dataclass(frozen=True)
class Rig:
    """A loaded rig file (:func:`edge_hil.rig.load_rig`)."""

    path: Path
    name: str
    relays: dict[str, Relay]
    boards: tuple[RigBoard, ...]
    bench_dir: Path | None = None       # ``bench: {sim_dir: DIR}``: a virtual bench already running
    person: bool = False

    def board(self, name: str) -> RigBoard:
        """The board named ``name``; BadInput listing the rig's boards otherwise."""
        for b in self.boards:
            if b.name == name:
                return b
        raise BadInput(f"rig {self.name} ({self.path}) has no board named {name!r}",
                       "boards: " + ", ".join(b.name for b in self.boards))

    @property
    def bench_boards(self) -> tuple[RigBoard, ...]:
        """The boards of the virtual bench (``kind: virtual`` or ``emulated``), in file order."""
        return tuple(b for b in self.boards if b.kind != "usb")
