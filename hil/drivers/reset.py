"""Reset drivers: restart a chip into its program or into its ROM bootloader.

:class:`DtrRtsReset` drives the ESP auto-reset circuit every DevKit has:
two transistors turn the USB bridge's DTR and RTS lines into the chip's EN
(reset, active low) and IO0 (boot strap: low at reset means download mode),
as EN = not(RTS and not DTR) and IO0 = not(DTR and not RTS). Asserting both
lines, or neither, leaves both pins high, which is why opening the port does
not reset the board. :class:`RelayReset` closes a relay across the reset
line. ``ReplReset`` (``machine.reset()``) is the board seam's own
(:class:`edge_agent.drivers.ReplReset`), and ``BenchReset`` the virtual
bench's (:class:`edge_hil.virtual.drivers.BenchReset`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from edge_agent.drivers import ReplReset
from edge_agent.errors import DeviceError
from edge_hil.drivers.relay import LcusRelay
from edge_hil.virtual.drivers import BenchReset

__all__ = ["Reset", "DtrRtsReset", "RelayReset", "ReplReset", "BenchReset"]

EN_LOW_S = 0.1          # how long EN is held low: long enough for the EN capacitor to discharge
STRAP_S = 0.05          # IO0 held low after EN rises, while the ROM samples it


@runtime_checkable
class Reset(Protocol):
    def reset(self) -> None: ...

    def reset_to_bootloader(self) -> None: ...


def _open_lines(port: str) -> Any:
    import serial

    s = serial.serial_for_url(port, do_not_open=True, baudrate=115200)
    # Both lines released before opening, so opening itself pulses nothing.
    s.dtr = False
    s.rts = False
    s.open()
    return s


class DtrRtsReset:
    """The ESP auto-reset circuit on ``port``'s DTR and RTS.

    When the board's console is open (``console_serial()`` returns its
    pyserial object) the lines are driven through it, so the console keeps
    reading across the reset; otherwise the port is opened for the pulse.
    """

    def __init__(self, name: str, port: str, console_serial: Callable[[], Any | None] = lambda: None,
                 open_lines: Callable[[str], Any] = _open_lines, sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.port = name, port
        self._console, self._open, self._sleep = console_serial, open_lines, sleep

    @contextlib.contextmanager
    def _lines(self) -> Iterator[Any]:
        import serial

        held = self._console()
        try:
            s = held if held is not None else self._open(self.port)
        except (OSError, serial.SerialException) as e:
            raise DeviceError(f"{self.name}: cannot open {self.port} to reset it: {e}",
                              "check the port in the rig file and that no other program holds it") from None
        try:
            yield s
        except (OSError, serial.SerialException) as e:
            raise DeviceError(f"{self.name}: {self.port} refused DTR/RTS ({e}): no auto-reset circuit here",
                              "use reset: repl or a relay across the reset line in the rig file") from None
        finally:
            if held is None:
                s.close()

    def reset(self) -> None:
        """EN low with IO0 high, then released: the chip boots its program."""
        with self._lines() as s:
            s.dtr = False           # IO0 stays high
            s.rts = True            # EN low: in reset
            self._sleep(EN_LOW_S)
            s.rts = False           # EN high: boots from flash

    def reset_to_bootloader(self) -> None:
        """IO0 low while EN pulses: the chip's ROM starts its serial download mode."""
        with self._lines() as s:
            s.dtr = False
            s.rts = True            # EN low
            self._sleep(EN_LOW_S)
            s.dtr = True            # IO0 low ...
            s.rts = False           # ... as EN rises: the ROM samples the strap
            self._sleep(STRAP_S)
            s.dtr = False           # IO0 released


class RelayReset:
    """A relay across the board's reset line: closed for ``pulse_s`` resets it."""

    def __init__(self, name: str, relay: LcusRelay, channel: int, pulse_s: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.relay, self.channel, self.pulse_s, self._sleep = name, relay, channel, pulse_s, sleep

    def reset(self) -> None:
        self.relay.set(self.channel, True)
        try:
            self._sleep(self.pulse_s)
        finally:
            self.relay.set(self.channel, False)

    def reset_to_bootloader(self) -> None:
        raise DeviceError(f"{self.name}: a relay on the reset line cannot hold the boot strap as well",
                          "use reset: dtr-rts on an ESP board, or repl (machine.bootloader()); on a Pico "
                          "hold BOOTSEL while it resets")
