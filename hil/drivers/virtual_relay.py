"""A relay board on a pseudo-terminal that speaks LCUS (:mod:`.relay`).

For tests, and for a bench without a relay: ``port`` is the pty a
:class:`~edge_hil.drivers.relay.LcusRelay` opens; every well-formed command
sets its channel's state and calls that channel's callback (wire channel 1
to a virtual board's power, so a rig switching the relay switches the
board). Malformed commands change nothing and are counted, as a real board
ignores them.

::

    with VirtualRelay(4, {1: lambda on: bench.power_on(n) if on else bench.power_off(n)}) as relay:
        LcusRelay("relay-a", relay.port, 4).set(1, False)
        relay.wait_for(1, False)
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Callable

from edge_hil.drivers.relay import START, parse_lcus


class VirtualRelay:
    """``channels`` relays behind a pty; ``states[ch]`` is True when channel ``ch`` is closed."""

    def __init__(self, channels: int = 4, on_change: dict[int, Callable[[bool], None]] | None = None) -> None:
        self.channels = channels
        self.states: dict[int, bool] = {ch: False for ch in range(1, channels + 1)}
        self.received = b""             # every byte that came in, for tests
        self.commands: list[tuple[int, bool]] = []
        self.rejected = 0               # malformed or out-of-range commands
        self.errors: list[BaseException] = []   # raised by callbacks
        self._on_change = dict(on_change or {})
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name=f"virtual-relay {self.port}", daemon=True)
        self._thread.start()

    def on_change(self, channel: int, callback: Callable[[bool], None]) -> None:
        """Call ``callback(on)`` whenever ``channel`` is switched."""
        self._on_change[channel] = callback

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if not select.select([self._master], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self._master, 256)
            except OSError:       # the last client closed the pty: keep serving the next one
                time.sleep(0.01)
                continue
            self.received += data
            buf += data
            while len(buf) >= 4:
                if buf[0] != START:       # resynchronise on the start byte
                    buf = buf[1:]
                    self.rejected += 1
                    continue
                cmd = parse_lcus(buf[:4])
                if cmd is None or cmd[0] > self.channels:
                    self.rejected += 1
                    buf = buf[1:]
                    continue
                buf = buf[4:]
                self._apply(*cmd)

    def _apply(self, channel: int, on: bool) -> None:
        with self._changed:
            self.states[channel] = on
            self.commands.append((channel, on))
            self._changed.notify_all()
        callback = self._on_change.get(channel)
        if callback is not None:
            try:
                callback(on)
            except BaseException as e:  # a test reads it; the relay keeps serving
                self.errors.append(e)

    def wait_for(self, channel: int, on: bool, timeout: float = 5.0) -> bool:
        """Whether ``channel`` reaches state ``on`` within ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(lambda: self.states[channel] == on, timeout)

    def wait_commands(self, n: int, timeout: float = 5.0) -> list[tuple[int, bool]]:
        """The commands taken, once there are at least ``n`` (or ``timeout`` s passed)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.commands) >= n, timeout)
            return list(self.commands)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "VirtualRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
