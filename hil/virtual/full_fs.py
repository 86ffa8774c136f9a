"""A virtual board whose filesystem fills up: the rig's ``faults.fill_fs()`` on a virtual board.

A virtual board's filesystem is a host folder (:mod:`.fs`), as large as the
host's disk, so it never fills by itself. To fill it, the folder moves onto a
filesystem of its own: a ``tmpfs`` the size of what the board holds plus
:data:`ROOM`, mounted on the folder while the board is off (its files copied
in), then a filler file written through that folder takes all but ``leave``
bytes. :meth:`FullFs.free` removes the filler; :meth:`FullFs.restore` moves
the board's files back onto the host folder, off again, and unmounts. Each
move is a power cut for the board (it boots again from its files, as after
any cut).

Mounting needs root (CAP_SYS_ADMIN): without it :class:`CannotFill` says so
and the board is left as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge_agent.errors import DeviceError

ROOM = 1 << 20                  # room beside the board's files before the filler: the journal grows
FILLER = "filler.bin"
PAGE = 4096                     # tmpfs counts whole pages
BOOT_TIMEOUT_S = 30.0
AGENT_UP = b"edge: agent"       # what the agent prints once it runs (firmware/edgefw/boot_build.py)


class CannotFill(DeviceError):
    """The board's folder cannot get a filesystem of its own here (no root to mount a tmpfs)."""


def _free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _used_bytes(folder: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class FullFs:
    """Board ``name`` of ``bench`` (a :class:`~edge_hil.virtual.control.Bench`) on a small filesystem."""

    def __init__(self, bench: Any, name: str) -> None:
        self.bench, self.name = bench, name
        self.folder = Path(bench.board(name)["fs"])
        self.disk = self.folder.with_name(self.folder.name + ".disk")
        self.mounted = False

    def fill(self, leave: int = 4 * 1024) -> int:
        """Fill the board's filesystem until ``leave`` bytes are free (moving it onto a tmpfs first);
        returns the filler's size."""
        if not self.mounted:
            self._move_to_tmpfs()
        filler = self.folder / FILLER
        size = (filler.stat().st_size if filler.exists() else 0) + _free_bytes(self.folder) - leave
        with open(filler, "wb") as f:
            f.truncate(0)
            f.write(b"\xff" * max(0, size))     # written, not sparse: tmpfs counts pages written
        return max(0, size)

    def free(self) -> None:
        """Remove the filler: the board's filesystem has its room again."""
        (self.folder / FILLER).unlink(missing_ok=True)

    def restore(self) -> None:
        """Back on the host folder with the board's files as they are now (a power cut); unmounted."""
        if not self.mounted:
            return
        self.free()
        self.bench.power_off(self.name)
        shutil.rmtree(self.disk)
        shutil.copytree(self.folder, self.disk, symlinks=True)
        subprocess.run(["umount", str(self.folder)], check=True, capture_output=True)
        self.folder.rmdir()
        self.disk.rename(self.folder)
        self.mounted = False
        self._power_on()

    def _move_to_tmpfs(self) -> None:
        size = -(-(_used_bytes(self.folder) + ROOM) // PAGE) * PAGE
        self.bench.power_off(self.name)
        self.folder.rename(self.disk)
        self.folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            self.folder.rmdir()
            self.disk.rename(self.folder)
            self.bench.power_on(self.name)
            raise CannotFill(f"board {self.name}'s folder cannot get a small filesystem of its own to fill: "
                             f"mount -t tmpfs said: {proc.stderr.strip() or proc.returncode}",
                             "run as root (mounting a tmpfs needs CAP_SYS_ADMIN)")
        self.mounted = True
        shutil.copytree(self.disk, self.folder, symlinks=True, dirs_exist_ok=True)
        self._power_on()

    def _power_on(self) -> None:
        """Power on and wait until the agent runs, so what fills next meets a running agent, not its boot."""
        log = self.bench.console_log(self.name)
        since = log.stat().st_size if log.exists() else 0
        self.bench.power_on(self.name)
        self.bench.wait_console(self.name, AGENT_UP, timeout=BOOT_TIMEOUT_S, since=since)
