"""What sits around a virtual board's chip: one seam for its peripherals.

A :class:`Peripheral` is told what happens to the board - its USB-serial
bridge's lines change, the chip leaves what it ran (reset, power, another
bootloader), MicroPython asks for its bootloader, bytes reach the UART while
the peripheral owns it - and acts through the board's small surface
(:class:`BoardSurface`). The ESP download mode with its auto-reset circuit
and the RP2040 BOOTSEL drive are peripherals; a radio plugs in the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Protocol

from edge_hil.virtual.esp_rom import EspRomLoader
from edge_hil.virtual.flash import FlashImage, record_write
from edge_hil.virtual.lifecycle import State
from edge_hil.virtual.uf2_drive import Uf2Drive, Uf2Error, parse_uf2

if TYPE_CHECKING:
    from edge_hil.virtual.board import BoardSpec

log = logging.getLogger("edge_hil.virtual.peripherals")

STRAP_WINDOW_S = 0.3                # IO0 sampled this long after EN rises (pyserial's RFC 2217
                                    # client needs >= 50 ms per line change)
UF2_POLL_S = 0.1
DOWNLOAD_BANNER = (b"\r\nets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x3 "
                   b"(DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n")


class BoardSurface(Protocol):
    """What a peripheral may do to the board it sits on."""

    spec: BoardSpec
    flash: FlashImage | None

    @property
    def state(self) -> State: ...

    def stop_chip(self, state: State) -> None:
        """Stop the interpreter (keeping the power) and enter ``state``."""

    def boot_micropython(self, line: bytes) -> None:
        """Leave any bootloader and boot MicroPython, printing ``line`` first."""

    def uart_out(self, data: bytes, to: str | None = None, log_it: bool = False) -> None:
        """Send from the chip's UART: to the pty and the bridge, or only ``to`` ("pty" | "link")."""

    def log_note(self, note: bytes) -> None:
        """A line in console.log only."""

    def changed(self) -> None:
        """Tell the supervisor the board's state changed."""


class Peripheral:
    """The calls a board makes on each peripheral; each defaults to doing nothing."""

    def on_lines(self, dtr: bool, rts: bool) -> None:
        """DTR/RTS of the board's USB-serial bridge changed."""

    def on_leave(self) -> None:
        """The chip leaves what it ran (reset, power change, another bootloader)."""

    def on_bootloader(self) -> bool:
        """``machine.bootloader()`` ran: True when this peripheral takes the chip."""
        return False

    def on_uart(self, data: bytes, src: str) -> bool:
        """UART input while no interpreter runs: True when this peripheral took it."""
        return False

    def close(self) -> None:
        """The board stops for good."""


class EspDownloadMode(Peripheral):
    """The ESP ROM serial loader and the classic auto-reset circuit on the
    bridge's lines (EN = not(RTS and not DTR), IO0 = not(DTR and not RTS)).

    EN released while IO0 is low (or pulled low within
    :data:`STRAP_WINDOW_S`, as the RC delay on a real EN pin allows) starts
    the download mode; EN released with IO0 high boots MicroPython again.
    """

    def __init__(self, board: BoardSurface, loop: asyncio.AbstractEventLoop) -> None:
        self.board, self.loop = board, loop
        self.rom: EspRomLoader | None = None
        self._en = True
        self._strap_timer: asyncio.TimerHandle | None = None

    def on_lines(self, dtr: bool, rts: bool) -> None:
        en = not (rts and not dtr)
        io0 = not (dtr and not rts)
        b = self.board
        if b.state in (State.OFF, State.STOPPED):
            self._en = en
            return
        if not en:
            if self._en:
                self._en = False
                self._cancel_strap()
                b.stop_chip(State.HELD)
            return
        if not self._en:
            self._en = True
            if not io0:
                self.enter()
            else:
                self._cancel_strap()
                self._strap_timer = self.loop.call_later(STRAP_WINDOW_S, self._strap_high)
            return
        if not io0 and self._strap_timer is not None:
            self.enter()                # IO0 went low while EN was still rising

    def _cancel_strap(self) -> None:
        if self._strap_timer is not None:
            self._strap_timer.cancel()
            self._strap_timer = None

    def _strap_high(self) -> None:
        self._strap_timer = None
        if self.board.state is State.HELD:
            self.board.boot_micropython(b"\r\nrst: EN reset, IO0 high (virtual %s)\r\n"
                                        % self.board.spec.board.encode())

    def enter(self) -> None:
        """Reset into the ROM serial download mode (as with IO0 held low)."""
        b = self.board
        self._cancel_strap()
        b.stop_chip(State.DOWNLOAD)
        self._en = True
        self.rom = EspRomLoader(b.spec.chip, b.flash, self._mac())
        b.uart_out(DOWNLOAD_BANNER, log_it=True)
        log.info("%s: ROM download mode", b.spec.name)
        b.changed()

    def on_bootloader(self) -> bool:
        self.enter()
        return True

    def on_leave(self) -> None:
        if self.rom is not None:
            rom, self.rom = self.rom, None
            rom.close()
            self._events(rom)

    def on_uart(self, data: bytes, src: str) -> bool:
        rom = self.rom
        if rom is None or self.board.state is not State.DOWNLOAD:
            return False
        rom.receive_data(data)
        out = rom.data_to_send()
        if out:
            # The ROM answers where its request came from.
            self.board.uart_out(out, to=src)
        self._events(rom)
        return True

    def close(self) -> None:
        self._cancel_strap()

    def _mac(self) -> bytes:
        return b"\x24\x0a\xc4" + hashlib.sha256(self.board.spec.name.encode()).digest()[:3]

    def _events(self, rom: EspRomLoader) -> None:
        b = self.board
        for ev in rom.next_events():
            if ev[0] == "written":
                _, offset, size, complete = ev
                via = "esptool" + ("" if complete else " (interrupted)")
                entry = record_write(b.spec.flash_record, b.flash, offset, size, via)
                log.info("%s: flash written at 0x%x, %d bytes, sha256 %s%s", b.spec.name, offset, size,
                         entry["sha256"], "" if complete else " (interrupted)")
            elif ev[0] == "run" and rom is self.rom:
                b.boot_micropython(b"\r\nrst: leaving download mode (virtual %s)\r\n" % b.spec.board.encode())


class BootselDrive(Peripheral):
    """The RP2040 boot ROM: in BOOTSEL a folder stands for the RPI-RP2 USB
    drive; a valid .uf2 copied there is written to flash and the chip reboots."""

    def __init__(self, board: BoardSurface, loop: asyncio.AbstractEventLoop) -> None:
        self.board, self.loop = board, loop
        self.drive: Uf2Drive | None = None
        self._timer: asyncio.TimerHandle | None = None
        Uf2Drive(board.spec.uf2_drive).remove()     # a drive left by a killed supervisor

    def enter(self) -> None:
        """Reset into BOOTSEL; the RPI-RP2 drive folder appears."""
        b = self.board
        b.stop_chip(State.BOOTSEL)
        self.drive = Uf2Drive(b.spec.uf2_drive)
        self.drive.create()
        b.log_note(b"\r\n[edge sim] BOOTSEL: USB drive RPI-RP2 at %s\r\n" % b.spec.uf2_drive.encode())
        self._timer = self.loop.call_later(UF2_POLL_S, self._poll)
        log.info("%s: BOOTSEL, drive %s", b.spec.name, b.spec.uf2_drive)
        b.changed()

    def on_bootloader(self) -> bool:
        self.enter()
        return True

    def on_leave(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.drive is not None:
            self.drive.remove()
            self.drive = None

    def close(self) -> None:
        self.on_leave()

    def _poll(self) -> None:
        self._timer = None
        b, drive = self.board, self.drive
        if drive is None or b.state is not State.BOOTSEL:
            return
        for name, data in drive.poll():
            try:
                blocks = parse_uf2(data, b.spec.flash_size)
            except Uf2Error as e:
                log.warning("%s: %s ignored: %s", b.spec.name, name, e)
                b.log_note(b"\r\n[edge sim] BOOTSEL: %s ignored (the RP2040 would not write it): %s\r\n"
                           % (name.encode(), str(e).encode()))
                continue
            flash = b.flash
            assert flash is not None, "an rp2 board always has a flash image"
            for offset in sorted({o - o % 4096 for o, _ in blocks}):
                flash.erase(offset, 4096)      # the boot ROM erases each sector it writes
            for offset, payload in blocks:
                flash.write(offset, payload)
            lo = min(o for o, _ in blocks)
            hi = max(o + len(p) for o, p in blocks)
            entry = record_write(b.spec.flash_record, flash, lo, hi - lo, "uf2")
            log.info("%s: %s written at 0x%x, %d bytes, sha256 %s", b.spec.name, name, lo, hi - lo,
                     entry["sha256"])
            b.boot_micropython(b"\r\nrst: UF2 %s written, rebooting (%s %s)\r\n"
                               % (name.encode(), b.spec.kind.encode(), b.spec.board.encode()))
            return
        self._timer = self.loop.call_later(UF2_POLL_S, self._poll)
