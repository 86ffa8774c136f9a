"""A device in a pipe: the firmware's main.py under the real MicroPython
interpreter, its console on stdin/stdout, its filesystem a temporary folder.

Interop tests wire it to the host's ingest core and check what each side saw.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.mpy import BOARDS, FIRMWARE, board_heap, micropython_exe

# Mount the board's folder as '/' the way a virtual board does, then boot.
# The agent runs frozen, as on a board flashed with firmware/manifest.py: a
# ROMFS image of edgefw/*.mpy (edge_hil.virtual.rom) in place of flash; the
# image and the modules' names, in flash on a frozen build, are added to the
# board's budget.
_BOOT = """
import os, sys
ROM = {rom!r}
{mount}
os.umount('/')
os.mount(os.VfsPosix({fs!r}), '/')
os.chdir('/')
sys.path[:] = (['/rom'] if ROM else []) + ['', '/lib', '.frozen']
import main
"""


def install(fs: Path, board: str = "esp32", device_id: str = "dev-1", **config) -> Path:
    """Copy the firmware, the board file and a config into a board folder."""
    from edge_agent import device_fs
    from edge_agent.boards import load_board
    from edge_agent.firmware import build

    fs.mkdir(parents=True, exist_ok=True)
    build(fs)
    device_fs.write_files(fs, [(device_fs.BOARD_JSON, device_fs.board_json(load_board(board))),
                               (device_fs.CONFIG_JSON, device_fs.config_json({"device_id": device_id, **config}))])
    return fs


class PipeDevice:
    """One interpreter process running the firmware; restartable like a board."""

    def __init__(self, fs: Path, board: str = "esp32", cpython: bool = False):
        self.fs = fs
        self.heap = board_heap(board)
        # cpython: the same firmware as a Raspberry Pi runs it (CPython,
        # data folder from $EDGE_DEVICE_ROOT), from the source tree.
        self.cpython = cpython
        self.proc: subprocess.Popen | None = None
        self.out: queue.Queue[bytes] = queue.Queue()
        self.console = bytearray()

    def start(self) -> None:
        if self.cpython:
            cmd = [sys.executable, str(FIRMWARE / "main.py")]
            env = {**os.environ, "EDGE_DEVICE_ROOT": str(self.fs)}
        else:
            from edge_hil.virtual.rom import MOUNT, ROM_HEAP_SLACK, build_rom, qstr_bytes

            rom = self.fs.parent / "agent.romfs"
            size = build_rom(self.fs, rom)
            heap = self.heap
            if size:
                heap += size + ROM_HEAP_SLACK + qstr_bytes(micropython_exe(), rom)
            cmd = [micropython_exe(), "-X", f"heapsize={heap}", "-c",
                   _BOOT.format(fs=str(self.fs), rom=str(rom) if size else "",
                                mount=MOUNT if size else "")]
            env = {**os.environ, "MICROPYPATH": ".frozen"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, bufsize=0, env=env)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc) -> None:
        while True:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                return
            self.console += data
            self.out.put(data)

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def read(self, timeout: float) -> bytes:
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            return b""

    def kill(self) -> None:
        """A power cut: SIGKILL, no chance to flush or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        # Whatever was in flight on the wire is lost with the board.
        time.sleep(0.05)
        while not self.out.empty():
            self.out.get_nowait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def pump(device: PipeDevice, session, seconds: float, *, answer: bool = True,
         until=None) -> None:
    """Carry bytes between a device and a host session for ``seconds`` (or
    until ``until()`` is true). With ``answer=False`` the host listens only."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = device.read(0.05)
        if data:
            replies = session.receive(data)
            if answer:
                for r in replies:
                    device.write(r)
        if until is not None and until():
            return
