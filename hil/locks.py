"""One holder per board of a rig at a time, across processes (pytest-xdist workers, two runs).

A board's lock is an ``flock`` on a file named by rig and board in the
folder where the port locks live (:func:`edge_agent.ports.run_dir`:
``$EDGE_RUN_DIR``, ``$XDG_RUNTIME_DIR/edge`` or ``/tmp/edge-UID``). The
kernel drops an ``flock`` when its process dies, however it dies, so a
worker killed mid-test leaves nothing to clean up: the next holder simply
takes the lock. The holder writes its pid and command into the file after
locking, so a process that waits too long can say who holds the board.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path

from edge_agent.errors import Busy
from edge_agent.ports import run_dir

WAIT_S = 600.0
_POLL_S = 0.05


def lock_path(rig: str, board: str) -> Path:
    """The lock file of ``board`` of the rig named ``rig``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{rig}--{board}").strip("-")
    return run_dir() / "hil" / f"{name}.lock"


def _holder(path: Path) -> str:
    """Who holds the lock, from the record its holder wrote (``pid 123: pytest ...``)."""
    # The holder writes its record just after locking: for a moment the file is empty.
    for _ in range(20):
        try:
            record = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("pid"), int):
            return f"pid {record['pid']} ({record.get('command') or '?'})"
        time.sleep(0.01)
    return "an unknown process"


class BoardLock:
    """The lock of one board of a rig: :meth:`acquire` waits for it, :meth:`release` gives it back."""

    def __init__(self, rig: str, board: str) -> None:
        self.rig, self.board = rig, board
        self.path = lock_path(rig, board)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = WAIT_S) -> None:
        """Take the lock, waiting up to ``timeout`` seconds while another process holds it.

        Raises :class:`Busy` naming the holder's pid when the wait runs out,
        and when the lock folder cannot be made.
        """
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise Busy(f"cannot make the board lock folder {self.path.parent}: {e.strerror}",
                       "set $EDGE_RUN_DIR to a writable folder") from None
        deadline = time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Busy(f"board {self.board} of rig {self.rig} is held by {_holder(self.path)} "
                           f"(waited {timeout:.0f} s for it; lock {self.path})",
                           "wait for that run to finish or stop it; two runs never share a board")
            time.sleep(_POLL_S)
        # The file is never unlinked, so the one locked is the one every holder opens.
        record = {"pid": os.getpid(), "command": " ".join(sys.argv), "started": time.time(),
                  "rig": self.rig, "board": self.board}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if self._fd is not None:
            # Emptied first, so a record in the file names a live holder, or
            # one the kernel has already released (it died holding it).
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "BoardLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
