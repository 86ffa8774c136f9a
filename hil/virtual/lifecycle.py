"""The life cycle of a virtual board's chip: its states and the only moves between them.

Rules it keeps: the board is in exactly one state; a move not in
:data:`TRANSITIONS` raises :class:`InvalidTransition` (a bug, never a board
event); moving to the state the board is in already changes nothing, so a
repeated request (a second reset into download mode) is harmless.

* ``OFF``: no power; the UART hears nothing.
* ``STARTING`` -> ``RUNNING``: an interpreter is being started / runs
  (boot.py and main.py, the raw REPL, the friendly REPL).
* ``BACKOFF``: restarts paused after a crash loop.
* ``HELD``: EN held low (the ESP auto-reset circuit): the chip runs nothing.
* ``DOWNLOAD``: the ESP ROM serial loader owns the UART.
* ``BOOTSEL``: the RP2040 boot ROM shows its USB drive.
* ``STOPPED``: the supervisor is shutting down; final.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    OFF = "off"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    HELD = "held"
    DOWNLOAD = "download"
    BOOTSEL = "bootsel"
    STOPPED = "stopped"


S = State
# Every state but OFF/STOPPED can lose power, be stopped, or start again
# (a hard reset); the bootloaders are entered from a running chip or a held EN.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.OFF: frozenset({S.STARTING, S.STOPPED}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.OFF, S.HELD, S.DOWNLOAD, S.BOOTSEL, S.STOPPED}),
    S.RUNNING: frozenset({S.STARTING, S.BACKOFF, S.OFF, S.HELD, S.DOWNLOAD, S.BOOTSEL, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.OFF, S.HELD, S.DOWNLOAD, S.BOOTSEL, S.STOPPED}),
    S.HELD: frozenset({S.STARTING, S.DOWNLOAD, S.OFF, S.STOPPED}),
    S.DOWNLOAD: frozenset({S.STARTING, S.HELD, S.OFF, S.STOPPED}),
    S.BOOTSEL: frozenset({S.STARTING, S.OFF, S.STOPPED}),
    S.STOPPED: frozenset(),
}

# States in which no interpreter runs and none is started until a move out.
IDLE = frozenset({S.OFF, S.HELD, S.DOWNLOAD, S.BOOTSEL, S.STOPPED})
# The chip's mode as ``edge sim`` and ``edge flash`` name it.
_MODES = {S.DOWNLOAD: "download", S.BOOTSEL: "bootsel", S.HELD: "held"}


class InvalidTransition(RuntimeError):
    """A move the life cycle does not allow."""


class Lifecycle:
    """The state of one board, moved only through :meth:`go`."""

    def __init__(self) -> None:
        self.state = State.OFF

    def go(self, to: State) -> None:
        if to is self.state:
            return
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"a virtual board cannot go from {self.state.value} to {to.value}")
        self.state = to

    @property
    def powered(self) -> bool:
        return self.state not in (State.OFF, State.STOPPED)

    @property
    def idle(self) -> bool:
        return self.state in IDLE

    @property
    def mode(self) -> str:
        """"micropython" | "download" | "bootsel" | "held"."""
        return _MODES.get(self.state, "micropython")
