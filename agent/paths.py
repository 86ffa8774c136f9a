"""Where the project's data lives: firmware sources, board files, the registry."""

from __future__ import annotations

import os
import threading
from pathlib import Path

# The distribution is installed in editable mode from a checkout (see README);
# the firmware and board files are read from that checkout.
REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO / "firmware"
BOARDS_DIR = REPO / "boards"


def state_dir() -> Path:
    """The folder for the registry and run folders: ``$EDGE_HOME`` or ``~/.local/share/edge``."""
    env = os.environ.get("EDGE_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "edge"


def default_db() -> Path:
    """The registry: ``$EDGE_DB`` or ``<state dir>/registry.db``."""
    env = os.environ.get("EDGE_DB")
    return Path(env) if env else state_dir() / "registry.db"


def updates_dir() -> Path:
    """The update store (OTA images by digest): ``<state dir>/updates``."""
    return state_dir() / "updates"


def default_sim_dir() -> Path:
    """The virtual bench's run folder: ``$EDGE_SIM_DIR`` or ``<state dir>/sim``."""
    env = os.environ.get("EDGE_SIM_DIR")
    return Path(env) if env else state_dir() / "sim"


PRIVATE_DIR = 0o700     # state folders: the registry holds setup codes until their labels are made
PRIVATE_FILE = 0o600    # files holding a secret: the registry (and its -wal/-shm), labels, keys


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (and missing parents) readable only by its owner; return it.

    A folder that exists already is tightened to 0700 only when it is the
    state folder or inside it and owned by this user (an old install made them
    0755); any other existing folder (``--db /srv/x.db``, ``--out /media``)
    is the user's choice and left as it is.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        try:
            p.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:      # made meanwhile by another process
            pass
    home = state_dir()
    for p in (folder, *folder.parents):
        if p == home or home in p.parents:
            _tighten(p, PRIVATE_DIR)
        if p == home:
            break
    return folder


def private_file(path: Path) -> None:
    """Make an existing file of ours readable only by its owner (0600)."""
    _tighten(Path(path), PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~mode:
            os.chmod(path, st.st_mode & 0o777 & mode)
    except OSError:                  # absent, or not ours to change: nothing to tighten
        pass


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` in ``path``: written and synced under a new name, then renamed over
    it, so a reader or a power cut sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
