"""Where the project's data lives: firmware sources, board files, the registry."""

from __future__ import annotations

import os
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


def default_sim_dir() -> Path:
    """The virtual bench's run folder: ``$EDGE_SIM_DIR`` or ``<state dir>/sim``."""
    env = os.environ.get("EDGE_SIM_DIR")
    return Path(env) if env else state_dir() / "sim"
