"""The run folder of a virtual bench: what is in it and how it is read.

::

    RUNDIR/
      bench.json        what `sim up` asked for (input of the supervisor)
      state.json        the running bench: supervisor pid, each board's port,
                        folders and interpreter pid (written atomically by the
                        supervisor when ready and whenever a pid changes;
                        removed on a clean stop)
      lock              flock()ed by the supervisor for its whole life: held
                        means "a bench runs here"
      control.sock      the supervisor's control socket (JSON lines)
      supervisor.log    the supervisor's log
      <board>/fs/       the board's filesystem
      <board>/console.log  everything the board printed
      <board>/flash.bin    the chip's flash (ESP and rp2 boards; erased = 0xFF),
                        written by esptool (ROM download mode) or a .uf2
      <board>/flash.json   what was written there: offset, size, sha256, via, when
      <board>/RPI-RP2/     rp2 boards in BOOTSEL only: the UF2 drive
      air/<board>.hci   the virtual air (see :mod:`.air`): board NAME's BLE
                        controller, an HCI transport (Bumble spec ``unix:PATH``)
      air/host-<k>.hci  host controller k = 0, 1, ... for host processes
      air.log           the air's log
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

STATE = "state.json"
BENCH = "bench.json"
LOCK = "lock"
SOCK = "control.sock"
LOG = "supervisor.log"
SUPERVISOR_MODULE = "edge_hil.virtual.supervisor"
AIR_MODULE = "edge_hil.virtual.air"
AIR_DIR = "air"
AIR_LOG = "air.log"


def board_ble_address(name: str) -> str:
    """The static random BLE address of virtual board ``name``: the same for the same name, on every run.

    Six bytes of SHA-256 over the name with the two top bits set, as a
    static random address requires (Bluetooth Core, Vol 6, Part B, 1.3.2.1).
    """
    raw = bytearray(hashlib.sha256(b"edge-agent virtual board " + name.encode()).digest()[:6])
    raw[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in raw)


def board_hci_socket(rundir: Path | str, name: str) -> Path:
    """Where board ``name``'s BLE controller is served (Bumble transport ``unix:`` + this path)."""
    return Path(rundir) / AIR_DIR / f"{name}.hci"


def host_hci_socket(rundir: Path | str, k: int) -> Path:
    """Where host controller ``k`` (0, 1, ...) of the air is served."""
    return Path(rundir) / AIR_DIR / f"host-{k}.hci"


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to a new name and rename it, so readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_state(rundir: Path) -> dict | None:
    """The bench's state file, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(rundir) / STATE).read_text())
    except (OSError, ValueError):
        return None


def lock_is_held(rundir: Path) -> bool:
    """Whether a supervisor holds the run folder's lock."""
    path = Path(rundir) / LOCK
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def pid_cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@contextlib.contextmanager
def control_socket_path(rundir: Path):
    """Yield the control socket's path, short enough for AF_UNIX (108 bytes) however deep the run folder is.

    A long path is reached through ``/proc/self/fd/N`` of an open descriptor
    of the folder, valid until the ``with`` block ends (bind or connect in it).
    """
    folder = Path(rundir).resolve()
    path = str(folder / SOCK)
    if len(path.encode()) < 100:
        yield path
        return
    fd = os.open(str(folder), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCK}"
    finally:
        os.close(fd)


def _prctl() -> Any:
    """libc's ``prctl``, or None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent: int | None) -> None:
    """Ask Linux to send SIGTERM when ``parent`` (the bench's supervisor) dies, so a child of the bench is never an orphan."""
    if parent is None:
        return
    prctl = _prctl()
    if prctl is not None:
        prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    if os.getppid() != parent:      # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def dies_with_this_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGTERM when the thread that
    starts it (Linux ties the signal to the forking thread) or its process dies, even by SIGKILL.
    None where Linux's ``prctl`` is missing. ``prctl`` is looked up here, before the fork: the child
    runs no dynamic loading between fork and exec."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


async def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a child of the bench, SIGKILL it if it is not gone within ``timeout`` seconds; close its stdout."""
    import asyncio

    if proc.poll() is None:
        proc.terminate()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
