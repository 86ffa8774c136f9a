"""The serial console of a board under test (docs/hil.md section 2).

:class:`SerialConsole` keeps everything it read in ``log`` (the reports
attach it to failures), matches patterns against what arrived since the
last match, and survives a USB serial port that vanishes in a power cycle:
:meth:`SerialConsole.reopen` waits, bounded, for the port path to come back.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

from edge_agent.errors import DeviceError

BAUD = 115200
_POLL_S = 0.05


def _open_serial(port: str, baudrate: int) -> Any:
    import serial

    return serial.serial_for_url(port, baudrate=baudrate, timeout=_POLL_S, write_timeout=5)


def _port_present(port: str) -> bool:
    # A URL's far end can only be known by connecting to it.
    return "://" in port or Path(port).exists()


class SerialConsole:
    """A board's console on ``port`` (a path or a pyserial URL)."""

    def __init__(self, port: str, name: str | None = None, baudrate: int = BAUD,
                 open_port: Callable[[str, int], Any] = _open_serial) -> None:
        self.port, self.name, self.baudrate, self._open = port, name or port, baudrate, open_port
        self.log = b""
        self.serial: Any = None
        self._pending = b""     # read but not yet consumed by a match

    @property
    def is_open(self) -> bool:
        return self.serial is not None

    def open(self) -> None:
        if self.serial is not None:
            return
        import serial

        try:
            self.serial = self._open(self.port, self.baudrate)
        except (OSError, serial.SerialException) as e:
            raise DeviceError(f"{self.name}: cannot open its console {self.port}: {e}",
                              "check that the board is plugged in and powered, and that no other program "
                              "(a monitor, mpremote) holds the port") from None

    def close(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except OSError:
                pass
            self.serial = None

    def __enter__(self) -> "SerialConsole":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _need(self) -> Any:
        if self.serial is None:
            self.open()
        return self.serial

    def _gone(self, e: Exception) -> DeviceError:
        self.close()
        return DeviceError(f"{self.name}: its console {self.port} went away ({e})",
                           "a power cycle or reset re-enumerates USB serial: call console.reopen()")

    def write(self, data: bytes) -> None:
        import serial

        s = self._need()
        try:
            s.write(data)
            s.flush()
        except (OSError, serial.SerialException) as e:
            raise self._gone(e) from None

    def _read_some(self) -> bytes:
        import serial

        s = self._need()
        try:
            data = s.read(max(1, getattr(s, "in_waiting", 0) or 1))
        except (OSError, serial.SerialException) as e:
            raise self._gone(e) from None
        if data:
            self.log += data
        return data

    def read(self, timeout: float) -> bytes:
        """What arrives within ``timeout`` s, returned as soon as some bytes came (b"" if none)."""
        data, self._pending = self._pending, b""
        deadline = time.monotonic() + timeout
        while not data and time.monotonic() < deadline:
            data = self._read_some()
        while True:
            more = self._read_some() if getattr(self.serial, "in_waiting", 0) else b""
            if not more:
                return data
            data += more

    def expect(self, pattern: bytes | re.Pattern, timeout: float) -> re.Match:
        """Wait for ``pattern`` in what arrived since the last match; what follows the match stays.

        DeviceError naming the port, the pattern and the last bytes seen when it does not come in time.
        """
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self._pending)
            if m is not None:
                self._pending = self._pending[m.end():]
                return m
            if time.monotonic() >= deadline:
                tail = self._pending[-200:]
                raise DeviceError(f"{self.name}: {rx.pattern!r} did not appear on {self.port} within "
                                  f"{timeout:g} s; last bytes: {tail!r}",
                                  "see the console log; check that the board runs what the test expects")
            self._pending += self._read_some()

    def reopen(self, timeout: float = 30.0) -> None:
        """Close, wait for the port (path) to come back, open it again; bounded by ``timeout``."""
        import serial

        self.close()
        self._pending = b""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if _port_present(self.port):
                try:
                    self.serial = self._open(self.port, self.baudrate)
                    return
                except (OSError, serial.SerialException) as e:
                    last = e
            if time.monotonic() >= deadline:
                why = f": {last}" if last else " (the path did not reappear)"
                raise DeviceError(f"{self.name}: its console {self.port} did not come back within "
                                  f"{timeout:g} s{why}",
                                  "check the USB cable and hub and that the board is powered; a board "
                                  "whose port name changes needs its /dev/serial/by-id/ name in the rig file")
            time.sleep(0.1)
