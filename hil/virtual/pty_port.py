"""A virtual board's serial port: a pseudo-terminal pair held for the board's life.

The slave's path is the board's public port (what ``mpremote connect``
opens); the board holds both ends, so the path stays valid while clients come
and go. Output queues behind a reader that lags and is dropped, as a UART's
would be, once nobody has read for :data:`PORT_STALL_S`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import termios
import time
from typing import Callable

log = logging.getLogger("edge_hil.virtual.pty_port")

PORT_BACKLOG_MAX = 64 * 1024        # output kept for a port whose reader lags
PORT_STALL_S = 2.0                  # a reader this stuck is gone: drop, as a UART would


def raw_termios(fd: int, lflag: int = 0) -> None:
    """No echo, no signals, no line editing, no output processing, 8 bits."""
    a = termios.tcgetattr(fd)
    a[0] = 0
    a[1] = 0
    a[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    a[3] = lflag
    a[6][termios.VMIN] = 1
    a[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, a)


def nonblock(fd: int) -> None:
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)


class PtyPort:
    """The port pair; ``on_input(bytes)`` gets what clients write to it."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, on_input: Callable[[bytes], None]) -> None:
        self.name, self._loop, self._on_input = name, loop, on_input
        self._pm = self._ps = -1
        self.path = ""
        self._out = bytearray()
        self._writer = False
        self._progress = 0.0

    def open(self) -> None:
        self._pm, self._ps = os.openpty()
        raw_termios(self._ps)
        nonblock(self._pm)
        self.path = os.ttyname(self._ps)
        self._loop.add_reader(self._pm, self._readable)

    def close(self) -> None:
        for fd in (self._pm, self._ps):
            if fd >= 0:
                try:
                    self._loop.remove_reader(fd)
                    self._loop.remove_writer(fd)
                except (ValueError, OSError):
                    pass
                os.close(fd)
        self._pm = self._ps = -1

    def _readable(self) -> None:
        try:
            data = os.read(self._pm, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        self._on_input(data)

    def write(self, data: bytes, keep_all: bool = False) -> None:
        """Queue ``data`` for the pty (dropped when nobody reads it, as a UART's would be).

        ``keep_all``: never trim the backlog (the ROM's replies, e.g. a whole
        streamed flash read, must arrive intact; a reader that stalls still
        loses them after PORT_STALL_S).
        """
        if self._pm < 0:
            return
        if not self._out:
            self._progress = time.monotonic()
        self._out += data
        if not keep_all and len(self._out) > PORT_BACKLOG_MAX:
            del self._out[:len(self._out) - PORT_BACKLOG_MAX]
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._pm, self._out[:4096])
            except BlockingIOError:
                n = 0
            except OSError as e:
                log.warning("%s: writing the port: %s", self.name, e)
                self._out.clear()
                break
            if n <= 0:
                if time.monotonic() - self._progress > PORT_STALL_S:
                    # Nobody reads the port: what a UART sends then is lost.
                    self._out.clear()
                    try:
                        termios.tcflush(self._ps, termios.TCIFLUSH)
                    except termios.error:
                        pass
                    break
                if not self._writer:
                    self._loop.add_writer(self._pm, self._flush)
                    self._writer = True
                    self._loop.call_later(PORT_STALL_S + 0.1, self._flush)
                return
            del self._out[:n]
            self._progress = time.monotonic()
        if self._writer:
            self._loop.remove_writer(self._pm)
            self._writer = False
