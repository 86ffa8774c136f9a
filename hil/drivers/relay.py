"""The LCUS serial relay boards (CH340 USB relays, 1-16 channels).

Each command is four bytes, ``A0 CH STATE SUM``: channel counted from 1,
state 1 (closed) or 0 (open), and the sum of the first three bytes mod 256.
The board does not answer. A relay board drives several boards' lines and
each pytest worker may switch its own channel, so every command opens the
port, holds an exclusive ``flock`` on it for the four bytes, and closes it.
"""

from __future__ import annotations

import fcntl
from typing import Any, Callable

from edge_agent.errors import DeviceError

START = 0xA0
BAUD = 9600


def lcus_frame(channel: int, on: bool) -> bytes:
    """The four bytes that switch ``channel`` (from 1) on or off."""
    if not 1 <= channel <= 255:
        raise ValueError(f"relay channel {channel} is outside 1..255")
    state = 1 if on else 0
    return bytes((START, channel, state, (START + channel + state) & 0xFF))


def parse_lcus(frame: bytes) -> tuple[int, bool] | None:
    """(channel, on) of a well-formed four-byte command, else None."""
    if len(frame) != 4 or frame[0] != START or frame[2] not in (0, 1):
        return None
    if (frame[0] + frame[1] + frame[2]) & 0xFF != frame[3] or frame[1] == 0:
        return None
    return frame[1], frame[2] == 1


def _open_serial(port: str) -> Any:
    import serial

    return serial.serial_for_url(port, baudrate=BAUD, timeout=1, write_timeout=2)


class LcusRelay:
    """A relay board on ``port`` with ``channels`` channels."""

    def __init__(self, name: str, port: str, channels: int,
                 open_port: Callable[[str], Any] = _open_serial) -> None:
        self.name, self.port, self.channels, self._open = name, port, channels, open_port

    def set(self, channel: int, on: bool) -> None:
        """Close (``on``) or open ``channel``; DeviceError naming the relay and its port when it cannot."""
        if not 1 <= channel <= self.channels:
            raise DeviceError(f"relay {self.name} has {self.channels} channels, not {channel}",
                              "correct the channel in the rig file")
        import serial

        try:
            port = self._open(self.port)
        except (OSError, serial.SerialException) as e:
            raise DeviceError(f"relay {self.name}: cannot open {self.port}: {e}",
                              "check that the relay board is plugged in and the port in the rig file "
                              "(ls -l /dev/serial/by-id/)") from None
        try:
            fileno = getattr(port, "fileno", None)
            if fileno is not None:
                try:
                    fcntl.flock(fileno(), fcntl.LOCK_EX)
                except (OSError, ValueError, AttributeError, NotImplementedError):
                    pass    # a URL (socket://) has no file to lock: the far end serialises
            port.write(lcus_frame(channel, on))
            port.flush()
        except (OSError, serial.SerialException) as e:
            raise DeviceError(f"relay {self.name}: writing to {self.port} failed: {e}",
                              "replug the relay board and check its port") from None
        finally:
            port.close()
