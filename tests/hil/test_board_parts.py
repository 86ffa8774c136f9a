"""The parts of a virtual board: its life cycle is one table of allowed
moves, and its peripherals sit behind one seam a new one (a radio) plugs into."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_hil.virtual.board import BoardSpec, VirtualBoard
from edge_hil.virtual.control import find_micropython
from edge_hil.virtual.lifecycle import TRANSITIONS, InvalidTransition, Lifecycle, State
from edge_hil.virtual.peripherals import Peripheral
from edge_hil.virtual.supervisor import RUNNER


def test_the_life_cycle_moves_only_as_its_table_allows():
    for start, allowed in TRANSITIONS.items():
        for to in State:
            life = Lifecycle()
            life.state = start
            if to is start or to in allowed:
                life.go(to)
                assert life.state is to
            else:
                with pytest.raises(InvalidTransition, match=f"from {start.value} to {to.value}"):
                    life.go(to)
                assert life.state is start


def test_power_and_modes_follow_the_state():
    life = Lifecycle()
    assert not life.powered and life.idle and life.mode == "micropython"
    life.go(State.STARTING)
    life.go(State.RUNNING)
    assert life.powered and not life.idle
    life.go(State.DOWNLOAD)
    assert life.mode == "download" and life.idle
    life.go(State.STOPPED)
    with pytest.raises(InvalidTransition):
        life.go(State.STARTING)       # a stopped board stays stopped


class Recorder(Peripheral):
    def __init__(self):
        self.calls = []

    def on_lines(self, dtr, rts):
        self.calls.append(("lines", dtr, rts))

    def on_leave(self):
        self.calls.append(("leave",))

    def on_bootloader(self):
        self.calls.append(("bootloader",))
        return False


def test_a_new_peripheral_plugs_into_the_board_and_hears_lines_resets_and_bootloader_requests(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "main.py").write_text("import machine\nmachine.bootloader()\n")
    spec = BoardSpec("radio-1", "virtual", 96 * 1024, str(fs), str(tmp_path / "console.log"), str(tmp_path),
                     chip="host", family="unix")

    async def run():
        board = VirtualBoard(spec, find_micropython(), RUNNER)
        board.open()
        radio = Recorder()
        board.peripherals.append(radio)
        try:
            await board.power_on()
            deadline = time.monotonic() + 10
            while ("bootloader",) not in radio.calls and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            board.set_lines(True, False)
            await board.reset()
            return radio.calls, board.state
        finally:
            await board.stop()

    calls, state = asyncio.run(run())
    # No peripheral took the chip, so machine.bootloader() soft-reset it.
    assert ("bootloader",) in calls and ("lines", True, False) in calls
    assert calls.count(("leave",)) >= 2          # power-on and the reset
    assert state in (State.STARTING, State.RUNNING)
